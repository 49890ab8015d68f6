"""Figures of run directories: gradient norm by layer, heatmaps, loss, clipping, comparisons.

Imported only by ``gradlab plot`` (matplotlib is slow to import). Figures are built on
``matplotlib.figure.Figure`` objects, never through pyplot, so no global figure state and no
GUI backend is involved; PNG goes through Agg. Every file is written atomically.

Real runs are hostile to plots: gradients underflow to exactly 0, diverged runs log inf and
nan, a run may have only step 0 or one hidden layer, and a killed run has half its files.
Non-positive and non-finite values are left out of log axes, and a run that cannot be read
or drawn is skipped with a warning instead of stopping the other figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from gradlab import analysis
from gradlab.errors import GradlabError
from gradlab.results import Run, atomic_writer, find_runs, read_run

FORMATS = ("png", "pdf", "svg")
FIGSIZE = (6.4, 4.8)  # inches; at 100 dpi a 640 x 480 image
DPI = 100
STYLE = {"font.size": 10, "legend.fontsize": 9, "axes.titlesize": 10, "figure.titlesize": 11}
# Embedded dates would make the same figure differ byte for byte between two calls.
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}
MAX_STEP_CURVES = 4  # gradient-by-layer curves: init and up to three later logged steps
MAX_ANNOTATED_CELLS = 144  # write the value into each heatmap cell up to a 12 x 12 grid
CLIPPED_BELOW = 1 - 1e-9  # a step counts as clipped when post / pre norm is below this
NO_VALUE_COLOUR = "0.8"  # heatmap cells that are zero, inf or nan

LAYER_LABEL = "hidden layer l (1 = next to the input)"
STEP_LABEL = "training step (optimizer updates)"
GRAD_LABEL = "|dL/dW_l| (Frobenius norm)"


class Plotted(NamedTuple):
    """What ``plot_paths`` did: the files written and why anything was skipped."""

    written: list[Path]
    warnings: list[str]


# ---- entry point -----------------------------------------------------------------------


def plot_paths(paths: Iterable, fmt: str = "png", out=None) -> Plotted:
    """Draw every figure for the runs at or below ``paths``.

    Each run's figures go to ``<run>/plots/`` (or under ``out``, mirroring the runs' layout
    below their common folder). With two or more readable runs, comparison figures (and a
    phase diagram when exactly two numeric config keys vary) go to ``<folder>/plots/`` (or
    ``out``). Raises GradlabError when there are no runs or ``fmt`` is unknown.
    """
    if fmt not in FORMATS:
        raise GradlabError(f"unknown figure format {fmt!r}; choose one of {', '.join(FORMATS)}")
    paths = [Path(path) for path in paths]
    run_dirs = find_runs(paths)
    if not run_dirs:
        shown = ", ".join(str(path) for path in paths)
        raise GradlabError(f"no gradlab runs in {shown} (looked for meta.json + config.yaml)")
    out = Path(out) if out is not None else None
    root = Path(os.path.commonpath(run_dirs))
    written, warnings, runs = [], [], []
    for run_dir in run_dirs:
        try:
            run = read_run(run_dir)
        except Exception as error:  # any unreadable file: skip this run, keep the others
            warnings.append(f"{run_dir}: skipped, unreadable ({type(error).__name__}: {error})")
            continue
        warnings.extend(f"{run_dir}: {problem}" for problem in run.problems)
        if run.metrics["step"].size == 0 and run.layers["step"].size == 0:
            warnings.append(f"{run_dir}: skipped, nothing logged to plot")
            continue
        runs.append(run)
        target = run_dir / "plots" if out is None else out / run_dir.relative_to(root)
        result = plot_run(run, target, fmt)
        written += result.written
        warnings += result.warnings
    if len(runs) >= 2:
        folder = Path(os.path.commonpath([path.resolve() for path in paths]))
        if folder in {run.path for run in runs}:  # one run given, others below it
            folder = folder.parent
        result = plot_group(runs, folder / "plots" if out is None else out, fmt)
        written += result.written
        warnings += result.warnings
    return Plotted(written, warnings)


def plot_run(run: Run, directory, fmt: str = "png") -> Plotted:
    """The five figures of one run, into ``directory``."""
    warnings = []
    written = _draw_all(_run_figures(run), Path(directory), fmt, warnings, str(run.path))
    return Plotted(written, warnings)


def plot_group(runs: Sequence[Run], directory, fmt: str = "png") -> Plotted:
    """Comparison figures of several runs (and the phase diagram when it applies)."""
    warnings = []
    written = _draw_all(_group_figures(list(runs)), Path(directory), fmt, warnings, str(directory))
    return Plotted(written, warnings)


def _run_figures(run: Run) -> dict:
    return {
        "gradient_by_layer": lambda: gradient_by_layer(run),
        "gradient_heatmap": lambda: layer_heatmap(run, "weight_grad_norm"),
        "loss": lambda: loss_curves(run),
        "clipping": lambda: clipping(run),
        "saturation": lambda: layer_heatmap(run, "saturation"),
    }


def _group_figures(runs: list[Run]) -> dict:
    figures = {
        "compare_gradient_by_layer": lambda: compare_gradient_by_layer(runs),
        "compare_loss": lambda: compare_loss(runs),
    }
    keys = phase_keys(runs)
    if keys is not None:
        figures["phase_factor"] = lambda: phase_diagram(runs, keys, "factor")
        figures["phase_test_loss"] = lambda: phase_diagram(runs, keys, "test_loss")
    return figures


def _draw_all(figures: dict, directory: Path, fmt: str, warnings: list, where: str) -> list:
    """Build and save each figure; one that cannot be drawn becomes a warning."""
    written = []
    for name, build in figures.items():
        try:
            with matplotlib.rc_context(STYLE):
                figure = build()
                if figure is None:
                    continue
                path = directory / f"{name}.{fmt}"
                save_figure(figure, path, fmt)
        except (ValueError, KeyError, TypeError, IndexError, OSError) as error:
            warnings.append(f"{where}: {name} not drawn ({type(error).__name__}: {error})")
            continue
        written.append(path)
    return written


def save_figure(figure: Figure, path: Path, fmt: str) -> None:
    """Save to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A diverged run logs losses near 1e300: the log-axis tick locator then computes
    # decades beyond the float range, which overflow to inf and fall outside the view.
    with atomic_writer(path, binary=True) as handle, np.errstate(over="ignore"):
        figure.savefig(handle, format=fmt, dpi=DPI, metadata=METADATA[fmt])


# ---- helpers ---------------------------------------------------------------------------


def _new_figure() -> tuple[Figure, object]:
    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    return figure, figure.add_subplot()


def _positive(values) -> np.ndarray:
    """Values for a log axis: zero, negative and non-finite entries become nan (not drawn)."""
    values = np.array(values, dtype=np.float64)
    values[~(np.isfinite(values) & (values > 0))] = np.nan
    return values


def _log_y(ax, arrays) -> bool:
    """Log y axis limited to the positive finite values of ``arrays`` (False if none).

    The limits come from the data alone, so a guide line (fit, theory) never stretches the
    axis. Near the ends of the float range (a diverged loss of 1e285) matplotlib's log tick
    locator overflows, so such axes get one labelled tick every few decades instead.
    """
    values = np.concatenate([_positive(a).ravel() for a in arrays] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return False
    low, high = np.log10(values.min()), np.log10(values.max())
    margin = max(0.05 * (high - low), 0.1)
    low, high = max(low - margin, -307.0), min(high + margin, 307.0)
    with np.errstate(over="ignore"):  # the scale change autoscales to the raw data first
        ax.set_yscale("log")
    ax.set_ylim(10.0**low, 10.0**high)
    if low < -250 or high > 250 or high - low > 100:
        stride = next(n for n in (1, 2, 5, 10, 20, 25, 50, 100) if (high - low) / n <= 8)
        decades = np.arange(math.ceil(low), math.floor(high) + 1)
        decades = decades[decades % stride == 0]
        ax.yaxis.set_major_locator(FixedLocator(10.0**decades))
        ax.yaxis.set_minor_locator(NullLocator())
    return True


def _has_positive(*arrays) -> bool:
    return any(np.any(np.isfinite(_positive(a))) for a in arrays)


def _setting(run: Run, dotted: str, default=None):
    """A config value by its dotted key ('train.clip.mode'), or ``default``."""
    return analysis.flatten(run.config).get(dotted, default)


def _fmt(value, spec: str = ".3g") -> str:
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return format(value, spec)


def _title(run: Run) -> str:
    status = "" if run.status == "completed" else f" [{run.status}]"
    return f"{run.name}{status}"


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True)


def _legend(ax) -> None:
    """A legend only when there is more than one labelled artist (an empty one warns)."""
    handles, _ = ax.get_legend_handles_labels()
    if len(handles) > 1:
        ax.legend(loc="best", fontsize=9)


def _markers(n_points: int) -> dict:
    """Points are visible even when a curve has a single one."""
    return {"marker": "o", "markersize": 3} if n_points <= 30 else {}


def _theory_factor(run: Run) -> float | None:
    theory = (run.summary or {}).get("theory") or {}
    factor = theory.get("factor")
    if not theory.get("applicable") or factor is None or not math.isfinite(factor):
        return None
    return float(factor)


def _loss_name(run: Run) -> str:
    loss = _setting(run, "train.loss", "auto")
    if loss == "auto":
        task = _setting(run, "data.task", "regression")
        loss = {"regression": "mse", "binary": "bce", "multiclass": "cross_entropy"}.get(task, "")
    return loss


def _pick_steps(n_steps: int, count: int) -> list[int]:
    """Row indices: the first, the last and evenly spaced ones between, ``count`` at most."""
    return sorted({round(i) for i in np.linspace(0, n_steps - 1, min(count, n_steps))})


# ---- one run ---------------------------------------------------------------------------


def gradient_by_layer(run: Run) -> Figure:
    """|dL/dW_l| against l on a log axis at init and a few later steps, with the fit of M at
    init (ln norm = intercept + slope l over the fit window, M = exp(-slope)) and the theory's
    slope ln(M_theory) drawn through the middle of the fitted line."""
    steps, norms = run.layer_matrix("weight_grad_norm")  # (n_steps,), (n_steps, depth)
    figure, ax = _new_figure()
    ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel(GRAD_LABEL)
    if steps.size == 0 or not _has_positive(norms):
        ax.set_title(f"{_title(run)}: gradient norm by layer")
        _no_data(ax, "no finite nonzero gradient norms logged")
        return figure
    depth = norms.shape[1]
    layers = np.arange(1, depth + 1)
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.85, MAX_STEP_CURVES))
    rows = _pick_steps(steps.size, MAX_STEP_CURVES)
    for colour, row in zip(colours, rows, strict=False):
        values = _positive(norms[row])
        if np.any(np.isfinite(values)):
            ax.plot(layers, values, color=colour, label=f"step {steps[row]:.0f}", **_markers(depth))
    fit_skip = _setting(run, "analysis.fit_skip", 0.15)
    tol = _setting(run, "analysis.tol", 0.05)
    fit = analysis.fit_factor(norms[0], fit_skip)
    theory = _theory_factor(run)
    if math.isfinite(fit.slope):
        first, last = fit.fit_layers
        window = np.linspace(first, last, 50)
        fitted = np.exp(np.clip(fit.intercept + fit.slope * window, -745, 709))
        ax.plot(window, fitted, "k--", label=f"fit at init, M = {fit.factor:.3g}")
        if theory is not None and theory > 0:
            middle = (first + last) / 2
            anchor = fit.intercept + fit.slope * middle
            line = anchor - math.log(theory) * (window - middle)
            ax.plot(
                window,
                np.exp(np.clip(line, -745, 709)),
                ":",
                color="tab:red",
                linewidth=2,
                label=f"theory, M = {theory:.3g} (anchored at the fit)",
            )
    _log_y(ax, [norms[rows]])
    if depth <= 12:
        ax.set_xticks(layers)
    _legend(ax)
    regime = analysis.verdict(fit.factor, tol)
    ax.set_title(
        f"{_title(run)}: |dL/dW_l| ~ M^(L-l)\n"
        f"M at init = {_fmt(fit.factor)} (theory {_fmt(theory)}): {regime}"
        + ("" if math.isfinite(fit.factor) else f" ({fit.reason})")
    )
    return figure


HEATMAPS = {
    # column: (what the colour shows, take log10, fixed colour range)
    "weight_grad_norm": ("log10 |dL/dW_l| (Frobenius norm)", True, None),
    "saturation": ("saturated fraction of units (|a| near its bound)", False, (0.0, 1.0)),
}


def layer_heatmap(run: Run, column: str) -> Figure:
    """Layer x step heatmap of a layers.csv column; zero or non-finite cells in grey."""
    label, logarithmic, limits = HEATMAPS[column]
    steps, values = run.layer_matrix(column)  # (n_steps,), (n_steps, depth)
    figure, ax = _new_figure()
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(LAYER_LABEL)
    name = "gradient norm" if column == "weight_grad_norm" else "activation saturation"
    ax.set_title(f"{_title(run)}: {name} by layer and step (grey: zero, inf or nan)")
    if logarithmic:
        values = np.log10(_positive(values))
    else:
        values = np.where(np.isfinite(values), values, np.nan)
    if steps.size == 0 or not np.any(np.isfinite(values)):
        _no_data(ax, f"no finite {column} values logged")
        return figure
    depth = values.shape[1]
    step_edges = _edges(steps)
    layer_edges = np.arange(depth + 1) + 0.5
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=NO_VALUE_COLOUR)
    low, high = limits or (np.nanmin(values), np.nanmax(values))
    if low == high:
        low, high = low - 0.5, high + 0.5
    mesh = ax.pcolormesh(
        step_edges,
        layer_edges,
        np.ma.masked_invalid(values.T),
        cmap=cmap,
        vmin=low,
        vmax=high,
        shading="flat",
    )
    figure.colorbar(mesh, ax=ax, label=label)
    if depth <= 12:
        ax.set_yticks(np.arange(1, depth + 1))
    if steps.size <= 12:
        ax.set_xticks(steps, [f"{step:.0f}" for step in steps])
    return figure


def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; half a unit either side of a lone one)."""
    centres = np.asarray(centres, dtype=np.float64)
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middles = (centres[1:] + centres[:-1]) / 2
    first, last = 2 * centres[0] - middles[0], 2 * centres[-1] - middles[-1]
    return np.concatenate([[first], middles, [last]])


def loss_curves(run: Run) -> Figure:
    """Train and test loss against step; log y when every finite value is positive."""
    figure, ax = _new_figure()
    steps = run.metrics["step"]
    curves = {"train": run.metrics["train_loss"], "test": run.metrics["test_loss"]}
    drawn = _plot_series(ax, steps, curves)
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(f"loss ({_loss_name(run) or 'unknown'}, per example)")
    final = (run.summary or {}).get("final") or {}
    ax.set_title(
        f"{_title(run)}: loss\nfinal train {_fmt(final.get('train_loss'))}, "
        f"test {_fmt(final.get('test_loss'))}"
    )
    divergence = (run.summary or {}).get("divergence") or {}
    if drawn and isinstance(divergence.get("step"), int | float):
        ax.axvline(divergence["step"], color="tab:red", linestyle=":", label="diverged here")
    if not drawn:
        _no_data(ax, "no finite loss logged")
    _legend(ax)
    return figure


def _plot_series(ax, steps, curves: dict, styles: dict | None = None) -> int:
    """Plot each labelled curve's finite points; log y when all drawn values are positive."""
    drawn = []
    for label, values in curves.items():
        values = np.asarray(values, dtype=np.float64)
        keep = np.isfinite(values)
        if keep.any():
            style = (styles or {}).get(label, {})
            ax.plot(steps[keep], values[keep], label=label, **_markers(keep.sum()), **style)
            drawn.append(values[keep])
    if drawn and all(np.all(values > 0) for values in drawn):
        _log_y(ax, drawn)
    return len(drawn)


def clipping(run: Run) -> Figure:
    """Global gradient norm before and after clipping, the threshold, the fraction clipped;
    with clipping on, a lower panel with the cosine between the clipped and the raw gradient
    (1: direction kept, as clipping by norm does; below 1: clipping by value turned it)."""
    metrics = run.metrics
    mode = _setting(run, "train.clip.mode", "none")
    threshold = _setting(run, "train.clip.threshold")
    if mode == "none":
        figure, ax = _new_figure()
    else:
        figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        ax, cosine_ax = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1.3))
        cosine = metrics["clip_cosine"]
        finite = np.isfinite(cosine)
        cosine_ax.plot(metrics["step"][finite], cosine[finite], color="tab:purple")
        cosine_ax.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        cosine_ax.set_ylim(min(0.0, float(np.min(cosine[finite], initial=0.0))) - 0.05, 1.05)
        cosine_ax.set_ylabel("cosine\n(clipped, raw)")
        cosine_ax.set_xlabel(STEP_LABEL)
    curves = {"before clipping": metrics["grad_norm"]}
    if mode != "none":
        curves["after clipping"] = metrics["grad_norm_clipped"]
    styles = {"after clipping": {"linestyle": "--"}}
    drawn = _plot_series(ax, metrics["step"], curves, styles)
    if mode == "norm" and isinstance(threshold, int | float) and drawn:
        ax.axhline(threshold, color="tab:red", linestyle=":", label=f"threshold {threshold:g}")
    if mode == "none":
        ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel("global gradient norm (L2)")
    if mode == "none":
        detail = "clipping off"
    else:
        factors = metrics["clip_factor"][np.isfinite(metrics["clip_factor"])]
        share = np.mean(factors < CLIPPED_BELOW) if factors.size else math.nan
        detail = (
            f"clip mode {mode}, threshold {_fmt(threshold, 'g')}: "
            f"{_fmt(100 * share, '.0f')}% of logged steps clipped"
        )
    ax.set_title(f"{_title(run)}: gradient clipping\n{detail}")
    if not drawn:
        _no_data(ax, "no finite gradient norm logged")
    _legend(ax)
    return figure


# ---- several runs ----------------------------------------------------------------------


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Legend labels from the config keys in which the runs differ (e.g. 'norm=batch')."""
    keys = analysis.differing_keys([run.config for run in runs])
    if not keys:
        return [str(run.path.name) for run in runs]
    labels = []
    for run in runs:
        flat = analysis.flatten(run.config)
        labels.append(", ".join(f"{analysis.short_key(key)}={flat.get(key, '-')}" for key in keys))
    return labels


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cycle_colours(n: int):
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "viridis"]
    return [cmap(i) for i in range(n)] if n <= 10 else cmap(np.linspace(0, 0.9, n))


def _init_norms(run: Run) -> np.ndarray:
    steps, norms = run.layer_matrix("weight_grad_norm")
    return norms[0] if steps.size else np.zeros(0)


def compare_gradient_by_layer(runs: Sequence[Run]) -> Figure:
    """|dL/dW_l| at init against l for every run, on one log axis."""
    figure, ax = _new_figure()
    drawn = []
    for run, label, colour in zip(runs, run_labels(runs), _cycle_colours(len(runs)), strict=True):
        norms = _positive(_init_norms(run))
        if np.any(np.isfinite(norms)):
            layers = np.arange(1, norms.size + 1)
            ax.plot(layers, norms, color=colour, label=label, **_markers(norms.size))
            drawn.append(norms)
    ax.set_xlabel(LAYER_LABEL)
    ax.set_ylabel(f"{GRAD_LABEL} at init")
    ax.set_title(f"gradient norm by layer at initialization, {len(runs)} runs")
    if not _log_y(ax, drawn):
        _no_data(ax, "no run has finite nonzero gradient norms at init")
    _compare_legend(ax, len(drawn))
    return figure


def compare_loss(runs: Sequence[Run]) -> Figure:
    """Training loss of every run against step (test loss dashed when there are few runs)."""
    figure, ax = _new_figure()
    drawn = []
    with_test = len(runs) <= 4
    for run, label, colour in zip(runs, run_labels(runs), _cycle_colours(len(runs)), strict=True):
        steps = run.metrics["step"]
        for kind, linestyle in (("train", "-"), ("test", "--")):
            if kind == "test" and not with_test:
                continue
            values = run.metrics[f"{kind}_loss"]
            keep = np.isfinite(values)
            if keep.any():
                name = f"{label} ({kind})" if with_test else label
                style = {"color": colour, "linestyle": linestyle, **_markers(keep.sum())}
                ax.plot(steps[keep], values[keep], label=name, **style)
                drawn.append(values[keep])
    if drawn and all(np.all(values > 0) for values in drawn):
        _log_y(ax, drawn)
    if not drawn:
        _no_data(ax, "no run logged a finite loss")
    ax.set_xlabel(STEP_LABEL)
    losses = sorted({_loss_name(run) for run in runs})
    ax.set_ylabel(f"{'train' if not with_test else ''} loss ({', '.join(losses)}, per example)")
    ax.set_title(f"loss of {len(runs)} runs" + ("" if with_test else " (training loss)"))
    _compare_legend(ax, len(drawn))
    return figure


def _compare_legend(ax, n_lines: int) -> None:
    """Below the axes, so long labels (several differing keys) never cover the curves."""
    if n_lines > 1:
        handles, labels = ax.get_legend_handles_labels()
        labels = [_shorten(label, 60 if n_lines <= 8 else 30) for label in labels]
        ax.figure.legend(
            handles, labels, loc="outside lower center", fontsize=9, ncol=1 if n_lines <= 8 else 2
        )


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


def _measured_factor(run: Run) -> float:
    init = ((run.summary or {}).get("gradient_factor") or {}).get("init") or {}
    value = init.get("delta")
    return float(value) if isinstance(value, int | float) else math.nan


def _final_test_loss(run: Run) -> float:
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
    """Heatmap over two config keys of the measured M at init (log colour, centred on M = 1)
    with the theory's M = 1 contour, or of the final test loss. Cells are evenly spaced
    whatever the values, so a log-spaced grid reads well; the contour interpolates in ln M."""
    figure, ax = _new_figure()
    if what == "factor":
        x_values, y_values, grid = phase_grid(runs, keys, _measured_factor)
        shown = np.log10(_positive(grid))
        bound = np.nanmax(np.abs(shown)) if np.any(np.isfinite(shown)) else 1.0
        bound = bound if bound > 0 else 1.0
        cmap, low, high = "RdBu_r", -bound, bound
        label = "log10 M, measured at init (blue vanishing, red exploding)"
        title = "measured gradient factor M at init"
        values = grid
    else:
        x_values, y_values, grid = phase_grid(runs, keys, _final_test_loss)
        positive = np.all(grid[np.isfinite(grid)] > 0)
        shown = np.log10(_positive(grid)) if positive else np.where(np.isfinite(grid), grid, np.nan)
        finite = shown[np.isfinite(shown)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        if low == high:
            low, high = low - 0.5, high + 0.5
        cmap = "viridis"
        label = f"{'log10 ' if positive else ''}final test loss ({_loss_names(runs)})"
        title = "final test loss"
        values = grid
    colours = matplotlib.colormaps[cmap].with_extremes(bad=NO_VALUE_COLOUR)
    image = ax.imshow(
        np.ma.masked_invalid(shown),
        origin="lower",
        aspect="auto",
        cmap=colours,
        vmin=low,
        vmax=high,
        interpolation="nearest",
    )
    figure.colorbar(image, ax=ax, label=label)
    if values.size <= MAX_ANNOTATED_CELLS:
        for (row, column), value in np.ndenumerate(values):
            red, green, blue, _ = image.cmap(image.norm(shown[row, column]))
            dark = np.isfinite(shown[row, column]) and 0.3 * red + 0.6 * green + 0.1 * blue < 0.5
            ax.text(
                column,
                row,
                _fmt(value),
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark else "black",
            )
    ax.set_xticks(range(len(x_values)), [f"{value:g}" for value in x_values])
    ax.set_yticks(range(len(y_values)), [f"{value:g}" for value in y_values])
    ax.set_xlabel(f"{keys[0]} (config value)")
    ax.set_ylabel(f"{keys[1]} (config value)")
    seeds = len({analysis.flatten(run.config).get("seed") for run in runs})
    averaged = f", mean of {seeds} seeds" if seeds > 1 else ""
    if what == "factor":
        _, _, theory = phase_grid(runs, keys, lambda run: _theory_factor(run) or math.nan)
        if _draw_unit_contour(ax, theory):
            ax.legend(loc="upper right", fontsize=9)
    ax.set_title(f"{title} ({len(runs)} runs{averaged}; grey: no value)")
    return figure


def _draw_unit_contour(ax, theory: np.ndarray) -> bool:
    """The theory's M = 1 line, where the grid's predicted M crosses 1 (nothing otherwise)."""
    log_theory = np.log(_positive(theory))
    finite = log_theory[np.isfinite(log_theory)]
    if min(theory.shape) < 2 or finite.size == 0 or not (finite.min() < 0 < finite.max()):
        return False
    contour = ax.contour(
        np.ma.masked_invalid(log_theory), levels=[0.0], colors="black", linewidths=2
    )
    if not contour.allsegs[0]:
        return False
    ax.plot([], [], color="black", linewidth=2, label="theory: M = 1")
    return True


def _loss_names(runs: Sequence[Run]) -> str:
    return ", ".join(sorted({_loss_name(run) for run in runs}))
