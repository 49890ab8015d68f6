"""What full per-layer logging costs: `gradlab run` with log.every 1 against log.every 1000.

Depth 50, width 128, 2000 steps (the issue's setting). Both variants run in this process
through the same code path as `gradlab run` (config -> runner -> run directory), alternately,
``--repeats`` times; the fastest runs (and the medians) are compared. Target: logging
every step costs <= 10%.

    python benchmarks/run_overhead.py [--steps 2000] [--repeats 3]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from gradlab.config import config_from_dict
from gradlab.runner import run_config


def config(steps: int, every: int):
    return config_from_dict(
        {
            "name": f"overhead-every-{every}",
            "data": {"n_train": 2048, "n_test": 512, "input_dim": 32},
            "model": {"depth": 50, "width": 128, "activation": "sigmoid"},
            "train": {"steps": steps, "batch_size": 64, "lr": 0.1},
            "log": {"every": every, "eval_every": 1000},
        }
    )


def time_run(cfg, root: Path) -> float:
    start = time.perf_counter()
    run_config(cfg, out=root / cfg.name, force=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    full, sparse = config(args.steps, 1), config(args.steps, 1000)
    times = {"every 1": [], "every 1000": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        time_run(config(50, 1), root)  # warm-up: imports, BLAS threads, page cache
        for _ in range(args.repeats):
            times["every 1"].append(time_run(full, root))
            times["every 1000"].append(time_run(sparse, root))
        rows = (root / full.name / "layers.csv").read_text().count("\n") - 1
    print(
        f"depth 50, width 128, batch 64, {args.steps} steps, {args.repeats} alternating runs each"
    )
    for key, values in times.items():
        print(
            f"  log.every {key[6:]:>4}: min {min(values):7.2f} s, median "
            f"{statistics.median(values):7.2f} s   runs: " + ", ".join(f"{v:.2f}" for v in values)
        )
    print(f"  layers.csv rows written with every 1: {rows}")
    load = os.getloadavg()[0]
    if load > 1.5:
        print(f"  WARNING: load average {load:.1f}: other processes ran; times are inflated")
    # the minimum is the least disturbed run of each variant (as timeit reports it)
    overhead = min(times["every 1"]) / min(times["every 1000"]) - 1.0
    median_overhead = statistics.median(times["every 1"]) / statistics.median(times["every 1000"])
    verdict = "meets" if overhead <= 0.10 else "misses"
    print(
        f"logging overhead: {100 * overhead:+.1f}% on the fastest runs, "
        f"{100 * (median_overhead - 1):+.1f}% on the medians ({verdict} the <= 10% target)"
    )


if __name__ == "__main__":
    main()
