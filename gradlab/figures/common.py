"""What every figure shares: size and style, log axes that survive real runs, symbols for
config keys, and the measured factor M as summary.json records it.

Real runs are hostile to plots: gradients underflow to exactly 0, diverged runs log inf and
nan, a run may have only step 0 or one hidden layer, and a killed run has half its files.
Non-positive and non-finite values are left out of log axes.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, LogFormatterSciNotation, MaxNLocator, NullLocator

from gradlab import analysis
from gradlab.config import config_from_dict
from gradlab.errors import GradlabError
from gradlab.formatting import number_text
from gradlab.initial_theory import theory_at_init
from gradlab.results import Run

FIGSIZE = (6.4, 4.8)  # inches; at the default 150 dpi a 960 x 720 image
WIDE_FIGSIZE = (10.0, 4.8)  # two panels side by side
DPI = 150
STYLE = {
    "font.size": 10,
    "legend.fontsize": 9,
    "axes.titlesize": 10,
    "figure.titlesize": 11,
    "svg.fonttype": "none",  # SVG text stays text: editable in a slide or a drawing program
}
MAX_STEP_CURVES = 4  # gradient-by-layer curves: init and up to three later logged steps
MAX_ANNOTATED_CELLS = 144  # write the value into each heatmap cell up to a 12 x 12 grid
CLIPPED_BELOW = 1 - 1e-9  # a step counts as clipped when post / pre norm is below this
NO_VALUE_COLOUR = "0.8"  # heatmap cells that are zero, inf or nan
MINOR_TICKS_UP_TO = 6  # decades: a wider log axis has no minor ticks (eight per decade)
PLAIN_LABELS = (1e-3, 1e4)  # log-axis ticks in this range read 0.01, 1, 100; outside 10^k

# The lecture's symbols in plain Unicode (DejaVu Sans has every glyph), not mathtext: a
# mathtext \mathcal{L} is written to an SVG in the STIXNonUnicode font, which a browser does not
# have (the report page showed a box), and matplotlib parses mathtext anew for every figure.
# Mathtext stays only where Unicode has no subscript (sigma_w, sigma_b, xi_c).
LAYER_LABEL = "hidden layer l (1 = next to the input)"
STEP_LABEL = "training step (optimizer updates)"
DELTA = "|δₗ|"  # the gradient at layer l's pre-activation, dL/dh_l: M is fitted to it
WEIGHT_GRAD = "|∂ℒ/∂Wₗ|"
DELTA_LABEL = "|δₗ| = |∂ℒ/∂hₗ| (L2 norm)"
WEIGHT_GRAD_LABEL = WEIGHT_GRAD + " (Frobenius norm)"
FACTOR_LAW = f"{DELTA} ∝ Mᴸ⁻ˡ"  # the lecture's law, in the gradient figure's title

# Config keys shown as the lecture's symbols; any other key appears under its own name.
SYMBOLS = {
    "model.init.weight_scale": ("weight scale", r"$\sigma_w$"),
    "model.init.bias_scale": ("bias scale", r"$\sigma_b$"),
    "model.depth": ("depth", "$L$"),
    "model.width": ("width", "$n$"),
    "train.lr": ("learning rate", r"$\eta$"),
    "train.momentum": ("momentum", r"$\mu$"),
    "train.batch_size": ("batch size", "$B$"),
    "train.clip.threshold": ("clip threshold", "$c$"),
    "train.weight_decay": ("weight decay", r"$\lambda$"),
}


def key_symbol(key: str) -> str:
    """'model.init.weight_scale' -> '$\\sigma_w$'; other keys: their last part."""
    return SYMBOLS[key][1] if key in SYMBOLS else analysis.short_key(key)


def key_label(key: str) -> str:
    """An axis label for a config key: 'weight scale $\\sigma_w$', else the dotted key."""
    return " ".join(SYMBOLS[key]) if key in SYMBOLS else key


def new_figure(figsize=FIGSIZE) -> tuple[Figure, object]:
    figure = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    return figure, figure.add_subplot()


def record(figure: Figure, **shown) -> None:
    """Keep the numbers a figure shows beside it, so a test reads them without OCR."""
    figure.gradlab_shown = {**getattr(figure, "gradlab_shown", {}), **shown}


def positive(values) -> np.ndarray:
    """Values for a log axis: zero, negative and non-finite entries become nan (not drawn)."""
    values = np.array(values, dtype=np.float64)
    values[~(np.isfinite(values) & (values > 0))] = np.nan
    return values


def has_positive(*arrays) -> bool:
    return any(np.any(np.isfinite(positive(a))) for a in arrays)


SUPERSCRIPT = str.maketrans(
    "-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
)


class PlainLogFormatter(LogFormatterSciNotation):
    """Log-axis ticks as plain numbers (0.1, 1, 20) in PLAIN_LABELS, as 10^k outside it: a
    power of ten in Unicode superscripts (10⁻⁴⁰, plain text, not mathtext: matplotlib parses
    each mathtext label anew for every figure, most of a wide log axis's drawing time)."""

    def __call__(self, x, pos=None):
        text = super().__call__(x, pos)
        if text and PLAIN_LABELS[0] <= abs(x) < PLAIN_LABELS[1]:
            return f"{x:g}"
        if text and x > 0:
            exponent = round(math.log10(x))
            if math.isclose(x, 10.0**exponent, rel_tol=1e-9):
                return "10" + str(exponent).translate(SUPERSCRIPT)
        return text


def plain_log_labels(axis) -> None:
    """Plain tick labels on a log-scaled axis (major and labelled minor ticks)."""
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def integer_ticks(axis) -> None:
    """Layers and steps are counts: no tick at 2.5."""
    axis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def layer_ticks(axis, depth: int) -> None:
    """Every layer labelled in a shallow network, else integer ticks only."""
    if depth <= 12:
        axis.set_ticks(np.arange(1, depth + 1))
    else:
        integer_ticks(axis)


def log_y(ax, arrays) -> bool:
    """Log y axis limited to the positive finite values of ``arrays`` (False if none).

    The limits come from the data alone, so a guide line (fit, theory) never stretches the
    axis. Near the ends of the float range (a diverged loss of 1e285) matplotlib's log tick
    locator overflows, so such axes get one labelled tick every few decades instead.
    """
    values = np.concatenate([positive(a).ravel() for a in arrays] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return False
    low, high = np.log10(values.min()), np.log10(values.max())
    margin = max(0.05 * (high - low), 0.1)
    low, high = max(low - margin, -307.0), min(high + margin, 307.0)
    with np.errstate(over="ignore"):  # the scale change autoscales to the raw data first
        ax.set_yscale("log")
    ax.set_ylim(10.0**low, 10.0**high)
    plain_log_labels(ax.yaxis)
    if high - low > MINOR_TICKS_UP_TO:
        ax.yaxis.set_minor_locator(NullLocator())
    if low < -250 or high > 250 or high - low > 100:
        stride = next(n for n in (1, 2, 5, 10, 20, 25, 50, 100) if (high - low) / n <= 8)
        decades = np.arange(math.ceil(low), math.floor(high) + 1)
        decades = decades[decades % stride == 0]
        ax.yaxis.set_major_locator(FixedLocator(10.0**decades))
        ax.yaxis.set_minor_locator(NullLocator())
    return True


def setting(run: Run, dotted: str, default=None):
    """A config value by its dotted key ('train.clip.mode'), or ``default``."""
    return analysis.flatten(run.config).get(dotted, default)


def fmt(value, spec: str = ".3g") -> str:
    """A number in a title or legend, rounded; n/a when the run has none."""
    return number_text(value, spec, missing="n/a")


def title(run: Run) -> str:
    status = "" if run.status == "completed" else f" [{run.status}]"
    return literal(f"{run.name}{status}")


def literal(text: str) -> str:
    """Text from a config or a folder name, shown as written: its dollar signs escaped, so that
    matplotlib does not read 'cost $5$' as mathtext."""
    return text.replace("$", r"\$")


def no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, wrap=True)


def legend(ax, **options) -> None:
    """A legend only when there is more than one labelled artist (an empty one warns)."""
    handles, _ = ax.get_legend_handles_labels()
    if len(handles) > 1:
        ax.legend(**{"loc": "best", "fontsize": 9, **options})


def markers(n_points: int) -> dict:
    """Points are visible even when a curve has a single one."""
    return {"marker": "o", "markersize": 3} if n_points <= 30 else {}


def theory_record(run: Run) -> dict | None:
    """The mean-field theory of summary.json; for a run without one (killed), the same function
    ``gradlab run`` and ``gradlab summary`` use (initial_theory.theory_at_init, no training
    needed).
    None when this version cannot read the run's config."""
    theory = (run.summary or {}).get("theory")
    if theory is None:
        try:
            theory = theory_at_init(config_from_dict(run.config))
        except GradlabError:  # a config this version cannot read: no theory to show
            return None
    return theory


def theory_factor(run: Run) -> float | None:
    """The theory's M (``theory_record``), None where it does not apply."""
    theory = theory_record(run) or {}
    factor = theory.get("factor")
    if not theory.get("applicable") or factor is None or not math.isfinite(factor):
        return None
    return float(factor)


def factor_of(run: Run, which: str = "init") -> dict:
    """M and the verdict at init (or the last logged step, ``which='final'``): summary.json's
    record when the run has one, else ``analysis.factor_summary`` (the function that wrote
    that record) on the delta norms of layers.csv. Empty when nothing was logged."""
    recorded = ((run.summary or {}).get("gradient_factor") or {}).get(which)
    if recorded:
        return recorded
    steps, deltas = run.layer_matrix("delta_norm")  # (n_steps,), (n_steps, depth)
    if steps.size == 0:
        return {}
    _, weights = run.layer_matrix("weight_grad_norm")
    row = 0 if which == "init" else -1
    factor = analysis.factor_summary(
        deltas[row],
        weights[row],
        setting(run, "analysis.fit_skip", 0.15),
        setting(run, "analysis.tol", 0.05),
        width=setting(run, "model.width"),
    )
    return {"step": float(steps[row]), **factor}


def measured_factor(run: Run) -> float:
    """M at init as summary.json has it (nan when there is none)."""
    value = factor_of(run, "init").get("delta")
    return float(value) if isinstance(value, int | float) else math.nan


def loss_name(run: Run) -> str:
    loss = setting(run, "train.loss", "auto")
    if loss == "auto":
        task = setting(run, "data.task", "regression")
        loss = {"regression": "mse", "binary": "bce", "multiclass": "cross_entropy"}.get(task, "")
    return loss


def pick_steps(n_steps: int, count: int) -> list[int]:
    """Row indices: the first, the last and evenly spaced ones between, ``count`` at most."""
    return sorted({round(i) for i in np.linspace(0, n_steps - 1, min(count, n_steps))})


def colours(n: int):
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "viridis"]
    return [cmap(i) for i in range(n)] if n <= 10 else list(cmap(np.linspace(0, 0.9, n)))
