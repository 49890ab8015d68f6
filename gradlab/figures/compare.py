"""Figures of several runs: the gradient by layer at init and the loss, one curve per group of
runs that differ only in their seed (the mean, with a min-max band over the seeds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from matplotlib.figure import Figure

from gradlab import analysis
from gradlab.figures.common import (
    DELTA_LABEL,
    LAYER_LABEL,
    STEP_LABEL,
    colours,
    fmt,
    integer_ticks,
    key_symbol,
    layer_ticks,
    literal,
    log_y,
    loss_name,
    markers,
    measured_factor,
    new_figure,
    no_data,
    positive,
    record,
)
from gradlab.results import Run

MAX_LABEL_KEYS = 3  # more differing keys than this: runs are named by their config's name
MAX_LEGEND_LINES = 24  # a legend of more lines does not fit below the axes (two columns)
GROUP_IGNORES = ("name", "seed")


class Group(NamedTuple):
    """Runs whose configs differ only in name and seed, and their legend label."""

    label: str
    runs: list[Run]


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Groups of runs that differ only in seed, in numeric order of the keys that differ
    between groups, with short distinct labels ('$\\sigma_w$=4, $L$=10' or the run name)."""
    flats = [analysis.flatten(run.config) for run in runs]
    keys = analysis.differing_keys([run.config for run in runs], ignore=GROUP_IGNORES)
    members: dict[tuple, list] = {}
    for run, flat in zip(runs, flats, strict=True):
        members.setdefault(tuple(repr(flat.get(key)) for key in keys), []).append((run, flat))
    ordered = sorted(members.values(), key=lambda group: analysis.order_key(group[0][1], keys))
    folders = [group[0][0].path.name if len(group) == 1 else None for group in ordered]
    labels = _labels([[flat for _, flat in group] for group in ordered], keys, folders)
    return [
        Group(label, [run for run, _ in group])
        for label, group in zip(labels, ordered, strict=True)
    ]


def _labels(groups: list[list[dict]], keys: list[str], folders: list) -> list[str]:
    """Key=value pairs for up to MAX_LABEL_KEYS keys; beyond, the runs' names when they tell
    the groups apart, else the run folders' names when each group is one run."""
    names = [{str(flat.get("name")) for flat in group} for group in groups]
    named = all(len(name) == 1 for name in names) and len({*map(min, names)}) == len(groups)
    if not keys or (len(keys) > MAX_LABEL_KEYS and named):
        labels = [literal(min(name)) for name in names]
    elif len(keys) > MAX_LABEL_KEYS and None not in folders:
        labels = [literal(folder) for folder in folders]
    else:
        symbols = [key_symbol(key) for key in keys]
        symbols = [s if symbols.count(s) == 1 else k for s, k in zip(symbols, keys, strict=True)]
        labels = [
            ", ".join(
                f"{symbol}={_value(group[0].get(key))}"
                for symbol, key in zip(symbols, keys, strict=True)
            )
            for group in groups
        ]
    seen: dict[str, int] = {}
    distinct = []
    for label in labels:  # 1 and 1.0 read alike: number the repeats
        seen[label] = seen.get(label, 0) + 1
        distinct.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return distinct


def _value(value) -> str:
    """A config value in a legend: floats to 6 significant digits, so legends stay short."""
    if isinstance(value, float):
        return fmt(value, "g")
    return "-" if value is None else literal(str(value))


def run_labels(runs: Sequence[Run]) -> list[str]:
    """The legend label of each run (its group's), in the order given."""
    label_of = {id(run): group.label for group in group_runs(runs) for run in group.runs}
    return [label_of[id(run)] for run in runs]


def _log_mean_band(matrix: np.ndarray) -> tuple:
    """(geometric mean, min, max, count) over rows of positive values; nan where none."""
    mean, low, high, count = _mean_band(np.log10(positive(matrix)))  # (n_runs, n_points)
    return 10.0**mean, 10.0**low, 10.0**high, count


def _mean_band(matrix: np.ndarray) -> tuple:
    """(mean, min, max, count) over rows of finite values; nan where none."""
    finite = np.isfinite(matrix)
    count = finite.sum(axis=0)
    mean = np.where(
        count > 0, np.where(finite, matrix, 0).sum(axis=0) / np.maximum(count, 1), np.nan
    )
    low = np.where(count > 0, np.where(finite, matrix, np.inf).min(axis=0), np.nan)
    high = np.where(count > 0, np.where(finite, matrix, -np.inf).max(axis=0), np.nan)
    return mean, low, high, count


def _banded(ax, x, mean, low, high, count, colour, label, **style) -> bool:
    """The mean line, and a band where two or more runs have a value; True if a band."""
    keep = count > 0
    ax.plot(x[keep], mean[keep], color=colour, label=label, **markers(keep.sum()), **style)
    band = count > 1
    if band.any():
        ax.fill_between(x, low, high, where=band, color=colour, alpha=0.2, linewidth=0)
    return bool(band.any())


def compare_gradient_by_layer(runs: Sequence[Run]) -> Figure:
    """|delta_l| at init against l for every group of runs, on one log axis, with each
    group's M at init (summary.json's; the mean over seeds) in the legend."""
    figure, ax = new_figure()
    groups = group_runs(runs)
    drawn, banded, factors = [], False, {}
    for group, colour in zip(groups, colours(len(groups)), strict=True):
        rows = [_init_deltas(run) for run in group.runs]
        rows = [row for row in rows if row.size]
        if not rows or not np.any(np.isfinite(positive(np.vstack(rows)))):
            continue
        mean, low, high, count = _log_mean_band(np.vstack(rows))
        values = [measured_factor(run) for run in group.runs]
        finite = [value for value in values if np.isfinite(value)]
        factor = float(np.mean(finite)) if finite else None
        factors[group.label] = factor
        label = f"{group.label}: M = {fmt(factor, '.4g')}"
        layers = np.arange(1, mean.size + 1)
        banded |= _banded(ax, layers, mean, low, high, count, colour, label)
        drawn.append(mean)
    record(figure, factors=factors)
    ax.set_xlabel(LAYER_LABEL)
    layer_ticks(ax.xaxis, max((values.size for values in drawn), default=0))
    ax.set_ylabel(f"{DELTA_LABEL} at init")
    ax.set_title(
        f"gradient by layer at initialization, {len(runs)} runs"
        + ("\nline: geometric mean over seeds (M: mean), band: min to max" if banded else "")
    )
    if not log_y(ax, drawn):
        no_data(ax, "no run has finite nonzero gradient norms at init")
    compare_legend(ax, len(drawn))
    return figure


def _init_deltas(run: Run) -> np.ndarray:
    steps, deltas = run.layer_matrix("delta_norm")
    return deltas[0] if steps.size else np.zeros(0)


def compare_loss(runs: Sequence[Run]) -> Figure:
    """Training loss of every group against step (test loss dashed when there are few)."""
    figure, ax = new_figure()
    groups = group_runs(runs)
    with_test = len(groups) <= 4
    drawn, banded = [], False
    for group, colour in zip(groups, colours(len(groups)), strict=True):
        steps = np.unique(np.concatenate([run.metrics["step"] for run in group.runs]))
        for kind, linestyle in (("train", "-"), ("test", "--")):
            if kind == "test" and not with_test:
                continue
            matrix = np.full((len(group.runs), steps.size), np.nan)  # (n_runs, n_steps)
            for row, run in enumerate(group.runs):
                columns = np.searchsorted(steps, run.metrics["step"])
                matrix[row, columns] = run.metrics[f"{kind}_loss"]
            mean, low, high, count = _mean_band(matrix)
            if not np.any(count):
                continue
            name = f"{group.label} ({kind})" if with_test else group.label
            style = {"linestyle": linestyle}
            banded |= _banded(ax, steps, mean, low, high, count, colour, name, **style)
            drawn.append(mean[count > 0])
    if drawn and all(np.all(values > 0) for values in drawn):
        log_y(ax, drawn)
    if not drawn:
        no_data(ax, "no run logged a finite loss")
    ax.set_xlabel(STEP_LABEL)
    integer_ticks(ax.xaxis)
    losses = sorted({loss_name(run) for run in runs})
    ax.set_ylabel(f"{'train' if not with_test else ''} loss ({', '.join(losses)}, per example)")
    ax.set_title(
        f"loss of {len(runs)} runs"
        + ("" if with_test else " (training loss)")
        + ("\nline: mean over seeds, band: min to max" if banded else "")
    )
    compare_legend(ax, len(drawn))
    return figure


def compare_legend(ax, n_lines: int) -> None:
    """Below the axes, so long labels (several differing keys) never cover the curves. Above
    MAX_LEGEND_LINES no legend (it would not fit the figure), and the title says so."""
    if n_lines > MAX_LEGEND_LINES:
        ax.set_title(f"{ax.get_title()}\n({n_lines} curves: too many for a legend)")
    elif n_lines > 1:
        handles, labels = ax.get_legend_handles_labels()
        ax.figure.legend(
            handles, labels, loc="outside lower center", fontsize=9, ncol=1 if n_lines <= 3 else 2
        )
