"""How `gradlab sweep` scales with --jobs: 8 points with --jobs 1, then with --jobs 2.

8 seeds of one network (depth 20, width 64, 500 steps, sigmoid): equal work per point, so
the speedup measures the parallel machinery, not load balance. Both sweeps go through the
same code path as `gradlab sweep` (spec -> plan -> one worker process per point). Target on
a 2-core machine: speedup >= 1.8x.

    python benchmarks/sweep_scaling.py [--steps 500] [--points 8] [--repeats 3]

The two variants alternate ``--repeats`` times and the medians are compared, so a burst of
other load on the machine hits both alike.
"""

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from gradlab.sweep import expand_sweep, plan_sweep, run_sweep


def spec(steps: int, points: int) -> dict:
    return {
        "name": "scaling",
        "config": {
            "data": {"n_train": 2048, "n_test": 512, "input_dim": 32},
            "model": {"depth": 20, "width": 64, "activation": "sigmoid"},
            "train": {"steps": steps, "batch_size": 64, "lr": 0.1},
            "log": {"every": 10, "eval_every": 100},
        },
        "seeds": list(range(points)),
    }


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_sweep(mapping: dict, out: Path, jobs: int) -> tuple[float, float]:
    """(wall seconds, worker CPU seconds) of one sweep."""
    plan = plan_sweep(expand_sweep(mapping, out=out))
    cpu, start = children_cpu(), time.perf_counter()
    report = run_sweep(plan, jobs=jobs)
    elapsed = time.perf_counter() - start
    assert not report.failures, [outcome.error for outcome in report.failures]
    return elapsed, children_cpu() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    mapping = spec(args.steps, args.points)
    times: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for jobs in times:
                wall, used = time_sweep(mapping, Path(tmp) / f"jobs{jobs}-{repeat}", jobs)
                times[jobs].append(wall)
                cpu[jobs].append(used)
    serial, parallel = (statistics.median(times[jobs]) for jobs in (1, 2))
    print(f"{args.points} points, depth 20, width 64, {args.steps} steps; median of {args.repeats}")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} (other work skews the times)")
    for jobs, elapsed in ((1, serial), (2, parallel)):
        shown = ", ".join(f"{t:.2f}" for t in times[jobs])
        used = statistics.median(cpu[jobs])
        print(f"--jobs {jobs}: {elapsed:.2f} s  ({shown}); worker CPU {used:.2f} s")
    print(f"speedup:  {serial / parallel:.2f}x (target >= 1.8x on 2 cores)")


if __name__ == "__main__":
    main()
