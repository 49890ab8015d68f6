"""Sweeps: one spec file expands into many runs, run in parallel, resumable, shardable.

```yaml
name: phase-diagram
base: ../configs/demo.yaml               # relative to this file; or an inline `config:` mapping
set:                                     # optional: the same overrides for every point
  train.steps: 100
grid:                                    # full cross product, first key slowest
  model.init.weight_scale: [1, 2, 4, 8]
  model.depth: {range: [10, 60, 10]}     # start, stop (exclusive), step; floats allowed
zip:                                     # optional: lists varied together, same length
  train.lr: [0.1, 0.05]
  train.batch_size: [32, 64]
seeds: [0, 1, 2]                         # innermost axis
```

Points are numbered in that order (grid, then zip, then seeds). Each point is named from the
values it varies, labels sorted, seed last: ``depth=20,weight_scale=4,seed=0``; the name
depends on the point's values only, so adding a value to an axis renames nothing. A point runs
in ``<root>/<name>/`` (root: ``results/<sweep name>/`` or ``--out``); ``<root>/sweep.json``
holds the spec and every point's overrides.

``--set`` overrides from the command line apply to every point after ``set:``; one naming a
key the sweep varies is an error. Every point's config is checked before anything is
written. Re-running a sweep skips points whose run says ``completed`` or ``diverged`` with the
same config, re-runs ``running`` (killed) and ``interrupted`` ones, and ``failed`` ones only
with ``retry_failed``; a directory holding a different config is an error. ``--shard K/N``
(K 0-based, like ``$SLURM_ARRAY_TASK_ID``) keeps the points with ``index % N == K``.

Each point runs in its own Python process (BLAS limited to one thread), so a crash or a kill
of one point never takes the others down. This module uses no numpy itself.
"""

import contextlib
import decimal
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gradlab.config import (
    NAME_MAX_LENGTH,
    NAME_PATTERN,
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
from gradlab.errors import ConfigError, GradlabError
from gradlab.results import (
    RUN_FILES,
    atomic_write_json,
    atomic_write_text,
    cannot_write,
    is_run_dir,
)

SPEC_KEYS = SWEEP_SPEC_KEYS
DEFAULT_RESULTS_ROOT = Path("results")
DONE_STATUSES = ("completed", "diverged")
MAX_AXIS_LENGTH = 10_000  # a range with a tiny step is a typo, not a sweep
# set in every worker before numpy is imported: one BLAS thread per run, parallelism by runs
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
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


# ---------------------------------------------------------------------------------------
# Reading and expanding a spec.


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
    base_mapping = apply_overrides(base_mapping, fixed, "set")
    axes = _axes(spec)
    command_line_set = _command_line_set(overrides, [key for keys, _ in axes for key in keys])
    base_mapping = apply_overrides(base_mapping, command_line_set, "--set")
    labels = _labels([key for keys, _ in axes for key in keys])
    points = []
    for index, overrides in enumerate(_combinations(axes)):
        point_name = point_name_for(overrides, labels)
        values = apply_overrides(base_mapping, {**overrides, "name": point_name}, "sweep")
        try:
            config = config_from_dict(values, source=point_name)
        except ConfigError as error:
            raise ConfigError(
                f"sweep point {index} ({point_name}): {error}", error.key_path
            ) from None
        points.append(Point(index, point_name, overrides, config))
    _check_distinct(points)
    root = Path(out) if out is not None else DEFAULT_RESULTS_ROOT / name
    return Sweep(name, root, dict(spec), spec_path, base_path, points, command_line_set)


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


def _labels(keys: list[str]) -> dict[str, str]:
    """Each key path's label in a name: its shortest dotted suffix no other key ends with."""

    def suffix(key: str, length: int) -> str:
        return ".".join(key.split(".")[-length:])

    labels = {}
    for key in keys:
        length = 1
        while any(suffix(other, length) == suffix(key, length) for other in keys if other != key):
            length += 1
        labels[key] = suffix(key, length)
    return labels


def format_name_value(value: Any) -> str:
    """A value as it appears in a point name: YAML-like, shortest float repr, safe characters."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = repr(value)
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


# ---------------------------------------------------------------------------------------
# Shards.


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N); K is 0-based: 0 <= K < N, like $SLURM_ARRAY_TASK_ID with --array=0-(N-1)."""
    match = re.fullmatch(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*", text or "")
    if not match:
        raise GradlabError(
            f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. --shard 0/4 "
            "(on SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; are they set?)"
        )
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 0 <= index < count:
        raise GradlabError(
            f"--shard {text!r}: K must be in 0..N-1 (shards are 0-based); "
            "with SLURM use #SBATCH --array=0-(N-1)"
        )
    return index, count


def select_shard(points: list[Point], shard: tuple[int, int] | None) -> list[Point]:
    """The points of shard (K, N): index % N == K. The N shards partition the sweep."""
    if shard is None:
        return list(points)
    index, count = shard
    return [point for point in points if point.index % count == index]


# ---------------------------------------------------------------------------------------
# Planning: what each point's folder already holds.


@dataclass(frozen=True)
class PlannedPoint:
    """A point and what to do with it: run, or skip (done) or report (failed earlier)."""

    point: Point
    path: Path
    state: str  # new | done | incomplete | failed
    previous: str | None = None  # status found in meta.json, if any

    @property
    def will_run(self) -> bool:
        return self.state in ("new", "incomplete")


@dataclass(frozen=True)
class Plan:
    sweep: Sweep
    shard: tuple[int, int] | None
    points: list[PlannedPoint]


def plan_sweep(
    sweep: Sweep, shard: tuple[int, int] | None = None, retry_failed: bool = False
) -> Plan:
    """Inspect every selected point's folder; a folder holding another config raises."""
    planned, conflicts = [], []
    for point in select_shard(sweep.points, shard):
        path = sweep.root / point.name
        state, previous = _state(path, point, retry_failed, conflicts)
        planned.append(PlannedPoint(point, path, state, previous))
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise GradlabError(
            f"{conflicts[0]}{more}; the spec (or --set) changed since these runs: give the "
            "sweep a new name or --out, or delete the old runs"
        )
    return Plan(sweep, shard, planned)


def _state(path: Path, point: Point, retry_failed: bool, conflicts: list) -> tuple[str, Any]:
    if not path.exists():
        return "new", None
    if not is_run_dir(path):
        if path.is_dir() and all(
            p.name in RUN_FILES or p.name.startswith(".") for p in path.iterdir()
        ):
            return "incomplete", None  # killed before meta.json was written
        return "new", None  # not ours: the run fails with the runner's message, others go on
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        recorded = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return "incomplete", None
    expected = yaml.safe_load(dump_config_yaml(point.config))
    if recorded != expected:
        difference = _first_difference(expected, recorded)
        conflicts.append(
            f"sweep point {point.index}: {path} holds a different config ({difference})"
        )
        return "conflict", None
    status = meta.get("status") if isinstance(meta, dict) else None
    if status in DONE_STATUSES:
        return "done", status
    if status == "failed":
        return ("incomplete" if retry_failed else "failed"), status
    return "incomplete", status  # running (killed), interrupted, unknown


def _first_difference(expected: Any, recorded: Any, path: str = "") -> str:
    """'model.depth: 20 in the spec, 30 on disk' for the first key that differs."""
    if isinstance(expected, dict) and isinstance(recorded, dict):
        for key in list(expected) + [k for k in recorded if k not in expected]:
            if expected.get(key) != recorded.get(key):
                return _first_difference(
                    expected.get(key), recorded.get(key), f"{path}.{key}" if path else key
                )
    return f"{path or 'config'}: {expected!r} in the spec, {recorded!r} on disk"


# ---------------------------------------------------------------------------------------
# Running.


@dataclass
class Outcome:
    """What happened to one planned point in this invocation."""

    planned: PlannedPoint
    status: str  # completed | diverged | failed | interrupted | skipped | not started
    error: str = ""
    ran: bool = False


@dataclass
class SweepReport:
    plan: Plan
    outcomes: list[Outcome] = field(default_factory=list)
    interrupted: bool = False

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def default_jobs() -> int:
    """The cores this process may use (a SLURM allocation's, not the whole node's)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def worker_environment() -> dict[str, str]:
    """The parent's environment with BLAS limited to one thread per worker."""
    env = dict(os.environ)
    env.update({variable: "1" for variable in BLAS_THREAD_VARIABLES})
    return env


def run_sweep(plan: Plan, jobs: int | None = None, progress: bool = False) -> SweepReport:
    """Run the plan's pending points, ``jobs`` at a time, one process per point.

    Writes ``<root>/sweep.json`` first. A failing point is recorded and the others go on.
    SIGINT/SIGTERM stop new points from starting and are passed on to the running ones,
    which end as *interrupted* (re-run by the next invocation).
    """
    jobs = jobs or default_jobs()
    root = plan.sweep.root
    existed = root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(root / "sweep.json", plan.sweep.to_json())
    except OSError as error:
        if not existed:
            with contextlib.suppress(OSError):
                root.rmdir()  # created just now and still empty: leave nothing behind
        raise cannot_write(root, error, "sweep folder") from None
    report = SweepReport(plan)
    pending = [p for p in plan.points if p.will_run]
    for planned in plan.points:
        if not planned.will_run:
            status = "failed" if planned.state == "failed" else "skipped"
            error = "failed in an earlier invocation; --retry-failed runs it again"
            report.outcomes.append(Outcome(planned, status, error if status == "failed" else ""))
    pool = _WorkerPool(worker_environment(), root / "logs")
    bar = _progress_bar(len(pending)) if progress and pending else None
    with pool.forward_signals(), ThreadPoolExecutor(max_workers=jobs) as executor:
        futures = [executor.submit(pool.run, planned) for planned in pending]
        for future in as_completed(futures):
            outcome = future.result()
            report.outcomes.append(outcome)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(failed=len(report.failures), refresh=False)
    if bar is not None:
        bar.close()
    report.outcomes.sort(key=lambda outcome: outcome.planned.point.index)
    report.interrupted = pool.stopped
    return report


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, unit="run", dynamic_ncols=True)


class _WorkerPool:
    """Starts one worker process per point; remembers the live ones to pass signals on."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.stopped = False
        self.live: set[subprocess.Popen] = set()
        self.lock = threading.Lock()

    def run(self, planned: PlannedPoint) -> Outcome:
        request = json.dumps(
            {"config": config_to_dict(planned.point.config), "out": str(planned.path)}
        )
        with self.lock:
            if self.stopped:
                return Outcome(planned, "not started")
            process = subprocess.Popen(
                [sys.executable, "-c", "from gradlab.sweep import _worker; _worker()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                text=True,
                start_new_session=True,  # a terminal's Ctrl-C reaches the parent only; it forwards
            )
            self.live.add(process)
        try:
            _, stderr = process.communicate(request)
        finally:
            with self.lock:
                self.live.discard(process)
        return self._outcome(planned, process.returncode, stderr)

    def _outcome(self, planned: PlannedPoint, returncode: int, stderr: str) -> Outcome:
        meta = _read_meta(planned.path)
        status = meta.get("status", "failed") if returncode == 0 else "failed"
        if returncode != 0 and meta.get("status") == "interrupted":
            status = "interrupted"
        if self.stopped and -returncode in (signal.SIGINT, signal.SIGTERM):
            # the signal we passed on reached the worker before (or after) the runner's own
            # handler: starting up, or already done. Not a failure: the next invocation
            # re-runs the point unless its run finished.
            done = meta.get("status") in DONE_STATUSES
            status = meta["status"] if done else "interrupted"
        error = ""
        if status == "failed":
            if returncode < 0:
                error = f"worker killed by {signal.Signals(-returncode).name}"
            else:
                error = meta.get("error") or _last_line(stderr) or f"worker exit {returncode}"
            self.log_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.log_dir / f"{planned.point.name}.log", stderr)
        return Outcome(planned, status, error, ran=True)

    @contextlib.contextmanager
    def forward_signals(self):
        """While running: SIGINT/SIGTERM stop new starts and go on to the live workers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signal_number, frame):
            with self.lock:
                self.stopped = True
                for process in self.live:
                    process.send_signal(signal_number)

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _worker() -> None:
    """Entry point of a worker process: one run from a JSON request on stdin."""
    request = json.load(sys.stdin)
    from gradlab.runner import run_config

    config = config_from_dict(request["config"], source=request["out"])
    run_config(config, out=Path(request["out"]), force=True, progress=False)


# ---------------------------------------------------------------------------------------
# Text for the CLI.


def format_plan(plan: Plan) -> str:
    """The dry-run listing: index, what would happen, name."""
    sweep = plan.sweep
    shard = f", shard {plan.shard[0]}/{plan.shard[1]}" if plan.shard else ""
    pending = sum(p.will_run for p in plan.points)
    lines = [
        f"sweep {sweep.name}: {len(sweep.points)} points{shard}: {len(plan.points)} selected, "
        f"{pending} to run; runs in {sweep.root}/"
    ]
    actions = {"new": "run", "incomplete": "rerun", "done": "done", "failed": "failed"}
    width = len(str(max((p.point.index for p in plan.points), default=0)))
    for planned in plan.points:
        action = actions[planned.state]
        lines.append(f"  {planned.point.index:>{width}}  {action:<6}  {planned.point.name}")
    return "\n".join(lines)


def format_report(report: SweepReport) -> str:
    """One summary line, then a table of the failed points (if any)."""
    counts: dict[str, int] = {}
    for outcome in report.outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    ran = sum(outcome.ran for outcome in report.outcomes)
    shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [
        f"sweep {report.plan.sweep.name}: {len(report.outcomes)} points, {ran} ran ({shown}); "
        f"results in {report.plan.sweep.root}/"
    ]
    if report.failures:
        width = max(len(o.planned.point.name) for o in report.failures)
        lines.append(f"{len(report.failures)} failed:")
        lines.append(f"  {'index':>5}  {'point':<{width}}  error")
        for outcome in report.failures:
            point = outcome.planned.point
            lines.append(f"  {point.index:>5}  {point.name:<{width}}  {outcome.error}")
        if any(o.ran for o in report.failures):
            lines.append(f"(worker output of failed runs: {report.plan.sweep.root / 'logs'}/)")
    if report.interrupted:
        lines.append("interrupted: run the same command again to resume")
    return "\n".join(lines)
