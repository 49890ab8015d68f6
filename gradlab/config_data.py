"""The data section's rules that join keys, and where a data file's path is resolved.

``data.path`` and ``data.target`` belong to ``data.source: file``; the teacher's knobs
(input_mean, input_scale, noise) to ``synthetic``. A relative ``data.path`` in a config
file is relative to that file (in a sweep spec's ``set:``/grid, to the spec), one given on
the command line to the current folder; a loaded config holds it absolute, so the run's
config.yaml names the file wherever it is read. Standard library only.
"""

import os
from collections.abc import Mapping
from pathlib import Path

from gradlab.config_checks import fail, show

SYNTHETIC_INPUT_DIM = 32  # data.input_dim and data.classes of the teacher when not given
SYNTHETIC_CLASSES = 2
FILE_TYPES = (".npz", ".csv")
TEACHER_KEYS = ("input_mean", "input_scale", "noise")  # the synthetic task's knobs


def checked_source(data) -> dict:
    """Raise unless the keys of ``data`` (a DataConfig) fit its source; returns the values
    that replace a null input_dim or classes (the teacher's 32 and 2; real data's come from
    the data, see gradlab.datafiles.resolve_config)."""
    source = data.source
    if source == "file":
        _check_file_keys(data)
    else:
        for key in ("path", "target"):
            if getattr(data, key) is not None:
                raise fail(
                    f"data.{key}",
                    f"is for data.source 'file', got '{getattr(data, key)}' with "
                    f"data.source '{source}'; set data.source: file or remove data.{key}",
                )
    if source != "synthetic":
        defaults = type(data).__dataclass_fields__
        for key in TEACHER_KEYS:
            if getattr(data, key) != defaults[key].default:
                raise fail(
                    f"data.{key}",
                    f"is a knob of the synthetic teacher, got {show(getattr(data, key))} "
                    f"with data.source '{source}'; remove it",
                )
    filled = {}
    if data.input_dim is None and source == "synthetic":
        filled["input_dim"] = SYNTHETIC_INPUT_DIM
    if data.classes is None and (source == "synthetic" or data.task != "multiclass"):
        filled["classes"] = SYNTHETIC_CLASSES
    return filled


def _check_file_keys(data) -> None:
    if data.path is None:
        raise fail("data.path", "data.source 'file' needs a path to a .npz or .csv file")
    suffix = Path(data.path).suffix.lower()
    if suffix not in FILE_TYPES:
        raise fail("data.path", f"'{data.path}' is neither a .npz nor a .csv file")
    if data.target is not None and suffix != ".csv":
        raise fail("data.target", "names a column of a .csv file; a .npz has y_train and y_test")


def with_data_path_under(mapping, folder: str | Path | None):
    """``mapping`` (a config mapping) with a relative string ``data.path`` made absolute
    under ``folder`` (None: the current folder); anything else is returned unchanged, for
    the checks to judge. The mapping is not modified: a changed copy is returned."""
    data = mapping.get("data") if isinstance(mapping, Mapping) else None
    path = data.get("path") if isinstance(data, Mapping) else None
    if not isinstance(path, str) or not path:
        return mapping
    absolute = os.path.abspath(os.path.join(folder or os.getcwd(), os.path.expanduser(path)))
    return {**mapping, "data": {**data, "path": absolute}}
