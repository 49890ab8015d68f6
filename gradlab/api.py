"""The Python API: ``gradlab.run(config_or_path, **overrides)``."""

from gradlab.config import Config, config_from_dict, config_to_dict, load_config
from gradlab.results import Run
from gradlab.runner import run_config


def resolve_config(config_or_path, overrides=(), origin="overrides") -> Config:
    """A Config from a Config, a mapping or a YAML path, with "key.path=value" overrides
    (``origin`` names them in messages)."""
    overrides = list(overrides)
    if isinstance(config_or_path, Config):
        if not overrides:
            return config_or_path
        return config_from_dict(
            config_to_dict(config_or_path), overrides, source="the Config", origin=origin
        )
    if isinstance(config_or_path, dict):
        return config_from_dict(config_or_path, overrides, origin=origin)
    return load_config(config_or_path, overrides, origin=origin)


def run(config_or_path, *, out=None, force=False, progress=False, **overrides) -> Run:
    """Python API: run an experiment and return its run directory read back.

    ``overrides`` use key paths with "__" for ".", e.g. ``run("c.yaml", train__lr=0.05)``,
    or pass them as a dict: ``run("c.yaml", **{"model.depth": 10})``.
    """
    override_strings = [
        f"{key.replace('__', '.')}={_yaml_scalar(v)}" for key, v in overrides.items()
    ]
    config = resolve_config(config_or_path, override_strings, origin="run() keyword overrides")
    return run_config(config, out=out, force=force, progress=progress)


def _yaml_scalar(value) -> str:
    """A Python value as the YAML scalar text parse_override reads back."""
    import json

    if isinstance(value, str):
        return value
    return json.dumps(value)
