"""YAML as users write it: config files, sweep specs and ``--set key.path=value`` values.

Read with ``yaml.safe_load`` only (no Python objects from a file). A key given twice in one
mapping is an error (YAML would keep the last one silently), and every problem is a
one-line ConfigError naming the file and the line.
"""

from pathlib import Path
from typing import Any

import yaml

from gradlab.errors import ConfigError


def parse_override(text: str, origin: str = "--set") -> tuple[str, Any]:
    """'train.lr=1e-3' -> ('train.lr', '1e-3'): the value read as one YAML scalar.

    ``origin`` names where the text came from in messages ("--set", "overrides").
    """
    key_path, equals, raw_value = text.partition("=")
    key_path = key_path.strip()
    if not equals or not key_path or "" in key_path.split("."):
        example = "--set train.lr=0.01" if origin == "--set" else "'train.lr=0.01'"
        raise ConfigError(f"{origin} {text!r}: expected key.path=value, e.g. {example}", key_path)
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError as error:
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ConfigError(
            f"{origin} {text!r}: the value is not valid YAML ({problem})", key_path
        ) from None
    return key_path, value


def read_yaml_file(path: Path, what: str) -> Any:
    """``parse_yaml`` of a file; a missing, unreadable or non-UTF-8 file (or a folder) is a
    one-line ConfigError that names it as ``what`` (e.g. "config file")."""
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8)") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the file ({error.strerror})") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, source: str | Path) -> Any:
    """``yaml.safe_load(text)``, refusing a key given twice in one mapping (YAML would keep
    the last one silently: two ``lr:`` lines are a mistake, not an override). Errors are
    ConfigError messages on one line that name ``source`` and the line."""
    try:
        _check_unique_keys(yaml.compose(text, Loader=yaml.SafeLoader), source)
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        raise ConfigError(_yaml_error_message(source, error)) from None
    except yaml.YAMLError as error:
        one_line = " ".join(str(error).split())
        raise ConfigError(f"{source}: not valid YAML ({one_line})") from None


def _check_unique_keys(root: yaml.Node | None, source: str | Path) -> None:
    """ConfigError at the first key that appears twice in one mapping of the node tree
    (``yaml.compose`` builds nodes only: no object is constructed)."""
    stack = [(root, "")]
    while stack:
        node, prefix = stack.pop()
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, prefix) for item in node.value)
        if not isinstance(node, yaml.MappingNode):
            continue
        first_lines: dict[tuple, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                key_path = f"{prefix}{key.value}"
                if (key.tag, key.value) in first_lines:
                    raise ConfigError(
                        f"{source} line {line}: {key_path}: key given twice (first at line "
                        f"{first_lines[key.tag, key.value]}); keep one of them",
                        key_path,
                    )
                first_lines[key.tag, key.value] = line
                stack.append((value, f"{key_path}."))
            else:
                stack.append((value, prefix))


def _yaml_error_message(path: str | Path, error: yaml.MarkedYAMLError) -> str:
    """'config.yaml line 3, column 7: <problem> (<context> at line 2)' on one line."""
    mark = error.problem_mark or error.context_mark
    where = f"{path} line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    problem = " ".join(str(error.problem or error.context or "invalid YAML").split())
    if isinstance(error, yaml.constructor.ConstructorError):
        return f"{where}: {problem}; gradlab reads plain YAML only (no !!python tags)"
    if error.context and error.problem and error.context_mark:
        context = " ".join(error.context.split())
        problem += f" ({context} at line {error.context_mark.line + 1})"
    return f"{where}: {problem}"
