"""Reading a sweep spec and expanding it into points: axes, ranges, point names, checks.

Every point's config is checked here, before anything is written; two points may share
neither a name (a folder) nor a config.
"""

import decimal
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradlab.analysis import shortest_suffixes
from gradlab.config import (
    SWEEP_SPEC_KEYS,
    Config,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    dump_config_yaml,
    is_run_config,
    load_config,
    parse_override,
    read_yaml_file,
)
from gradlab.config_data import with_data_path_under
from gradlab.config_rules import NAME_MAX_LENGTH, NAME_PATTERN
from gradlab.errors import ConfigError, GradlabError
from gradlab.formatting import number_text

SPEC_KEYS = SWEEP_SPEC_KEYS
DEFAULT_RESULTS_ROOT = Path("results")
MAX_AXIS_LENGTH = 10_000  # a range with a tiny step is a typo, not a sweep
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._+-]")  # '=' and ',' separate the parts of a name


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its index, name, the overrides it applies and its checked config."""

    index: int
    name: str
    overrides: dict[str, Any]
    config: Config


@dataclass(frozen=True)
class Sweep:
    """An expanded, validated sweep: every point, and the folder its runs go to."""

    name: str
    root: Path
    spec: dict
    spec_path: Path | None
    base_path: Path | None
    points: list[Point]
    command_line_set: dict[str, Any] = field(default_factory=dict)  # --set, for every point

    def to_json(self) -> dict:
        """sweep.json: the same for every shard and every re-run of an unchanged spec."""
        return {
            "name": self.name,
            "spec_path": str(self.spec_path) if self.spec_path else None,
            "base_path": str(self.base_path) if self.base_path else None,
            "spec": self.spec,
            "command_line_set": self.command_line_set,
            "points": [
                {"index": p.index, "name": p.name, "overrides": p.overrides} for p in self.points
            ],
        }


def load_sweep(
    path: str | Path, out: str | Path | None = None, overrides: Iterable[str] = ()
) -> Sweep:
    """Read a sweep spec (YAML), expand it and check every point's config.

    ``overrides`` ("key.path=value", from ``--set``) apply to every point; see expand_sweep.
    """
    path = Path(path)
    if not path.is_file():
        raise GradlabError(f"{path}: no such sweep spec file")
    spec = read_yaml_file(path, "sweep spec file")
    return expand_sweep(spec, spec_path=path, out=out, overrides=overrides)


def expand_sweep(
    spec: Any,
    spec_path: Path | None = None,
    out: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> Sweep:
    """Expand a spec mapping into checked points; ``base`` is relative to ``spec_path``.

    ``overrides`` are ``--set`` texts applied to every point after the spec's ``set:``; one
    that names a key the sweep varies (or its section) is an error, not a silent winner.
    """
    source = str(spec_path) if spec_path else "sweep spec"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{source}: a sweep spec must be a mapping with name, base, grid, ...")
    if is_run_config(spec):
        shown = ", ".join(f"'{key}'" for key in list(spec)[:3])
        raise ConfigError(
            f"{source} is a run config (it has {shown}), not a sweep spec: run it with "
            "`gradlab run`, or name it as the base: of a sweep spec (see docs/sweeps.md)"
        )
    unknown = [key for key in spec if key not in SPEC_KEYS]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} (allowed: {', '.join(SPEC_KEYS)})", unknown[0]
        )
    name = _sweep_name(spec, spec_path)
    base_mapping, base_path = _base(spec, spec_path)
    fixed = spec.get("set") or {}
    if not isinstance(fixed, Mapping):
        raise ConfigError(f"set: must be a mapping of key.path: value, got {fixed!r}", "set")
    spec_folder = spec_path.parent if spec_path is not None else None
    base_mapping = with_data_path_under(apply_overrides(base_mapping, fixed, "set"), spec_folder)
    axes = _axes(spec)
    varied = [key for keys, _ in axes for key in keys]
    command_line_set = _command_line_set(overrides, varied)
    base_mapping = with_data_path_under(  # a path given on the command line: from here
        apply_overrides(base_mapping, command_line_set, "--set"), None
    )
    labels = dict(zip(varied, shortest_suffixes(varied, ()), strict=True))
    points, tables = [], {}
    for index, overrides in enumerate(_combinations(axes)):
        point_name = point_name_for(overrides, labels)
        values = apply_overrides(base_mapping, {**overrides, "name": point_name}, "sweep")
        try:
            config = config_from_dict(with_data_path_under(values, spec_folder), source=point_name)
            config = _with_data(config, tables)
        except ConfigError as error:
            raise ConfigError(
                f"sweep point {index} ({point_name}): {error}", error.key_path
            ) from None
        points.append(Point(index, point_name, overrides, config))
    _check_distinct(points)
    root = Path(out) if out is not None else DEFAULT_RESULTS_ROOT / name
    return Sweep(name, root, dict(spec), spec_path, base_path, points, command_line_set)


def _with_data(config: Config, tables: dict) -> Config:
    """``config`` with what its real data decide (gradlab.datafiles.resolve_config), as the
    run will record it; each data file is read and checked once for all the points that
    share it (``tables``), before anything is written."""
    data = config.data
    if data.source == "synthetic":
        return config
    from gradlab import datafiles  # numpy: only for sweeps on real data

    key = (data.source, data.path, data.target, data.task, data.max_bytes)
    if key not in tables:
        tables[key] = datafiles.read_table(data)
    return datafiles.resolve_config(config, tables[key])


def _command_line_set(overrides: Iterable[str], varied: list[str]) -> dict[str, Any]:
    """--set texts as {key path: value}; a key the sweep varies (or names) is an error."""
    parsed = dict(parse_override(text, "--set") for text in overrides)
    for key in parsed:
        if key == "name":
            raise ConfigError(
                "--set name: the sweep names its points; use --out for another folder", "name"
            )
        for axis in varied:
            if key == axis or axis.startswith(f"{key}.") or key.startswith(f"{axis}."):
                where = "seeds" if axis == "seed" else "grid/zip"
                raise ConfigError(
                    f"--set {key}: the sweep varies {axis} (in {where}); change it in the "
                    "spec instead (--set applies one value to every point)",
                    key,
                )
    return parsed


def _sweep_name(spec: Mapping, spec_path: Path | None) -> str:
    name = spec.get("name")
    if name is None:
        name = spec_path.stem if spec_path else "sweep"
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"name: {name!r} is not a valid sweep name: use letters, digits and . _ = , + - "
            "(first a letter or digit, no '/')",
            "name",
        )
    return name


def _base(spec: Mapping, spec_path: Path | None) -> tuple[dict, Path | None]:
    """The base config as a full mapping, and its file (None for an inline ``config:``)."""
    if ("base" in spec) == ("config" in spec):
        raise ConfigError(
            "a sweep spec needs exactly one of base: (a config file, relative to the spec) "
            "or config: (an inline config mapping)",
            "base",
        )
    if "config" in spec:
        inline = spec["config"] if spec["config"] is not None else {}
        inline = with_data_path_under(inline, spec_path.parent if spec_path else None)
        return config_to_dict(config_from_dict(inline, source="config (inline)")), None
    if not isinstance(spec["base"], str):
        raise ConfigError(f"base: must be a path to a config file, got {spec['base']!r}", "base")
    base_path = Path(spec["base"])
    if spec_path is not None and not base_path.is_absolute():
        base_path = spec_path.parent / base_path
    base_path = base_path.resolve()
    return config_to_dict(load_config(base_path)), base_path


def _axes(spec: Mapping) -> list[tuple[list[str], list[tuple]]]:
    """[(key paths, rows)] in expansion order: each grid key, then the zip, then seeds.

    A grid key is one axis of 1-tuples; the zip is one axis whose rows set all its keys.
    """
    axes: list[tuple[list[str], list[tuple]]] = []
    for key, values in _mapping(spec, "grid").items():
        axes.append(([_key(key, "grid")], [(value,) for value in _values(values, f"grid.{key}")]))
    zipped = _mapping(spec, "zip")
    if zipped:
        columns = {
            _key(key, "zip"): _values(values, f"zip.{key}") for key, values in zipped.items()
        }
        lengths = {key: len(values) for key, values in columns.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{key} has {n}" for key, n in lengths.items())
            raise ConfigError(f"zip: the lists must have the same length; {shown}", "zip")
        axes.append((list(columns), list(zip(*columns.values(), strict=True))))
    if spec.get("seeds") is not None:
        axes.append((["seed"], [(seed,) for seed in _values(spec["seeds"], "seeds")]))
    keys = [key for group, _ in axes for key in group]
    for key in keys:
        if keys.count(key) > 1:
            where = "seeds and grid/zip" if key == "seed" else "grid and zip"
            raise ConfigError(f"{key}: varied twice (in {where}); keep one", key)
    if not axes:
        raise ConfigError("a sweep needs at least one of grid:, zip: or seeds:", "grid")
    return axes


def _mapping(spec: Mapping, key: str) -> Mapping:
    value = spec.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a mapping of key path -> list of values", key)
    return value


def _key(key: Any, section: str) -> str:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{section}: keys must be key paths like model.depth, got {key!r}")
    if key == "name":
        raise ConfigError(f"{section}.name: the sweep names its points; name cannot vary", key)
    apply_overrides({}, {key: None}, origin=f"sweep {section}")  # an unknown key path raises
    return key


def _values(values: Any, where: str) -> list:
    """An axis: a non-empty list of scalars, or {range: [start, stop, step]}."""
    if isinstance(values, Mapping):
        if set(values) != {"range"}:
            raise ConfigError(
                f"{where}: expected a list or {{range: [start, stop, step]}}, "
                f"got keys {', '.join(map(str, values))}",
                where,
            )
        return _range(values["range"], where)
    if not isinstance(values, list) or not values:
        raise ConfigError(
            f"{where}: expected a non-empty list of values or {{range: [start, stop, step]}}, "
            f"got {values!r}",
            where,
        )
    for value in values:
        if isinstance(value, Mapping | list):
            raise ConfigError(f"{where}: values must be scalars, got {value!r}", where)
    return list(values)


def _range(bounds: Any, where: str) -> list:
    """[start, start + step, ...] below stop (above, for a negative step), computed in decimal.

    Decimal arithmetic on the numbers as written keeps 0.1 + 2 * 0.1 at 0.3, so names and
    configs never show float drift (0.30000000000000004). All-integer bounds give integers.
    """
    numbers = bounds if isinstance(bounds, list) else None
    if numbers is None or len(numbers) not in (2, 3) or not all(_is_number(v) for v in numbers):
        raise ConfigError(
            f"{where}: range must be [start, stop] or [start, stop, step] numbers, got {bounds!r}",
            where,
        )
    start, stop, step = [*numbers, 1][:3]
    exact = [decimal.Decimal(repr(v)) for v in (start, stop, step)]
    if exact[2] == 0:
        raise ConfigError(f"{where}: range step must not be 0", where)
    count = max(0, math.ceil((exact[1] - exact[0]) / exact[2]))
    if count == 0:
        raise ConfigError(f"{where}: range {bounds!r} is empty (stop is exclusive)", where)
    if count > MAX_AXIS_LENGTH:
        raise ConfigError(f"{where}: range {bounds!r} has {count} values; is the step right?")
    as_int = all(isinstance(v, int) for v in (start, stop, step))
    values = [exact[0] + i * exact[2] for i in range(int(count))]
    return [int(v) if as_int else float(v) for v in values]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _combinations(axes: list[tuple[list[str], list[tuple]]]):
    """Every {key path: value}, first axis slowest (itertools.product order)."""
    for rows in itertools.product(*(rows for _, rows in axes)):
        overrides = {}
        for (keys, _), row in zip(axes, rows, strict=True):
            overrides.update(zip(keys, row, strict=True))
        yield overrides


def format_name_value(value: Any) -> str:
    """A value as it appears in a point name: YAML-like, shortest float repr, safe characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = number_text(value)  # exact; 4.0 stays 4.0: existing folders keep their names
    else:
        text = str(value)
    return _UNSAFE_IN_NAME.sub("_", text)


def point_name_for(overrides: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """'depth=20,weight_scale=4,seed=0': labels sorted, the seed last."""
    order = sorted(overrides, key=lambda key: (key == "seed", labels[key]))
    name = ",".join(f"{labels[key]}={format_name_value(overrides[key])}" for key in order)
    if len(name) > NAME_MAX_LENGTH:
        raise ConfigError(
            f"point name {name[:60]}... is longer than {NAME_MAX_LENGTH} characters; "
            "vary fewer keys or use shorter values"
        )
    return name


def _check_distinct(points: list[Point]) -> None:
    """Two points may share neither a name (a folder) nor a config (wasted work)."""
    by_name: dict[str, Point] = {}
    by_config: dict[str, Point] = {}
    for point in points:
        other = by_name.setdefault(point.name, point)
        if other is not point:
            raise ConfigError(
                f"sweep points {other.index} ({_show(other.overrides)}) and {point.index} "
                f"({_show(point.overrides)}) would both be named {point.name!r}; "
                "keep one of the two values (a name shows 0.1 and '0.1', or 'a/b' and 'a_b', alike)"
            )
        config_without_name = dump_config_yaml(point.config).split("\n", 1)[1]
        other = by_config.setdefault(config_without_name, point)
        if other is not point:
            raise ConfigError(
                f"sweep points {other.index} ({other.name}) and {point.index} ({point.name}) "
                "resolve to the same config (e.g. 1 and 1.0); remove the duplicate value"
            )


def _show(overrides: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in overrides.items())
