"""``gradlab sweep --status``: where each point of a sweep stands, read while shards write.

It reads meta.json files (replaced atomically, so never seen half-written) and probes the
points' claims as the plan does (``claim.is_running``), so it runs safely beside the shards,
from any host sharing the sweep folder (a login node, while a job array runs).
"""

from dataclasses import dataclass

from gradlab.results import read_meta
from gradlab.sweep.plan import Plan, PlannedPoint

STATUS_ORDER = ("completed", "diverged", "running", "interrupted", "failed", "not started")


@dataclass(frozen=True)
class PointStatus:
    planned: PlannedPoint
    status: str  # one of STATUS_ORDER
    detail: str = ""  # running: since when, where; interrupted: killed or at which step


def point_statuses(plan: Plan) -> list[PointStatus]:
    """The status of every point of the plan, from its folder as it is now."""
    return [_status(planned) for planned in plan.points]


def _status(planned: PlannedPoint) -> PointStatus:
    previous = planned.previous
    if planned.state == "new" or previous is None:  # no run yet, or killed before meta.json
        return PointStatus(planned, "not started")
    if previous in ("completed", "diverged", "failed"):
        return PointStatus(planned, previous, _error(planned) if previous == "failed" else "")
    meta = read_meta(planned.path)
    if planned.state == "running":  # the plan applied the liveness rule (sweep.claim)
        where = f" on {meta['host']} (pid {meta['pid']})" if "host" in meta else ""
        return PointStatus(planned, "running", f"since {meta.get('started_at')}{where}")
    if previous == "running":
        return PointStatus(
            planned, "interrupted", "killed: meta.json says running, its process is gone"
        )
    return PointStatus(planned, "interrupted", f"at step {meta.get('step_reached')}")


def _error(planned: PlannedPoint) -> str:
    return str(read_meta(planned.path).get("error", ""))


def all_done(statuses: list[PointStatus]) -> bool:
    return all(s.status in ("completed", "diverged") for s in statuses)


def format_status(plan: Plan, statuses: list[PointStatus]) -> str:
    """A line of counts, then one line per point that is not completed or diverged."""
    counts = {status: 0 for status in STATUS_ORDER}
    for point_status in statuses:
        counts[point_status.status] += 1
    shard = f", shard {plan.shard[0]}/{plan.shard[1]}" if plan.shard else ""
    lines = [
        f"sweep {plan.sweep.name}: {len(statuses)} points{shard} in {plan.sweep.root}/",
        ", ".join(f"{counts[status]} {status}" for status in STATUS_ORDER),
    ]
    pending = [s for s in statuses if s.status not in ("completed", "diverged")]
    pending.sort(key=lambda s: (STATUS_ORDER.index(s.status), s.planned.point.index))
    name_width = max((len(s.planned.point.name) for s in pending), default=0)
    index_width = max((len(str(s.planned.point.index)) for s in pending), default=0)
    for point_status in pending:
        point = point_status.planned.point
        lines.append(
            f"  {point_status.status:<11}  {point.index:>{index_width}}  "
            f"{point.name:<{name_width}}  {point_status.detail}".rstrip()
        )
    return "\n".join(lines)
