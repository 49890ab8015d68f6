"""Running a planned sweep: one worker process per point, ``jobs`` at a time; a failing or
killed point never takes the others down. SIGINT/SIGTERM stop new starts and are passed on
to the running workers. Each worker first takes the point's claim (``claim``): a point that a
live process of another shard runs is left alone. The one-line report and the table of
failed points."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from gradlab import liveness
from gradlab.config import config_from_dict, config_to_dict
from gradlab.results import (
    DONE_STATUSES,
    atomic_write_json,
    atomic_write_text,
    cannot_write,
    read_meta,
)
from gradlab.signals import STOP_SIGNALS, on_stop_signals
from gradlab.sweep import claim
from gradlab.sweep.plan import Plan, PlannedPoint

# set in every worker before numpy is imported: one BLAS thread per run, parallelism by runs
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_LEFT_ALONE = '{"left": '  # a worker's stdout line when it did not run its point
SWEEP_RECORD = "sweep.json"  # in the sweep's root: the spec and every point's overrides


@dataclass
class Outcome:
    """What happened to one planned point in this invocation."""

    planned: PlannedPoint
    status: str  # completed | diverged | failed | interrupted | skipped | not started
    #              | running elsewhere (another live process holds the point's claim)
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


def read_sweep_record(folder) -> dict | None:
    """``<folder>/sweep.json`` as ``run_sweep`` wrote it (``Sweep.to_json``: name, spec, the
    points), or None when the folder has none or it cannot be read as a JSON object."""
    try:
        record = json.loads((Path(folder) / SWEEP_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


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
        atomic_write_json(root / SWEEP_RECORD, plan.sweep.to_json())
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
            {
                "config": config_to_dict(planned.point.config),
                "out": str(planned.path),
                "parent": os.getpid(),
            }
        )
        if planned.state == "running" and claim.is_claimed(planned.path):
            return Outcome(planned, "running elsewhere")  # still live: spare a worker's start
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
            stdout, stderr = process.communicate(request)
        finally:
            with self.lock:
                self.live.discard(process)
        return self._outcome(planned, process.returncode, stderr, stdout)

    def _outcome(
        self, planned: PlannedPoint, returncode: int, stderr: str, stdout: str = ""
    ) -> Outcome:
        left = [line for line in stdout.splitlines() if line.startswith(_LEFT_ALONE)]
        if returncode == 0 and left:  # the worker left the point alone; see _worker
            return Outcome(planned, json.loads(left[-1])["left"])
        meta = read_meta(planned.path)
        status = meta.get("status", "failed") if returncode == 0 else "failed"
        if returncode != 0 and meta.get("status") == "interrupted":
            status = "interrupted"
        if self.stopped and -returncode in STOP_SIGNALS:
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

    def forward_signals(self):
        """While running: SIGINT/SIGTERM stop new starts and go on to the live workers."""

        def handler(signal_number):
            with self.lock:
                self.stopped = True
                for process in self.live:
                    process.send_signal(signal_number)

        return on_stop_signals(handler)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _worker() -> None:
    """Entry point of a worker process: one run from a JSON request on stdin. It holds the
    point's claim while it runs; a point another live process runs, or that another shard
    finished since the plan, is left alone: one JSON line on stdout says why. A point with a
    checkpoint of this config is resumed from it."""
    request = json.load(sys.stdin)
    _end_with_parent(request["parent"])
    from gradlab.resume import run_or_resume

    out = Path(request["out"])
    config = config_from_dict(request["config"], source=request["out"])
    with claim.hold(out) as held:
        left = _leave_alone(out, held)
        if left:
            print(_LEFT_ALONE + json.dumps(left) + "}")
            return
        run_or_resume(config, out, progress=False)


def _end_with_parent(parent: int) -> None:
    """Linux: this worker gets SIGKILL when the sweep process that started it dies, so a
    sweep killed outright (SIGKILL, the OOM killer, ``scancel --batch --signal=KILL``) leaves
    no point running unsupervised; its points re-run on the next invocation."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl: nobody is left to report to
        os._exit(1)


def _leave_alone(out: Path, held: bool | None) -> str:
    """Why this worker must not run the point ("" to run it), given its claim."""
    if held is False:
        return "running elsewhere"
    meta = read_meta(out)
    if held is None and meta.get("status") == "running" and liveness.recorded_process_alive(meta):
        return "running elsewhere"  # no locks on this filesystem: the recorded pid decides
    if meta.get("status") in DONE_STATUSES:
        return "skipped"  # finished by another shard since this one made its plan
    return ""


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
