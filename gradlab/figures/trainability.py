"""Trainability: the final training accuracy over (sigma_w^2, depth) with the theory's curves
depth = k xi_c(sigma_w) (Schoenholz et al. 2017, Fig. 5/6, sigma_w^2 on x as there), and the
k that best separates trainable from untrainable runs (see gradlab.trainability)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from gradlab import analysis, trainability
from gradlab.figures.common import NO_VALUE_COLOUR, fmt, new_figure, record
from gradlab.results import Run

CURVE_POINTS = 61  # sigma_w^2 values on each theory curve
CURVE_STYLES = {1: ":", 2: "--", 6: "-."}  # the paper's multiples; the fitted k is solid red


def final_train_accuracy(run: Run) -> float:
    """summary.json's final train_accuracy, else the last finite one in metrics.csv; nan
    for a run that has none (diverged before any evaluation, or synthetic data)."""
    value = ((run.summary or {}).get("final") or {}).get("train_accuracy")
    if isinstance(value, int | float):
        return float(value)
    column = run.metrics["train_accuracy"]
    finite = column[np.isfinite(column)]
    return float(finite[-1]) if finite.size else math.nan


def applies(runs: Sequence[Run], keys: tuple[str, str] | None) -> bool:
    """Drawn when the runs vary exactly the weight scale and the depth (``phase_keys``) and
    record a training accuracy (runs on real classification data do)."""
    if keys is None or set(keys) != set(trainability.TRAINABILITY_KEYS):
        return False
    return any(math.isfinite(final_train_accuracy(run)) for run in runs)


def _points(runs: Sequence[Run]) -> tuple[dict, list[dict]]:
    """(the shared config, one dict per (weight scale, depth): accuracy mean over seeds)."""
    flats = [analysis.flatten(run.config) for run in runs]
    cells: dict[tuple, list[float]] = {}
    for run, flat in zip(runs, flats, strict=True):
        key = (float(flat["model.init.weight_scale"]), int(flat["model.depth"]))
        cells.setdefault(key, []).append(final_train_accuracy(run))
    points = []
    for (weight_scale, depth), values in sorted(cells.items()):
        finite = [value for value in values if math.isfinite(value)]
        accuracy = float(np.mean(finite)) if finite else math.nan
        points.append({"weight_scale": weight_scale, "depth": depth, "train_accuracy": accuracy})
    return flats[0], points


def trainability_report(runs: Sequence[Run]) -> dict:
    """The numbers the figure draws: points (with xi_c and the trainable verdict), the
    threshold, the curves and the best-separating k (None when theory gives no xi_c)."""
    shared, points = _points(runs)
    task = shared.get("data.task")
    classes = 2 if task == "binary" else int(shared.get("data.classes") or 2)
    threshold = trainability.trainable_threshold(classes)
    for point in points:
        xi = trainability.correlation_depth({**shared, **_point_keys(point)})
        point["xi_c"] = xi
        # a run without a training accuracy (diverged) did not train
        point["trainable"] = bool(point["train_accuracy"] >= threshold)
    fitted = [point for point in points if point["xi_c"] is not None]
    separation = trainability.best_multiple(
        [point["depth"] for point in fitted],
        [point["xi_c"] for point in fitted],
        [point["trainable"] for point in fitted],
    )
    scales = sorted({point["weight_scale"] for point in points})
    curve_scales = np.sqrt(np.linspace(scales[0] ** 2, scales[-1] ** 2, CURVE_POINTS))
    curve_scales = np.unique(np.concatenate((curve_scales, scales)))
    at_multiples = {}
    if separation is not None:
        arrays = ([p["depth"] for p in fitted], [p["xi_c"] for p in fitted])
        at_multiples = {
            k: trainability.misclassified(*arrays, [p["trainable"] for p in fitted], k)
            for k in trainability.PAPER_MULTIPLES
        }
    rule = f"final training accuracy >= {threshold:g} (halfway from chance 1/{classes} to 1)"
    return {
        "trainable_if": rule,
        "threshold": threshold,
        "activation": shared.get("model.activation"),
        "bias_scale": shared.get("model.init.bias_scale"),
        "dropout": shared.get("model.dropout", 0.0),
        "points": points,
        "separation": None if separation is None else vars(separation),
        "misclassified_at": at_multiples,
        "curve": {
            "weight_scale": curve_scales,
            "xi_c": trainability.xi_c_curve(shared, curve_scales),
        },
    }


def _point_keys(point: dict) -> dict:
    return {"model.init.weight_scale": point["weight_scale"], "model.depth": point["depth"]}


def report_line(report: dict) -> str:
    """What ``gradlab plot`` prints about the figure: the fitted k and the paper's."""
    separation = report["separation"]
    head = f"trainability: trainable = {report['trainable_if']}"
    if separation is None:
        return f"{head}; no xi_c from theory for these runs, no k fitted"
    high = "inf" if separation["k_high"] == math.inf else fmt(separation["k_high"])
    paper = ", ".join(f"k = {k}: {n}" for k, n in report["misclassified_at"].items())
    return (
        f"{head}; depth <= k xi_c separates best at k = {fmt(separation['k'])} (any k in "
        f"[{fmt(separation['k_low'])}, {high})): {separation['misclassified']} of "
        f"{separation['points']} points misclassified ({paper})"
    )


def _edges(values: np.ndarray) -> np.ndarray:
    """Cell edges half-way between sorted values, the outer ones half a step out."""
    if values.size == 1:
        return np.array([values[0] - 0.5, values[0] + 0.5])
    middles = (values[1:] + values[:-1]) / 2
    return np.concatenate(([2 * values[0] - middles[0]], middles, [2 * values[-1] - middles[-1]]))


def trainability_figure(runs: Sequence[Run]) -> Figure:
    """Heatmap of the final training accuracy over sigma_w^2 (x) and depth (y), cells as
    wide as the grid's steps, with depth = k xi_c for the paper's k = 1, 2, 6 and the
    fitted k; untrainable cells (below the threshold) are hatched."""
    report = trainability_report(runs)
    points = report["points"]
    x_values = np.array(sorted({p["weight_scale"] ** 2 for p in points}))
    y_values = np.array(sorted({p["depth"] for p in points}), dtype=np.float64)
    grid = np.full((y_values.size, x_values.size), np.nan)
    for point in points:
        column = int(np.argmin(np.abs(x_values - point["weight_scale"] ** 2)))
        grid[np.searchsorted(y_values, point["depth"]), column] = point["train_accuracy"]
    figure, ax = new_figure()
    colours = matplotlib.colormaps["viridis"].with_extremes(bad=NO_VALUE_COLOUR)
    x_edges, y_edges = _edges(x_values), _edges(y_values)
    mesh = ax.pcolormesh(x_edges, y_edges, np.ma.masked_invalid(grid), cmap=colours, vmin=0, vmax=1)
    bar = figure.colorbar(mesh, ax=ax, label="final training accuracy")
    bar.ax.axhline(report["threshold"], color="red", linewidth=1.5)
    for row, column in zip(*np.nonzero(grid < report["threshold"]), strict=True):
        corner = (x_edges[column], y_edges[row])
        width, height = x_edges[column + 1] - corner[0], y_edges[row + 1] - corner[1]
        ax.add_patch(Rectangle(corner, width, height, fill=False, hatch="//", linewidth=0))
    curve = report["curve"]
    curve_x = np.asarray(curve["weight_scale"]) ** 2
    multiples = {k: (CURVE_STYLES[k], "white") for k in trainability.PAPER_MULTIPLES}
    separation = report["separation"]
    if separation is not None:
        multiples[separation["k"]] = ("-", "red")
    for k, (style, colour) in multiples.items():
        label = f"{fmt(k)} $\\xi_c$" + (" (best fit)" if colour == "red" else "")
        ax.plot(curve_x, k * curve["xi_c"], style, color=colour, linewidth=2, label=label)
    ax.set_xlim(x_edges[0], x_edges[-1])
    ax.set_ylim(y_edges[0], y_edges[-1])
    ax.set_xlabel(r"$\sigma_w^2$ (weight scale squared)")
    ax.set_ylabel("depth $L$")
    ax.legend(loc="upper right", fontsize=8, facecolor="0.5", framealpha=0.6)
    dropout = report["dropout"]
    extra = f", dropout {fmt(dropout, 'g')}" if dropout else ""
    ax.set_title(
        f"final training accuracy, {report['activation']}, "
        f"$\\sigma_b$ = {fmt(report['bias_scale'], 'g')}{extra}\n"
        f"hatched: untrainable (accuracy < {fmt(report['threshold'], 'g')}); grey: no value"
    )
    record(figure, grid=grid, x_values=x_values, y_values=y_values, report=report)
    figure.gradlab_report = (report, [report_line(report)])
    return figure
