"""Figures of one run: gradient by layer, layer x step heatmaps, loss, clipping."""

from __future__ import annotations

import itertools
import math

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from gradlab import analysis
from gradlab.figures.common import (
    CLIPPED_BELOW,
    DELTA,
    DELTA_LABEL,
    DPI,
    FACTOR_LAW,
    FIGSIZE,
    LAYER_LABEL,
    MAX_STEP_CURVES,
    NO_VALUE_COLOUR,
    STEP_LABEL,
    WEIGHT_GRAD,
    WEIGHT_GRAD_LABEL,
    WIDE_FIGSIZE,
    factor_of,
    fmt,
    has_positive,
    integer_ticks,
    layer_ticks,
    legend,
    log_y,
    loss_name,
    markers,
    new_figure,
    no_data,
    pick_steps,
    plain_log_labels,
    positive,
    record,
    setting,
    theory_factor,
    title,
)
from gradlab.results import Run

STREAM_LABEL = "|∂ℒ/∂xˡ|, the residual stream (L2 norm)"
HEATMAP_DECADES = 12  # at most this many decades of colour, unless the init profile needs more
BELOW_RANGE_COLOUR = "black"  # heatmap cells below (above) the colour range
ABOVE_RANGE_COLOUR = "white"


def residual_profile(run: Run) -> dict | None:
    """summary.json's gradient profile at init of a residual run (None for plain runs)."""
    return ((run.summary or {}).get("gradient_profile") or {}).get("init")


def factor_title(run: Run) -> str:
    """'M at init = 0.9767 (mean-field theory 1): stable', with the caveat for narrow layers
    on a second line; the numbers are summary.json's (see ``factor_of``). Residual runs:
    summary.json's verdict sentence on the gradient profile instead."""
    profile = residual_profile(run)
    if profile is not None:
        return f"at init: {profile['sentence']}"
    factor, theory = factor_of(run, "init"), theory_factor(run)
    regime = factor.get("regime", "unknown")
    if factor.get("delta") is None:
        text = f"M at init: {factor.get('sentence', 'unknown: nothing logged')}"
    else:
        text = f"M at init = {fmt(factor['delta'], '.4g')} (mean-field theory {fmt(theory, '.4g')})"
        text += f": {regime}"
    if factor.get("caveat"):
        text += f"\n({factor['caveat']})"
    return text


def gradient_by_layer(run: Run) -> Figure:
    """|delta_l| against l on log axes. Left (or alone): the profile at initialization with
    the fit of M (ln |delta_l| = intercept + slope l over the fit window, M = exp(-slope); the
    number is summary.json's), the theory's slope ln(M_theory) drawn through the middle of the
    fit, and |dL/dW_l| for reference. Right, when training logged later steps: the profile at
    a few steps, on its own axis, so a collapse to 1e-300 does not flatten the init profile."""
    steps, deltas = run.layer_matrix("delta_norm")  # (n_steps,), (n_steps, depth)
    _, weight_grads = run.layer_matrix("weight_grad_norm")
    factor, theory = factor_of(run, "init"), theory_factor(run)
    figure = Figure(figsize=WIDE_FIGSIZE if steps.size > 1 else FIGSIZE, dpi=DPI)
    record(
        figure,
        M=factor.get("delta"),
        regime=factor.get("regime", "unknown"),
        theory=theory,
        caveat=factor.get("caveat"),
    )
    figure.set_layout_engine("constrained")
    figure.suptitle(f"{title(run)}: gradient by layer, {FACTOR_LAW}\n{factor_title(run)}")
    init_ax, *later = figure.subplots(1, 2 if steps.size > 1 else 1, squeeze=False)[0]
    stream = residual_profile(run) is not None  # residual: delta_norm is |dL/dx^l|
    for ax in (init_ax, *later):
        ax.set_xlabel(LAYER_LABEL)
        ax.set_ylabel(STREAM_LABEL if stream else DELTA_LABEL if ax is init_ax else DELTA)
    init_ax.set_title("at initialization (step 0)")
    if steps.size == 0 or not has_positive(deltas[:1], weight_grads[:1]):
        no_data(init_ax, "no finite nonzero gradient norms logged")
        return figure
    depth = deltas.shape[1]
    layers = np.arange(1, depth + 1)
    init_ax.plot(layers, positive(deltas[0]), color="tab:blue", label=DELTA, **markers(depth))
    init_ax.plot(
        layers,
        positive(weight_grads[0]),
        color="0.55",
        linewidth=1,
        label=f"{WEIGHT_GRAD} (not fitted)",
        **({"marker": "o", "markersize": 3} if depth == 1 else {}),  # a lone point
    )
    widths = analysis.varying_widths(setting(run, "model.width"))
    _draw_fit(init_ax, run, deltas[0], factor.get("delta"), theory, widths)
    drawn = [deltas[:1], weight_grads[:1]]
    profile = residual_profile(run)
    if profile is not None:
        record(figure, ratio=profile["ratio"], theory_ratio=profile["theory_ratio"])
        drawn.append(_draw_residual_theory(init_ax, deltas[0], profile))
    log_y(init_ax, drawn)
    layer_ticks(init_ax.xaxis, depth)
    legend(init_ax, fontsize=8)
    if later:
        _draw_training(later[0], steps, deltas)
    if widths is not None:
        record(figure, width_changes=mark_width_changes((init_ax, *later), widths))
    return figure


def mark_width_changes(axes, widths, vertical: bool = True) -> list[float]:
    """A dashed line between layers of different widths (vertical: layers on the x axis,
    each stretch's width named on a top axis; else horizontal, layers on y); the positions."""
    changes = [layer + 0.5 for layer in range(1, len(widths)) if widths[layer] != widths[layer - 1]]
    edges = [0.5, *changes, len(widths) + 0.5]
    for ax in axes:
        for position in changes:
            line = ax.axvline if vertical else ax.axhline
            line(position, color="0.6", linestyle="--", linewidth=0.8)
        if vertical:
            top = ax.secondary_xaxis("top")
            centres = [(start + end) / 2 for start, end in itertools.pairwise(edges)]
            top.set_xticks(centres, [f"N={widths[math.ceil(start) - 1]}" for start in edges[:-1]])
            top.tick_params(length=0, labelsize=7, labelcolor="0.4")
    return changes


def _draw_fit(ax, run: Run, delta_norms, factor, theory, widths=None) -> None:
    """The fitted line of M (the fit summary.json's M comes from; one piece per width when
    the widths differ) and the theory's slope."""
    fit = analysis.fit_factor(delta_norms, setting(run, "analysis.fit_skip", 0.15), widths)
    if not math.isfinite(fit.slope) or factor is None:
        return
    first, last = fit.fit_layers
    window = np.linspace(first, last, 50)
    kind = "constant-M fit" if residual_profile(run) is not None else "fit"
    pieces = [(fit.intercept, window)]
    if fit.intercepts is not None:  # each width's layers, with its own intercept
        pieces = [(b, np.linspace(min(ls) - 0.3, max(ls) + 0.3, 20)) for _, b, ls in fit.intercepts]
    for piece, (intercept, span) in enumerate(pieces):
        fitted = np.exp(np.clip(intercept + fit.slope * span, -745, 709))
        label = f"{kind}, M = {fmt(factor, '.4g')}" if piece == 0 else None
        ax.plot(span, fitted, "k--", label=label)
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
            label=f"theory, M = {fmt(theory, '.4g')} (slope only)",
        )


def _draw_residual_theory(ax, delta_norms, profile) -> np.ndarray:
    """The theory's profile of a residual run (not a straight line: its per-block factor
    changes with depth), anchored at the measured last block; returns the values drawn."""
    factors = profile.get("theory_factors")
    if not factors or not np.isfinite(delta_norms[-1]) or delta_norms[-1] <= 0:
        return np.full(0, np.nan)
    logs = np.log(np.asarray(factors, dtype=np.float64))  # (depth,): block l at l - 1
    above = np.concatenate([np.cumsum(logs[::-1])[::-1][1:], [0.0]])  # sum over blocks > l
    values = delta_norms[-1] * np.exp(np.clip(above, -745, 709))
    layers = np.arange(1, logs.size + 1)
    label = f"theory profile, x{fmt(profile['theory_ratio'], '.3g')} across the blocks"
    ax.plot(layers, values, ":", color="tab:red", linewidth=2, label=label)
    return values


def _draw_training(ax, steps, deltas) -> None:
    rows = pick_steps(steps.size, MAX_STEP_CURVES)
    ax.set_title("during training")
    colours = matplotlib.colormaps["viridis"](np.linspace(0, 0.85, len(rows)))
    layers = np.arange(1, deltas.shape[1] + 1)
    for colour, row in zip(colours, rows, strict=True):
        values = positive(deltas[row])
        if np.any(np.isfinite(values)):
            label = f"step {fmt(steps[row], '.0f')}"
            ax.plot(layers, values, color=colour, label=label, **markers(layers.size))
    if not log_y(ax, [deltas[rows]]):
        no_data(ax, "no finite nonzero gradient norms logged")
    layer_ticks(ax.xaxis, layers.size)
    legend(ax, fontsize=8)


HEATMAPS = {
    # column: (what the colour shows, log colour scale, fixed colour range, short name)
    "weight_grad_norm": (WEIGHT_GRAD_LABEL, True, None, f"gradient norm {WEIGHT_GRAD}"),
    "saturation": (
        "saturated fraction of units (|a| near its bound)",
        False,
        (0.0, 1.0),
        "activation saturation",
    ),
}


def colour_window(init_values, values, decades: float = HEATMAP_DECADES) -> tuple[float, float]:
    """(low, high) log10 colour limits: all of ``values`` when they span at most ``decades``,
    else a window of that width (or the init profile's span, if wider) holding the whole init
    profile and as much of the rest as fits, shared evenly above and below."""
    finite = values[np.isfinite(values)]
    low, high = float(finite.min()), float(finite.max())
    init = init_values[np.isfinite(init_values)]
    if high - low <= decades or init.size == 0:
        return low, high
    init_low, init_high = float(init.min()), float(init.max())
    room = max(decades - (init_high - init_low), 0.0)
    below, above = init_low - low, high - init_high
    take_below = min(below, max(room / 2, room - above))
    take_above = min(above, room - take_below)
    # the data's own ends where the window reaches them (no rounding puts a cell beyond)
    return (
        low if take_below >= below else init_low - take_below,
        high if take_above >= above else init_high + take_above,
    )


def layer_heatmap(run: Run, column: str) -> Figure:
    """Layer x step heatmap of a layers.csv column; zero or non-finite cells in grey. A log
    colour range is chosen from the init profile (``colour_window``): cells beyond it are
    black (below) or white (above), so a collapse to 1e-300 leaves the init profile readable."""
    label, logarithmic, limits, name = HEATMAPS[column]
    steps, values = run.layer_matrix(column)  # (n_steps,), (n_steps, depth)
    figure, ax = new_figure()
    ax.set_xlabel(STEP_LABEL)
    ax.set_ylabel(LAYER_LABEL)
    heading = f"{title(run)}: {name} by layer and step\n(grey: zero, inf or nan"
    values = positive(values) if logarithmic else np.where(np.isfinite(values), values, np.nan)
    if steps.size == 0 or not np.any(np.isfinite(values)):
        ax.set_title(heading + ")")
        no_data(ax, f"no finite {column} values logged")
        return figure
    depth = values.shape[1]
    cmap = matplotlib.colormaps["viridis"].with_extremes(
        bad=NO_VALUE_COLOUR, under=BELOW_RANGE_COLOUR, over=ABOVE_RANGE_COLOUR
    )
    if logarithmic:
        low, high = colour_window(np.log10(values[0]), np.log10(values))
        low, high = (low - 0.5, high + 0.5) if low == high else (low, high)
        finite = values[np.isfinite(values)]
        vmin = finite.min() if low == np.log10(finite.min()) else 10.0**low
        vmax = finite.max() if high == np.log10(finite.max()) else 10.0**high
        norm = LogNorm(vmin, vmax)
    else:
        low, high = limits or (np.nanmin(values), np.nanmax(values))
        norm = Normalize(low, high if high > low else low + 1)
    record(figure, colour_limits=(norm.vmin, norm.vmax))
    finite = values[np.isfinite(values)]
    extend = {
        (False, False): "neither",
        (True, False): "min",
        (False, True): "max",
        (True, True): "both",
    }[(bool(np.any(finite < norm.vmin)), bool(np.any(finite > norm.vmax)))]
    if extend != "neither":
        heading += "; black: below, white: above the colour range"
    ax.set_title(heading + ")")
    mesh = ax.pcolormesh(
        _edges(steps),
        np.arange(depth + 1) + 0.5,
        np.ma.masked_invalid(values.T),
        cmap=cmap,
        norm=norm,
        shading="flat",
    )
    if (widths := analysis.varying_widths(setting(run, "model.width"))) is not None:
        record(figure, width_changes=mark_width_changes([ax], widths, vertical=False))
    bar = figure.colorbar(mesh, ax=ax, label=label, extend=extend)
    if logarithmic:
        plain_log_labels(bar.ax.yaxis)
    layer_ticks(ax.yaxis, depth)
    if steps.size <= 12:
        ax.set_xticks(steps, [fmt(step, ".0f") for step in steps])
    else:
        integer_ticks(ax.xaxis)
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
    """Train and test loss against step; log y when every finite value is positive. With
    BatchNorm also train_eval_loss: the training data in eval mode (running averages), against
    train_loss, the minibatch with its own batch statistics."""
    figure, ax = new_figure()
    steps = run.metrics["step"]
    if setting(run, "model.norm") == "batch":
        curves = {
            "train minibatch (batch statistics)": run.metrics["train_loss"],
            "train set (running averages)": run.metrics["train_eval_loss"],
            "test (running averages)": run.metrics["test_loss"],
        }
    else:
        curves = {"train": run.metrics["train_loss"], "test": run.metrics["test_loss"]}
    drawn = plot_series(ax, steps, curves)
    ax.set_xlabel(STEP_LABEL)
    integer_ticks(ax.xaxis)
    ax.set_ylabel(f"loss ({loss_name(run) or 'unknown'}, per example)")
    final = (run.summary or {}).get("final") or {}
    ax.set_title(
        f"{title(run)}: loss\nfinal train {fmt(final.get('train_loss'))}, "
        f"test {fmt(final.get('test_loss'))}"
    )
    divergence = (run.summary or {}).get("divergence") or {}
    if drawn and isinstance(divergence.get("step"), int | float):
        ax.axvline(divergence["step"], color="tab:red", linestyle=":", label="diverged here")
    if not drawn:
        no_data(ax, "no finite loss logged")
    legend(ax)
    return figure


def plot_series(ax, steps, curves: dict, styles: dict | None = None) -> int:
    """Plot each labelled curve's finite points; log y when all drawn values are positive."""
    drawn = []
    for label, values in curves.items():
        values = np.asarray(values, dtype=np.float64)
        keep = np.isfinite(values)
        if keep.any():
            style = (styles or {}).get(label, {})
            ax.plot(steps[keep], values[keep], label=label, **markers(keep.sum()), **style)
            drawn.append(values[keep])
    if drawn and all(np.all(values > 0) for values in drawn):
        log_y(ax, drawn)
    return len(drawn)


def clipping(run: Run) -> Figure:
    """Global gradient norm before and after clipping, the threshold, the fraction clipped;
    with clipping on, a lower panel with the cosine between the clipped and the raw gradient
    (1: direction kept, as clipping by norm does; below 1: clipping by value turned it)."""
    metrics = run.metrics
    mode = setting(run, "train.clip.mode", "none")
    threshold = setting(run, "train.clip.threshold")
    if mode == "none":
        figure, ax = new_figure()
        ax.set_xlabel(STEP_LABEL)
        integer_ticks(ax.xaxis)
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
        integer_ticks(cosine_ax.xaxis)
    curves = {"before clipping": metrics["grad_norm"]}
    if mode != "none":
        curves["after clipping"] = metrics["grad_norm_clipped"]
    styles = {"after clipping": {"linestyle": "--"}}
    drawn = plot_series(ax, metrics["step"], curves, styles)
    if mode == "norm" and isinstance(threshold, int | float) and drawn:
        ax.axhline(
            threshold, color="tab:red", linestyle=":", label=f"threshold {fmt(threshold, 'g')}"
        )
    ax.set_ylabel("global gradient norm (L2)")
    if mode == "none":
        detail = "clipping off"
    else:
        factors = metrics["clip_factor"][np.isfinite(metrics["clip_factor"])]
        share = np.mean(factors < CLIPPED_BELOW) if factors.size else math.nan
        detail = (
            f"clip mode {mode}, threshold {fmt(threshold, 'g')}: "
            f"{fmt(100 * share, '.0f')}% of logged steps clipped"
        )
    ax.set_title(f"{title(run)}: gradient clipping\n{detail}")
    if not drawn:
        no_data(ax, "no finite gradient norm logged")
    legend(ax)
    return figure
