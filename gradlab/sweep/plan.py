"""Planning a sweep: which points a shard holds, and what each point's folder already holds
(new, done, running in a live process, incomplete, failed, or another config: an error).
The dry-run listing."""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gradlab.config import config_from_dict, config_to_dict
from gradlab.config_checks import first_difference
from gradlab.errors import GradlabError
from gradlab.results import (
    DONE_STATUSES,
    has_checkpoint,
    holds_only_run_files,
    is_run_dir,
    read_run,
)
from gradlab.sweep import claim
from gradlab.sweep.expand import Point, Sweep


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
    """A point and what to do with it: run, or skip (done) or report (failed earlier). A point
    *running* in a live process is attempted too: its worker leaves it alone unless that
    process has ended by then (see ``claim``)."""

    point: Point
    path: Path
    state: str  # new | done | running | incomplete | failed
    previous: str | None = None  # status found in meta.json, if any

    @property
    def will_run(self) -> bool:
        return self.state in ("new", "running", "incomplete")


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
        if path.is_dir() and holds_only_run_files(path):
            return "incomplete", None  # killed before meta.json was written
        return "new", None  # not ours: the run fails with the runner's message, others go on
    run = read_run(path)
    if run.unreadable:
        return "incomplete", None
    expected = config_to_dict(point.config)
    recorded = _as_current(run.config)
    if recorded != expected:
        difference = first_difference(expected, recorded, ("in the spec", "on disk"))
        conflicts.append(
            f"sweep point {point.index}: {path} holds a different config ({difference})"
        )
        return "conflict", None
    status = run.meta.get("status")
    if status in DONE_STATUSES:
        return "done", status
    if status == "failed":
        return ("incomplete" if retry_failed else "failed"), status
    if status == "running" and claim.is_running(path, run.meta):
        return "running", status
    return "incomplete", status  # running (killed), interrupted, unknown


def _as_current(recorded: dict) -> dict:
    """A config read from disk with the keys added to gradlab since it was written set to
    their defaults (a run of an older version is the same point, not another config)."""
    try:
        return config_to_dict(config_from_dict(recorded))
    except GradlabError:  # not a config this version reads: compared as written
        return recorded


def format_plan(plan: Plan) -> str:
    """The dry-run listing: index, what would happen, name."""
    sweep = plan.sweep
    shard = f", shard {plan.shard[0]}/{plan.shard[1]}" if plan.shard else ""
    pending = sum(p.will_run for p in plan.points)
    lines = [
        f"sweep {sweep.name}: {len(sweep.points)} points{shard}: {len(plan.points)} selected, "
        f"{pending} to run; runs in {sweep.root}/"
    ]
    actions = {
        "new": "run",
        "running": "live",  # left alone while its process lives
        "incomplete": "rerun",
        "done": "done",
        "failed": "failed",
    }
    width = len(str(max((p.point.index for p in plan.points), default=0)))
    for planned in plan.points:
        action = actions[planned.state]
        if planned.state == "incomplete" and has_checkpoint(planned.path):
            action = "resume"  # from its checkpoint, if it holds this config (else rerun)
        lines.append(f"  {planned.point.index:>{width}}  {action:<6}  {planned.point.name}")
    return "\n".join(lines)
