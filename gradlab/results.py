"""The run directory: how a run is written (atomically, row by row) and read back.

```
<run>/
  config.yaml    resolved config (written once, atomically)
  meta.json      status (running | completed | diverged | interrupted | failed), versions,
                 seed, start/end time, wall time, step reached, the host and pid of the
                 process writing the run, and the data file (path, size, SHA-256) of a run
                 on real data (rewritten atomically)
  metrics.csv    one row per logged step (appended and flushed every log step)
  layers.csv     one row per (logged step, hidden layer or residual block) (appended and
                 flushed likewise; residual networks: RESIDUAL_LAYER_COLUMNS)
  summary.json   final losses, gradient factor M, regime, theory (atomically, at the end)
  spectrum.csv   with analysis.spectrum: the Jacobian's singular values, one row per (step,
                 sample, rank) (rewritten atomically after each measurement)
  params.npz     the final parameters (at the end of every run; see gradlab.checkpoint)
  checkpoint.npz the state to resume from (with train.checkpoint_every; gradlab.checkpoint)
```

A run killed at any moment, even by SIGKILL, leaves parseable files: JSON and YAML are
replaced with ``os.replace`` of a complete temporary file, and CSV rows are whole lines
flushed together (a reader ignores a trailing partial line). ``meta.json`` still says
``running`` then, and readers report such a run as incomplete.
"""

import functools
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradlab.atomic import atomic_write_json, atomic_write_text
from gradlab.atomic import atomic_writer as atomic_writer  # re-exported: plots, tests
from gradlab.atomic import to_jsonable as to_jsonable  # re-exported: report
from gradlab.csv_files import CsvLog, read_csv_columns, spectrum_rows_through
from gradlab.engine.probe import RESIDUAL_STAT_NAMES, STAT_NAMES
from gradlab.errors import GradlabError
from gradlab.liveness import refuse_live_run, this_host

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
# a residual network's layers.csv: one row per block, and the branch's delta norm besides
RESIDUAL_LAYER_COLUMNS = ("step", "layer", *RESIDUAL_STAT_NAMES)
SPECTRUM_COLUMNS = ("step", "sample", "rank", "singular_value")
STATUSES = ("running", "completed", "diverged", "interrupted", "failed")
DONE_STATUSES = ("completed", "diverged")  # a finished run: a sweep does not run it again
PARAMS_FILE, CHECKPOINT_FILE = "params.npz", "checkpoint.npz"  # written by gradlab.checkpoint
# every run has these (summary.json once it ended); the others only with the options that write them
CORE_FILES = ("config.yaml", "meta.json", "metrics.csv", "layers.csv", "summary.json")
RUN_FILES = (*CORE_FILES, "spectrum.csv", PARAMS_FILE, CHECKPOINT_FILE)
REPORT_PAGE = "report.html"  # `gradlab report PATH` writes PATH/report.html
RUN_OUTPUTS = ("plots", REPORT_PAGE)  # what `gradlab plot` and `gradlab report` put in a run
# what meta.json gains when a run ends; a resumed run is running again, without them
_END_KEYS = ("ended_at", "wall_time_s", "step_reached", "error", "signal", "divergence")


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
        refuse_live_run(path, read_meta(path))
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
    layer_columns: tuple[str, ...] = LAYER_COLUMNS,
    metric_columns: tuple[str, ...] = METRIC_COLUMNS,
) -> "RunWriter":
    """``prepare_run_dir`` then a RunWriter on it. A folder that cannot be created or written
    is a GradlabError, and leaves nothing behind: a run folder this call created is removed."""
    path = Path(path)
    existed = path.exists()
    try:
        prepare_run_dir(path, force)
        return RunWriter(path, config_yaml, meta, layer_columns, metric_columns)
    except OSError as error:
        if not existed and path.is_dir() and holds_only_run_files(path):
            shutil.rmtree(path, ignore_errors=True)
        raise cannot_write(path, error, "run directory") from None


def layer_columns(residual: bool) -> tuple[str, ...]:
    """The columns of a run's layers.csv: a residual network's have branch_delta_norm."""
    return RESIDUAL_LAYER_COLUMNS if residual else LAYER_COLUMNS


def metric_columns(train_accuracy: bool) -> tuple[str, ...]:
    """The columns of a run's metrics.csv: with ``train_accuracy`` (real classification data)
    the accuracy on the training samples too."""
    return METRIC_COLUMNS_TRAIN_ACCURACY if train_accuracy else METRIC_COLUMNS


class RunWriter:
    """Writes one run directory as the run goes. Used by the runner. ``meta.json`` records
    the writing process (``host``, ``pid``): a sweep tells a killed run from a live one."""

    def __init__(
        self,
        path: Path,
        config_yaml: str,
        meta: dict,
        layer_columns: tuple[str, ...] = LAYER_COLUMNS,
        metric_columns: tuple[str, ...] = METRIC_COLUMNS,
    ):
        self.path = Path(path)
        self._stats = layer_columns[2:]
        self.metric_columns = metric_columns
        atomic_write_text(self.path / "config.yaml", config_yaml)
        self.meta = {"status": "running", **meta, "host": this_host(), "pid": os.getpid()}
        self.write_meta()
        self.metrics = CsvLog(self.path / "metrics.csv", metric_columns)
        self.layers = CsvLog(self.path / "layers.csv", layer_columns)
        self._spectrum_lines: list[str] = []

    @classmethod
    def resume(
        cls,
        path: Path,
        step: int,
        resumed_at: str,
        layer_columns: tuple[str, ...] = LAYER_COLUMNS,
        metric_columns: tuple[str, ...] = METRIC_COLUMNS,
    ) -> "RunWriter":
        """A writer going on with the run in ``path`` after ``step``, its last checkpoint:
        the CSV rows of later steps are dropped (atomically), meta.json says running again,
        keeps the first session's start time, seed and versions, records this process
        (``host``, ``pid``) and lists under "resumes" each resumption: its step and when
        (``resumed_at``)."""
        writer = cls.__new__(cls)
        writer.path = Path(path)
        meta = {key: value for key, value in read_meta(path).items() if key not in _END_KEYS}
        resumes = [*meta.pop("resumes", []), {"step": step, "at": resumed_at}]
        writer.metrics = CsvLog(writer.path / "metrics.csv", metric_columns, keep_through=step)
        writer.metric_columns = metric_columns
        writer.layers = CsvLog(writer.path / "layers.csv", layer_columns, keep_through=step)
        writer._stats = layer_columns[2:]
        writer._spectrum_lines = spectrum_rows_through(writer.path / "spectrum.csv", step)
        process = {"host": this_host(), "pid": os.getpid()}  # the process that runs it now
        writer.meta = {**meta, "status": "running", **process, "resumes": resumes}
        writer.write_meta()  # last: CSVs that cannot be resumed leave meta.json as it was
        return writer

    def write_meta(self, **updates) -> None:
        self.meta.update(updates)
        atomic_write_json(self.path / "meta.json", self.meta)

    def log_metrics(self, row: dict) -> None:
        self.metrics.append(row.get(column) for column in self.metric_columns)

    def log_layers(self, step: int, stats: dict[str, np.ndarray]) -> None:
        """One row per hidden layer; floats as ``repr``, number_text's exact form, called directly:
        this runs for every logged step."""
        columns = [np.asarray(stats[column], dtype=np.float64).tolist() for column in self._stats]
        self.layers.append_lines(
            f"{step},{layer},{','.join(map(repr, row))}"
            for layer, row in enumerate(zip(*columns, strict=True), 1)
        )

    def flush(self) -> None:
        self.metrics.flush()
        self.layers.flush()

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", summary)

    def write_spectrum(self, step: int, singular_values: np.ndarray) -> None:
        """Add one measurement's singular values (samples, n) to spectrum.csv, rewriting the
        file atomically with every measurement so far."""
        rows = [
            f"{step},{sample},{rank},{value!r}"
            for sample, values in enumerate(np.asarray(singular_values, np.float64).tolist())
            for rank, value in enumerate(values, 1)
        ]
        self._spectrum_lines += rows
        header = ",".join(SPECTRUM_COLUMNS)
        atomic_write_text(
            self.path / "spectrum.csv", "\n".join([header, *self._spectrum_lines]) + "\n"
        )

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
        """layers.csv by column; ``branch_delta_norm`` is nan for plain networks."""
        return read_csv_columns(self.path / "layers.csv", RESIDUAL_LAYER_COLUMNS)

    @functools.cached_property
    def spectrum(self) -> dict[str, np.ndarray]:
        """spectrum.csv's columns (empty arrays for a run without it)."""
        return read_csv_columns(self.path / "spectrum.csv", SPECTRUM_COLUMNS)

    @property
    def name(self) -> str:
        return self.config.get("name") or self.path.name

    @property
    def status(self) -> str:
        return self.meta.get("status", "unknown")

    @property
    def complete(self) -> bool:
        return self.status in DONE_STATUSES

    def csv_problems(self) -> list[str]:
        """Why metrics.csv or layers.csv cannot be read (a cell that is not a number); [] when
        both can."""
        problems = []
        for name in ("metrics", "layers"):
            try:
                getattr(self, name)
            except ValueError as error:  # (it names the file)
                problems.append(str(error))
            except OSError as error:
                problems.append(f"{name}.csv unreadable: {error}")
        return problems

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


def has_checkpoint(path: Path) -> bool:
    return (Path(path) / CHECKPOINT_FILE).is_file()


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "meta.json").is_file() and (Path(path) / "config.yaml").is_file()


def holds_only_run_files(path: Path) -> bool:
    """True if everything in the folder ``path`` is a run's files, its plots, its report page
    or leftover temporary files: a run's folder (perhaps of a run killed before meta.json was
    written), which ``--force`` and a sweep may replace."""
    return all(
        entry.name in RUN_FILES or entry.name in RUN_OUTPUTS or entry.name.startswith(".")
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
        if problem is None and not isinstance(summary, dict):
            problem = "summary.json unreadable: a JSON object expected"
            summary = None
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
