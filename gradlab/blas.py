"""Which BLAS numpy's matrix products run on: library, kernel (core type) and threads.

Trained numbers depend on it in their last bits (see docs/tutorial.md, "Reproducing"):
OpenBLAS picks its kernels for the CPU at load time, and ``OPENBLAS_CORETYPE`` overrides
the pick. This asks the OpenBLAS that numpy loaded, through ctypes (as threadpoolctl does,
without the dependency). Standard library and numpy only.
"""

import ctypes
import glob
import os
import re
from pathlib import Path

import numpy as np

# OpenBLAS's C API under the prefixes and suffixes of its builds: scipy-openblas (numpy's
# wheels, 64-bit integers) and a distribution's libopenblas (32- or 64-bit integers)
_PREFIXES = ("scipy_openblas_", "openblas_")
_SUFFIXES = ("64_", "_64_", "")


def _loaded_libraries() -> list[str]:
    """Paths of the shared libraries mapped into this process (Linux; empty elsewhere)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "/" in line}
    except OSError:
        return []
    return sorted(path for path in paths if ".so" in Path(path).name)


def _openblas_path() -> str | None:
    """The OpenBLAS numpy loaded: the mapped one, else the one bundled with numpy's wheel."""
    for path in _loaded_libraries():
        if "openblas" in Path(path).name.lower():
            return path
    numpy_dir = Path(np.__file__).parent
    for folder in (numpy_dir.parent / "numpy.libs", numpy_dir / ".dylibs"):
        found = sorted(glob.glob(str(folder / "*openblas*")))
        if found:
            return found[0]
    return None


def _call(library: ctypes.CDLL, name: str, restype):
    """Call OpenBLAS's ``name`` (no arguments) under whichever prefix/suffix it exports."""
    for prefix in _PREFIXES:
        for suffix in _SUFFIXES:
            function = getattr(library, f"{prefix}{name}{suffix}", None)
            if function is not None:
                function.restype = restype
                return function()
    return None


def _decode(value) -> str | None:
    return value.decode("utf-8", "replace").strip() if value else None


def blas_runtime() -> dict:
    """``{"library", "version", "kernel", "threads", "coretype_env"}`` of numpy's BLAS.

    ``kernel`` is OpenBLAS's core name (``Haswell``, ``SkylakeX``, ...), the kernels it
    actually runs; ``coretype_env`` is ``OPENBLAS_CORETYPE`` as set (None when unset). Values
    that cannot be found (a BLAS other than OpenBLAS, no ctypes access) are None.
    """
    info = {
        "library": None,
        "version": None,
        "kernel": None,
        "threads": None,
        "coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
    }
    path = _openblas_path()
    if path is None:
        return info
    info["library"] = Path(path).name
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return info
    config = _decode(_call(library, "get_config", ctypes.c_char_p))
    version = re.match(r"OpenBLAS ([0-9][0-9.]*[0-9])", config or "")
    info["version"] = version.group(1) if version else None
    info["kernel"] = _decode(_call(library, "get_corename", ctypes.c_char_p))
    info["threads"] = _call(library, "get_num_threads", ctypes.c_int)
    return info


def describe(info: dict) -> str:
    """One line for a report: ``OpenBLAS 0.3.31 (libscipy_openblas64_...), kernel Haswell,
    1 thread``."""
    version = f"OpenBLAS {info['version']}" if info["version"] else "BLAS"
    library = f" ({info['library']})" if info["library"] else ""
    kernel = info["kernel"] or "unknown"
    threads = info["threads"]
    count = "unknown threads" if threads is None else f"{threads} thread{'s' * (threads != 1)}"
    return f"{version}{library}, kernel {kernel}, {count}"


if __name__ == "__main__":  # python -m gradlab.blas: the BLAS this environment would use
    print(describe(blas_runtime()))
