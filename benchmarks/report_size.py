"""`gradlab report` of a 100-run sweep: the page's size and the time to build it.

The sweep is the tutorial's phase diagram (configs/sweeps/phase_diagram.yaml: the
vanishing.yaml network, depth 40 at most, width 128) widened to 10 weight scales x 10 depths,
logged every 10 of 100 steps (11 logged steps: each run's heatmaps are 11 x depth cells).
Targets on the 2-core lab machine: under ~20 MB, built in under 30 s.

    python benchmarks/report_size.py                 # runs the sweep first (~2 minutes, 2 jobs)
    python benchmarks/report_size.py --runs DIR      # report an existing sweep folder instead
    python benchmarks/report_size.py --keep DIR      # run the sweep into DIR and keep it
    python benchmarks/report_size.py --runs DIR --figures gradient_by_layer,loss
    python benchmarks/report_size.py --runs DIR --figures all

It prints the sweep's time (not the target), then the report's build time (wall and CPU,
including drawing the figures: by default those `gradlab report` draws, `--figures all` for
every one), its size in MB, the bytes each kind of figure takes and the peak memory (RSS) of
the process and of its largest worker.
"""

import argparse
import re
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

from gradlab.sweep import expand_sweep, plan_sweep, run_sweep
from gradlab.webreport import write_report

ROOT = Path(__file__).resolve().parent.parent
SELF, CHILDREN = resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN
WEIGHT_SCALES = [1, 2, 4, 6, 8, 10.149, 12, 14, 16, 20]
DEPTHS = [10, 15, 20, 25, 30, 35, 40, 45, 50, 55]


def spec(steps: int, every: int) -> dict:
    return {
        "name": "report-benchmark",
        "base": str(ROOT / "configs" / "vanishing.yaml"),
        "set": {"train.steps": steps, "log.every": every},
        "grid": {"model.init.weight_scale": WEIGHT_SCALES, "model.depth": DEPTHS},
    }


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the figure-drawing workers)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, help="an existing sweep folder to report")
    parser.add_argument("--keep", type=Path, help="run the sweep into this folder, keep it")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--every", type=int, default=10, help="log.every")
    parser.add_argument("--jobs", type=int, default=None, help="sweep and report (default: cores)")
    parser.add_argument("--figures", help="per-run figures, as gradlab report --figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.runs
        if folder is None:
            folder = args.keep or Path(scratch) / "sweep"
            started = time.perf_counter()
            sweep = expand_sweep(spec(args.steps, args.every), out=folder)
            report = run_sweep(plan_sweep(sweep), args.jobs)
            statuses = Counter(outcome.status for outcome in report.outcomes)
            print(
                f"sweep: {len(report.outcomes)} runs {dict(statuses)} in "
                f"{time.perf_counter() - started:.0f} s"
            )
        out = Path(scratch) / "report.html"
        started, cpu = time.perf_counter(), cpu_seconds()
        if args.figures:  # (imported here: so that older checkouts can be measured too)
            from gradlab.plots import figure_names

            figures = {"figures": figure_names(args.figures)}
        else:
            figures = {}
        written, warnings = write_report(folder, out, args.jobs, **figures)
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        html = written.read_text(encoding="utf-8")
        runs = html.count('<section class="run"')
        print(
            f"report: {runs} runs, {len(html.encode()) / 1e6:.1f} MB, built in {wall:.1f} s "
            f"(CPU {cpu:.1f} s), {len(warnings)} warnings"
        )
        sizes = Counter()
        for name, svg in re.findall(r'data-figure="(\w+)"[^>]*>(.*?)<figcaption>', html, re.S):
            sizes[name] += len(svg.encode())
        for name, size in sizes.most_common():
            print(f"  {name:<28} {size / 1e6:6.2f} MB in all")
        peaks = [resource.getrusage(who).ru_maxrss / 1024 for who in (SELF, CHILDREN)]
        print(f"peak RSS: {peaks[0]:.0f} MiB (this process), {peaks[1]:.0f} MiB (largest worker)")


if __name__ == "__main__":
    main()
