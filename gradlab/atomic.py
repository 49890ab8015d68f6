"""Writing a file atomically: a reader sees the old file or the new one, never half of it.
Every file gradlab writes whole (JSON, YAML, figures, npz) goes through ``atomic_writer``."""

import contextlib
import json
import math
import os
import secrets
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_writer(path: Path, binary: bool = False):
    """Open a temporary file beside ``path`` for writing; when the block ends without an
    error it replaces ``path`` (``os.replace``), so a reader sees the old file or the new
    one, never half. On an error the temporary file is removed and ``path`` is untouched.

    The temporary file is created like ``open`` creates a file (mode 0666 less the umask),
    not like ``tempfile.mkstemp`` (0600, which the rename would keep): every file gradlab
    writes follows the umask, whether written at once or appended like the CSV logs.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp_path, flags, 0o666)
            break
        except FileExistsError:  # another writer's temporary file: draw another name
            continue
    try:
        mode = "wb" if binary else "w"
        with os.fdopen(fd, mode, **({} if binary else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``atomic_writer``)."""
    with atomic_writer(path) as handle:
        handle.write(text)


def to_jsonable(value):
    """Replace nan/inf by None and numpy scalars/arrays by Python values (strict JSON)."""
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: Path, data) -> None:
    """Write ``data`` as strict JSON (nan and inf as null) to ``path`` atomically."""
    text = json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n"
    atomic_write_text(path, text)
