"""The phase diagram: measured M at init (or the final test loss) over two config keys, with
the theory's M = 1 boundary drawn between cells."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from gradlab import analysis
from gradlab.figures.common import (
    MAX_ANNOTATED_CELLS,
    NO_VALUE_COLOUR,
    fmt,
    key_label,
    loss_name,
    measured_factor,
    new_figure,
    plain_log_labels,
    positive,
    record,
    theory_factor,
)
from gradlab.results import Run

BOUNDARY_LABEL = "theory: M = 1"


def phase_keys(runs: Sequence[Run]) -> tuple[str, str] | None:
    """The two numeric config keys the runs vary (seed aside), or None if not exactly two."""
    keys = [key for key in analysis.differing_keys([run.config for run in runs]) if key != "seed"]
    if len(keys) != 2:
        return None
    for key in keys:
        for run in runs:
            value = analysis.flatten(run.config).get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
    return keys[0], keys[1]


def final_test_loss(run: Run) -> float:
    value = ((run.summary or {}).get("final") or {}).get("test_loss")
    if isinstance(value, int | float):
        return float(value)
    finite = run.metrics["test_loss"][np.isfinite(run.metrics["test_loss"])]
    return float(finite[-1]) if finite.size else math.nan


def phase_grid(runs: Sequence[Run], keys: tuple[str, str], quantity) -> tuple:
    """(x values, y values, grid[n_y, n_x]): ``quantity(run)`` averaged over seeds per cell;
    non-finite values are left out of the mean, a cell with none is nan."""
    flats = [analysis.flatten(run.config) for run in runs]
    x_values = sorted({flat[keys[0]] for flat in flats})
    y_values = sorted({flat[keys[1]] for flat in flats})
    cells = {}
    for run, flat in zip(runs, flats, strict=True):
        cells.setdefault((flat[keys[0]], flat[keys[1]]), []).append(quantity(run))
    grid = np.full((len(y_values), len(x_values)), np.nan)
    for (x, y), values in cells.items():
        finite = [value for value in values if math.isfinite(value)]
        if finite:
            grid[y_values.index(y), x_values.index(x)] = np.mean(finite)
    return x_values, y_values, grid


def phase_diagram(runs: Sequence[Run], keys: tuple[str, str], what: str) -> Figure:
    """Heatmap over two config keys of the measured M at init (summary.json's; log colour
    centred on M = 1) with the theory's M = 1 boundary along the cell edges, or of the final
    test loss. Cells are evenly spaced whatever the values, so a log-spaced grid reads well."""
    figure, ax = new_figure()
    if what == "factor":
        x_values, y_values, grid = phase_grid(runs, keys, measured_factor)
        logs = np.log10(positive(grid))
        bound = float(np.nanmax(np.abs(logs))) if np.any(np.isfinite(logs)) else 0.0
        bound = 10.0 ** max(bound, 0.01)
        norm, cmap = LogNorm(1 / bound, bound), "RdBu_r"
        label = "measured M at init (blue: vanishing, red: exploding)"
        heading = "measured gradient factor M at init"
    else:
        x_values, y_values, grid = phase_grid(runs, keys, final_test_loss)
        finite = grid[np.isfinite(grid)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        low, high = (low - 0.5, high + 0.5) if low == high else (low, high)
        logarithmic = finite.size > 0 and low > 0
        norm = LogNorm(low, high) if logarithmic else Normalize(low, high)
        cmap = "viridis"
        names = ", ".join(sorted({loss_name(run) for run in runs}))
        label = f"final test loss ({names})"
        heading = "final test loss"
    record(figure, grid=grid, x_values=x_values, y_values=y_values)
    colours = matplotlib.colormaps[cmap].with_extremes(bad=NO_VALUE_COLOUR)
    image = ax.imshow(
        np.ma.masked_invalid(positive(grid) if isinstance(norm, LogNorm) else grid),
        origin="lower",
        aspect="auto",
        cmap=colours,
        norm=norm,
        interpolation="nearest",
    )
    bar = figure.colorbar(image, ax=ax, label=label)
    if isinstance(norm, LogNorm):
        plain_log_labels(bar.ax.yaxis)
    if grid.size <= MAX_ANNOTATED_CELLS:
        _annotate(ax, image, grid)
    ax.set_xticks(range(len(x_values)), [fmt(value, "g") for value in x_values])
    ax.set_yticks(range(len(y_values)), [fmt(value, "g") for value in y_values])
    ax.set_xlabel(key_label(keys[0]))
    ax.set_ylabel(key_label(keys[1]))
    seeds = len({analysis.flatten(run.config).get("seed") for run in runs})
    averaged = f", mean of {seeds} seeds" if seeds > 1 else ""
    if what == "factor":
        _, _, theory = phase_grid(runs, keys, lambda run: theory_factor(run) or math.nan)
        if draw_unit_boundary(ax, theory):
            figure.legend(loc="outside lower center", fontsize=9)
    ax.set_title(f"{heading} ({len(runs)} runs{averaged}; grey: no value)")
    return figure


def _annotate(ax, image, grid: np.ndarray) -> None:
    """Each cell's value at its centre, white on dark colours."""
    for (row, column), value in np.ndenumerate(grid):
        shown = math.isfinite(value) and not (isinstance(image.norm, LogNorm) and value <= 0)
        red, green, blue, _ = image.cmap(image.norm(value)) if shown else (1, 1, 1, 1)
        dark = shown and 0.3 * red + 0.6 * green + 0.1 * blue < 0.5
        colour = "white" if dark else "black"
        ax.text(column, row, fmt(value), ha="center", va="center", fontsize=9, color=colour)


def unit_boundary(theory: np.ndarray) -> list:
    """Segments along the cell edges between cells the theory puts below and at or above
    M = 1 (cell (row, column) is centred at (column, row)); none when M does not cross 1."""
    log_theory = np.log(positive(theory))  # (n_y, n_x); nan where there is no prediction
    above = log_theory >= 0
    finite = np.isfinite(log_theory)
    segments = []
    rows, columns = theory.shape
    for row in range(rows):
        for column in range(columns):
            if not finite[row, column]:
                continue
            right, up = (row, column + 1), (row + 1, column)
            if column + 1 < columns and finite[right] and above[right] != above[row, column]:
                edge = column + 0.5
                segments.append([(edge, row - 0.5), (edge, row + 0.5)])
            if row + 1 < rows and finite[up] and above[up] != above[row, column]:
                edge = row + 0.5
                segments.append([(column - 0.5, edge), (column + 0.5, edge)])
    return segments


def draw_unit_boundary(ax, theory: np.ndarray) -> bool:
    """The theory's M = 1 line between cells, labelled for the legend (False if none)."""
    segments = unit_boundary(theory)
    if not segments:
        return False
    lines = LineCollection(segments, colors="black", linewidths=2.5, label=BOUNDARY_LABEL)
    ax.add_collection(lines, autolim=False)
    return True
