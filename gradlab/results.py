"""The run directory: how a run is written (atomically, row by row) and read back.

```
<run>/
  config.yaml    resolved config (written once, atomically)
  meta.json      status (running | completed | diverged | interrupted | failed), versions,
                 seed, start/end time, wall time, step reached, the data file (path, size,
                 SHA-256) of a run on real data (rewritten atomically)
  metrics.csv    one row per logged step (appended and flushed every log step)
  layers.csv     one row per (logged step, hidden layer) (appended and flushed likewise)
  summary.json   final losses, gradient factor M, regime, theory (atomically, at the end)
```

A run killed at any moment, even by SIGKILL, leaves parseable files: JSON and YAML are
replaced with ``os.replace`` of a complete temporary file, and CSV rows are whole lines
flushed together (a reader ignores a trailing partial line). ``meta.json`` still says
``running`` then, and readers report such a run as incomplete.
"""

import contextlib
import csv
import functools
import io
import json
import math
import os
import platform
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradlab.engine.probe import STAT_NAMES
from gradlab.errors import GradlabError
from gradlab.formatting import number_text

METRIC_COLUMNS = (
    "step",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "train_eval_loss",
    "grad_norm",
    "grad_norm_clipped",
    "clip_factor",
    "clip_cosine",
    "lr",
)
# Runs on real classification data (data.source file or digits) also record the accuracy on
# the training samples train_eval_loss uses: what trainability is judged by. Synthetic runs
# keep the columns above, so their files stay as they were.
METRIC_COLUMNS_TRAIN_ACCURACY = (*METRIC_COLUMNS, "train_accuracy")
LAYER_COLUMNS = ("step", "layer", *STAT_NAMES)
_STATS = LAYER_COLUMNS[2:]
STATUSES = ("running", "completed", "diverged", "interrupted", "failed")
DONE_STATUSES = ("completed", "diverged")  # a finished run: a sweep does not run it again
RUN_FILES = ("config.yaml", "meta.json", "metrics.csv", "layers.csv", "summary.json")


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


class CsvLog:
    """A CSV file appended whole rows at a time; ``flush`` makes them durable to readers."""

    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.columns = columns
        self._handle = open(path, "w", encoding="utf-8", newline="")
        self._pending = io.StringIO()
        self._pending.write(",".join(columns) + "\n")
        self.flush()

    def append(self, values) -> None:
        self._pending.write(",".join(number_text(v) for v in values) + "\n")

    def append_lines(self, lines) -> None:
        """Whole lines already formatted (without their newline)."""
        self._pending.write("".join([line + "\n" for line in lines]))

    def flush(self) -> None:
        """One write of all pending whole lines, then flush to the OS (survives SIGKILL)."""
        text = self._pending.getvalue()
        if text:
            self._handle.write(text)
            self._handle.flush()
            self._pending = io.StringIO()

    def close(self) -> None:
        self.flush()
        self._handle.close()


def versions() -> dict:
    from gradlab import __version__
    from gradlab.blas import blas_runtime

    return {
        "gradlab": __version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "blas": blas_runtime(),  # trained values depend on the kernel in their last bits
    }


def prepare_run_dir(path: Path, force: bool = False) -> Path:
    """Create an empty run directory; an existing non-empty one is an error unless ``force``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GradlabError(f"output path {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise GradlabError(
                f"output directory {path} already exists; use --force to overwrite it"
                " or --out to choose another"
            )
        if not holds_only_run_files(path):
            raise GradlabError(
                f"output directory {path} holds files that are not a gradlab run; --force "
                "only replaces run directories: choose another --out"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cannot_write(path: Path, error: OSError, what: str = "folder") -> GradlabError:
    """A one-line GradlabError for an OSError met creating or writing ``path``."""
    path = Path(path)
    reason = error.strerror or type(error).__name__
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        reason = f"{existing} is a file, not a folder"
    elif existing is not None and existing != path and isinstance(error, FileNotFoundError):
        reason = f"no folder can be created in {existing} ({reason})"  # e.g. under /proc
    return GradlabError(f"cannot write the {what} {path}: {reason}")


def start_run(
    path: Path,
    config_yaml: str,
    meta: dict,
    force: bool = False,
    metric_columns: tuple[str, ...] = METRIC_COLUMNS,
) -> "RunWriter":
    """``prepare_run_dir`` then a RunWriter on it. A folder that cannot be created or written
    is a GradlabError, and leaves nothing behind: a run folder this call created is removed."""
    path = Path(path)
    existed = path.exists()
    try:
        prepare_run_dir(path, force)
        return RunWriter(path, config_yaml, meta, metric_columns)
    except OSError as error:
        if not existed and path.is_dir() and holds_only_run_files(path):
            shutil.rmtree(path, ignore_errors=True)
        raise cannot_write(path, error, "run directory") from None


class RunWriter:
    """Writes one run directory as the run goes. Used by the runner."""

    def __init__(
        self,
        path: Path,
        config_yaml: str,
        meta: dict,
        metric_columns: tuple[str, ...] = METRIC_COLUMNS,
    ):
        self.path = Path(path)
        self.metric_columns = metric_columns
        atomic_write_text(self.path / "config.yaml", config_yaml)
        self.meta = {"status": "running", **meta}
        self.write_meta()
        self.metrics = CsvLog(self.path / "metrics.csv", metric_columns)
        self.layers = CsvLog(self.path / "layers.csv", LAYER_COLUMNS)

    def write_meta(self, **updates) -> None:
        self.meta.update(updates)
        atomic_write_json(self.path / "meta.json", self.meta)

    def log_metrics(self, row: dict) -> None:
        self.metrics.append(row.get(column) for column in self.metric_columns)

    def log_layers(self, step: int, stats: dict[str, np.ndarray]) -> None:
        """One row per hidden layer; floats as ``repr``, number_text's exact form, called directly:
        this runs for every logged step."""
        columns = [np.asarray(stats[column], dtype=np.float64).tolist() for column in _STATS]
        self.layers.append_lines(
            f"{step},{layer},{','.join(map(repr, row))}"
            for layer, row in enumerate(zip(*columns, strict=True), 1)
        )

    def flush(self) -> None:
        self.metrics.flush()
        self.layers.flush()

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", summary)

    def close(self, **meta_updates) -> None:
        self.metrics.close()
        self.layers.close()
        self.write_meta(**meta_updates)


# ---- reading runs back ------------------------------------------------------------------


@dataclass
class Run:
    """A run directory read back. ``metrics`` and ``layers`` map column names to float64
    arrays (missing cells are nan); the CSV files are parsed on first access, so reading a
    run for its summary (as ``gradlab run`` does to print its report) costs no parsing."""

    path: Path
    config: dict
    meta: dict
    summary: dict | None
    problems: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # meta.json / config.yaml, unparsed

    @functools.cached_property
    def metrics(self) -> dict[str, np.ndarray]:
        return read_csv_columns(self.path / "metrics.csv", METRIC_COLUMNS_TRAIN_ACCURACY)

    @functools.cached_property
    def layers(self) -> dict[str, np.ndarray]:
        return read_csv_columns(self.path / "layers.csv", LAYER_COLUMNS)

    @property
    def name(self) -> str:
        return self.config.get("name") or self.path.name

    @property
    def status(self) -> str:
        return self.meta.get("status", "unknown")

    @property
    def complete(self) -> bool:
        return self.status in DONE_STATUSES

    def layer_matrix(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values[n_steps, depth]) of a layers.csv column, one row per logged step."""
        steps = self.layers["step"]
        if steps.size == 0:
            return np.zeros(0), np.zeros((0, 0))
        depth = int(np.max(self.layers["layer"]))
        unique_steps = np.unique(steps)
        values = np.full((unique_steps.size, depth), np.nan)
        rows = np.searchsorted(unique_steps, steps)
        values[rows, self.layers["layer"].astype(int) - 1] = self.layers[column]
        return unique_steps, values


def read_csv_columns(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of a gradlab CSV as float arrays; a trailing partial line is ignored, and so
    is a row with the wrong number of cells. Columns the file lacks are all nan."""
    data = {column: [] for column in columns}
    if not path.exists():
        return {column: np.zeros(0) for column in columns}
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row cut by a kill mid-write
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return {column: np.zeros(0) for column in columns}
    index = {name: i for i, name in enumerate(header)}
    table = _numeric_table(text.partition("\n")[2], len(header))
    if table is not None:  # every row complete and numeric: numpy's C parser, the fast path
        rows = table.shape[0]
        return {
            c: table[:, index[c]].copy() if c in index else np.full(rows, math.nan) for c in columns
        }
    for row in reader:
        if len(row) != len(header):
            continue
        for column in columns:
            cell = row[index[column]] if column in index else ""
            data[column].append(float(cell) if cell else math.nan)
    return {column: np.asarray(values, dtype=float) for column, values in data.items()}


def _numeric_table(body: str, width: int) -> np.ndarray | None:
    """The CSV rows in ``body`` as a (rows, width) float array, or None unless every row has
    ``width`` numeric cells (an empty cell or a short row: the caller's slower path)."""
    if not body.strip():
        return np.zeros((0, width))
    try:
        table = np.loadtxt(
            io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2, comments=None
        )
    except ValueError:
        return None
    return table if table.shape[1] == width else None


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "meta.json").is_file() and (Path(path) / "config.yaml").is_file()


def holds_only_run_files(path: Path) -> bool:
    """True if everything in the folder ``path`` is a run's files, its plots or leftover
    temporary files: a run's folder (perhaps of a run killed before meta.json was written),
    which ``--force`` and a sweep may replace."""
    return all(
        entry.name in RUN_FILES or entry.name == "plots" or entry.name.startswith(".")
        for entry in Path(path).iterdir()
    )


def _parse_file(path: Path) -> tuple[object, str | None]:
    """(the parsed JSON or YAML file, None), or (None, 'name unreadable: why')."""
    import yaml  # results is used by the CLI; yaml only to read the resolved config

    try:
        text = path.read_text(encoding="utf-8")
        return (json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)), None
    except (OSError, ValueError, yaml.YAMLError) as error:
        return None, f"{path.name} unreadable: {error}"


def read_meta(path: Path) -> dict:
    """A run's meta.json (status, times, step reached); {} when missing or unreadable."""
    meta, problem = _parse_file(Path(path) / "meta.json")
    return meta if problem is None and isinstance(meta, dict) else {}


def read_run(path) -> Run:
    """Read a run directory; raises GradlabError when it is not one. A file that cannot be
    parsed is named in ``problems`` (and meta.json and config.yaml in ``unreadable``)."""
    path = Path(path)
    if not is_run_dir(path):
        raise GradlabError(f"{path} is not a gradlab run directory (no meta.json/config.yaml)")
    problems, unreadable = [], []
    meta, problem = _parse_file(path / "meta.json")
    if problem is None and not isinstance(meta, dict):
        problem = f"meta.json unreadable: a JSON object expected, got {type(meta).__name__}"
    if problem is not None:
        meta, problems, unreadable = {"status": "unknown"}, [problem], ["meta.json"]
    config, problem = _parse_file(path / "config.yaml")
    if problem is not None:
        problems.append(problem)
        unreadable.append("config.yaml")
    summary = None
    if (path / "summary.json").exists():
        summary, problem = _parse_file(path / "summary.json")
        problems += [problem] if problem else []
    if meta.get("status") == "running":
        problems.append("incomplete: meta.json still says running (killed, or still going)")
    config = config if isinstance(config, dict) else {}
    return Run(path, config, meta, summary, problems, unreadable)


def find_runs(paths) -> list[Path]:
    """Run directories at or below each path (sorted, no duplicates)."""
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise GradlabError(f"{path}: no such file or directory")
        if is_run_dir(path):
            found.append(path)
            continue
        found.extend(
            sorted(meta.parent for meta in path.rglob("meta.json") if is_run_dir(meta.parent))
        )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return sorted(unique)
