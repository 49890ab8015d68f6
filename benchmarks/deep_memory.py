"""Peak memory and time of a very deep run: depth 2000, width 64, default data, 3 steps,
per-layer statistics logged every step (and the test set evaluated at steps 0 and 3).

Each repeat is a fresh Python process that imports gradlab, runs the config with
``run_config`` and reports its own peak RSS (``ru_maxrss``) and the run's wall time, so the
figure is what ``gradlab run`` would peak at. The child runs in a temporary folder, so the
gradlab it imports is the one installed for this interpreter (run it with another checkout's
Python to measure that checkout). Target: peak RSS under 1 GB.

    python benchmarks/deep_memory.py                 # 1 repeat, ~15 s
    python benchmarks/deep_memory.py --repeats 3 --depth 1000
"""

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from gradlab.config import config_from_dict
from gradlab.runner import run_config
import gradlab.runner as runner

spec = json.loads(sys.argv[1])
config = config_from_dict(spec)
estimate = getattr(runner, "estimate_memory", None)  # absent in older versions
started = time.perf_counter()
run = run_config(config, out=sys.argv[2], force=True)
seconds = time.perf_counter() - started
print(json.dumps({
    "status": run.status,
    "seconds": seconds,
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "estimate_bytes": None if estimate is None else estimate(config),
}))
"""


def config_spec(depth: int, width: int, steps: int) -> dict:
    """Default data and training, a deep sigmoid MLP, statistics logged every step."""
    return {
        "name": "deep_memory",
        "model": {"depth": depth, "width": width},
        "train": {"steps": steps},
        "log": {"every": 1},
    }


def measure(spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(spec), f"{folder}/run"],
            cwd=folder,  # never import a gradlab from the caller's working directory
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        sys.exit(f"the run failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=2000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    spec = config_spec(args.depth, args.width, args.steps)
    print(f"depth {args.depth}, width {args.width}, {args.steps} steps, log.every 1, default data")
    peaks = []
    for repeat in range(1, args.repeats + 1):
        result = measure(spec)
        peaks.append(result["peak_rss_bytes"])
        estimate = result["estimate_bytes"]
        estimate_text = "n/a" if estimate is None else f"{estimate / 2**20:.0f} MiB"
        print(
            f"run {repeat}: {result['status']}, peak RSS {result['peak_rss_bytes'] / 2**20:.0f} "
            f"MiB, {result['seconds']:.2f} s (estimate {estimate_text})"
        )
    verdict = "met" if max(peaks) < 1e9 else "missed"
    print(f"target peak RSS < 1 GB: {verdict} (max {max(peaks) / 1e9:.2f} GB)")


if __name__ == "__main__":
    main()
