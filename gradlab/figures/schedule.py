"""Runs that differ in their learning-rate schedule: the per-layer update ratios
|ΔW_l| / |W_l| of the first steps, one panel per run, side by side on one scale."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from gradlab import analysis
from gradlab.figures.common import (
    DPI,
    LAYER_LABEL,
    STEP_LABEL,
    integer_ticks,
    log_y,
    positive,
    record,
)
from gradlab.figures.compare import run_labels
from gradlab.results import Run

MAX_PANELS = 4
FIRST_STEPS = 50  # at least this many steps, or twice the longest warmup
UPDATE_RATIO_LABEL = "update ratio |ΔWₗ| / |Wₗ|"


def differ_in_schedule(runs: Sequence[Run]) -> bool:
    """Whether the runs' configs differ in a ``train.schedule`` key (then ``gradlab plot``
    draws ``compare_update_ratio``)."""
    keys = analysis.differing_keys([run.config for run in runs], ignore=("name", "seed"))
    return any(key.startswith("train.schedule.") for key in keys)


def compare_update_ratio(runs: Sequence[Run]) -> Figure:
    """The update ratio of every hidden layer over the first steps of each run (colour:
    layer), with the step where a diverged run ended."""
    shown = list(runs)[:MAX_PANELS]
    labels = run_labels(shown)
    warmups = [
        analysis.flatten(run.config).get("train.schedule.warmup_steps") or 0 for run in shown
    ]
    last = max(FIRST_STEPS, 2 * max(warmups))
    figure = Figure(figsize=(3.6 * len(shown) + 1.2, 4.4), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(shown), sharey=True, squeeze=False)[0]
    cmap = matplotlib.colormaps["viridis"]
    everything, depth = [], 1
    for ax, run, label in zip(axes, shown, labels, strict=True):
        steps, ratios = run.layer_matrix("update_ratio")  # (n_steps,), (n_steps, depth)
        keep = steps <= last
        steps, ratios = steps[keep], positive(ratios[keep])  # a zero lr (warmup): no point
        depth = max(depth, ratios.shape[1] if ratios.ndim == 2 else 1)
        colour = Normalize(1, max(ratios.shape[1], 2)) if ratios.size else Normalize(1, 2)
        for layer in range(ratios.shape[1] if ratios.size else 0):
            ax.plot(steps, ratios[:, layer], color=cmap(colour(layer + 1)), linewidth=1)
        everything.append(ratios)
        ending = ""
        divergence = (run.summary or {}).get("divergence")
        if divergence:
            ax.axvline(divergence["step"], color="black", linestyle=":", linewidth=1)
            ending = f"\ndiverged at step {divergence['step']}"
        ax.axhline(1.0, color="0.5", linestyle="--", linewidth=0.8)  # updates as large as W
        ax.set_title(f"{label}{ending}")
        ax.set_xlabel(STEP_LABEL)
        integer_ticks(ax.xaxis)
    if not log_y(axes[0], everything):
        axes[0].set_yscale("linear")
    axes[0].set_ylabel(UPDATE_RATIO_LABEL)
    mappable = matplotlib.cm.ScalarMappable(Normalize(1, max(depth, 2)), cmap)
    bar = figure.colorbar(mappable, ax=list(axes), label=LAYER_LABEL)
    integer_ticks(bar.ax.yaxis)
    figure.suptitle(f"Per-layer update ratios over the first {last} steps (dashed: ratio 1)")
    record(figure, labels=labels, last_step=last)
    return figure
