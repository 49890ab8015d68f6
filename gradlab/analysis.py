"""The per-layer gradient factor M, the verdict, and comparisons across runs (numpy only).

The lecture writes the gradient at hidden layer l of an L-layer network as
|dL/dW_l| ~ |x| |W_l| M^(L-l). We measure M by a least-squares fit of ln(norm_l) against l:
ln(norm_l) = intercept + slope * l, so M = exp(-slope) -- M < 1 means the norms shrink towards
the input (vanishing), M > 1 that they grow (exploding).

Hidden layers of different widths: M comes from the layers of equal width. The fit gives
each width its own intercept, ln(norm_l) = intercept_{N_l} + slope * l, so the slope (and M)
is measured between layers of the same width only, and a step where the width changes
never enters M; the intercepts measure those steps, which ``factor_summary`` reports
against the theory's (``theory_widths.width_factors``). The verdict keeps its meaning: M is the
per-layer factor of |delta| between layers of equal width, the theory's sqrt(chi_1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

# the verdict rule, one function for measurement and theory alike (gradlab.vocabulary)
from gradlab.formatting import number_text
from gradlab.theory_widths import width_factors
from gradlab.vocabulary import regime_of as verdict

WIDE_ENOUGH = 32  # narrower hidden layers get the mean-field caveat in the verdict


@dataclass(frozen=True)
class FactorFit:
    """A fit of ln(norm_l) = intercept + slope * l over hidden layers l (1-based)."""

    factor: float  # M = exp(-slope); nan when fewer than two usable layers
    slope: float
    intercept: float
    r2: float  # coefficient of determination of the fit (1.0 when the points are collinear)
    fit_layers: tuple[int, int] | None  # first and last layer of the fit window (1-based)
    n_used: int  # finite, nonzero norms inside the window
    n_excluded: int  # zero or non-finite norms inside the window, left out of the fit
    spread_decades: float  # log10(norm at first fitted layer / norm at last); < 0 if vanishing
    depth: int
    reason: str = ""  # why there is no factor, when there is none
    # with ``groups``: (group, intercept, its usable layers) per group, the largest first
    intercepts: tuple[tuple, ...] | None = None

    def to_dict(self) -> dict:
        """JSON-safe: non-finite floats become None, the window a list."""
        result = asdict(self)
        result["fit_layers"] = list(self.fit_layers) if self.fit_layers else None
        if self.intercepts is None:
            del result["intercepts"]
        return {
            key: (None if isinstance(value, float) and not math.isfinite(value) else value)
            for key, value in result.items()
        }


def fit_window(depth: int, fit_skip: float = 0.15) -> tuple[int, int]:
    """(first, last) 1-based layers of the fit: drop floor(fit_skip * depth) layers at each end,
    at least one each when depth >= 5 and fit_skip > 0, and keep at least two layers."""
    skip = math.floor(fit_skip * depth + 1e-9)
    if fit_skip > 0 and depth >= 5:
        skip = max(skip, 1)
    skip = max(0, min(skip, (depth - 2) // 2))
    return 1 + skip, depth - skip


def fit_factor(norms: Sequence[float], fit_skip: float = 0.15, groups=None) -> FactorFit:
    """Fit M to per-layer norms (index 0 is hidden layer 1), ignoring zero and non-finite norms.

    ``groups`` (one label per layer, e.g. its width): one intercept per label, a common slope
    (``_grouped_fit``); None: one line through all layers."""
    values = np.asarray(norms, dtype=np.float64).ravel()
    depth = values.size
    nan = math.nan
    if depth < 2:
        return FactorFit(nan, nan, nan, nan, None, 0, 0, nan, depth, "fewer than two layers")
    first, last = fit_window(depth, fit_skip)
    window = values[first - 1 : last]  # (n_window,)
    layers = np.arange(first, last + 1, dtype=np.float64)
    usable = np.isfinite(window) & (window > 0)
    n_used, n_excluded = int(usable.sum()), int((~usable).sum())
    if n_used < 2:
        reason = (
            f"only {n_used} of {window.size} layer norms in layers {first}-{last} are finite "
            "and nonzero"
        )
        return FactorFit(nan, nan, nan, nan, (first, last), n_used, n_excluded, nan, depth, reason)
    x, y = layers[usable], np.log(window[usable])
    if groups is not None:
        labels = [
            label for label, keep in zip(groups[first - 1 : last], usable, strict=True) if keep
        ]
        return _grouped_fit(x, y, labels, (first, last), n_excluded, depth)
    x_centred = x - x.mean()
    slope = float(np.dot(x_centred, y - y.mean()) / np.dot(x_centred, x_centred))
    intercept = float(y.mean() - slope * x.mean())
    residual = float(np.sum((y - (intercept + slope * x)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    rounding = 1e-24 * y.size * (1.0 + float(np.max(np.abs(y)))) ** 2  # equal norms, up to ulps
    r2 = 1.0 if total <= rounding else max(0.0, 1.0 - residual / total)
    spread = float((y[0] - y[-1]) / math.log(10))
    factor = math.exp(-slope) if -slope < 709 else math.inf
    return FactorFit(factor, slope, intercept, r2, (first, last), n_used, n_excluded, spread, depth)


def _grouped_fit(x, y, labels, window, n_excluded, depth) -> FactorFit:
    """The least-squares fit of ln(norm_l) = intercept_g + slope * l, g = the layer's label:
    the slope from the spread of each group about its own mean (R^2 likewise)."""
    order = list(dict.fromkeys(labels))  # labels in layer order
    index = np.array([order.index(label) for label in labels])
    counts = np.bincount(index, minlength=len(order))
    x_means = np.bincount(index, x, len(order)) / counts
    y_means = np.bincount(index, y, len(order)) / counts
    x_centred, y_centred = x - x_means[index], y - y_means[index]
    spread = float((y[0] - y[-1]) / math.log(10))
    nan = math.nan
    if np.dot(x_centred, x_centred) == 0:
        reason = f"no two of the usable layers in layers {window[0]}-{window[1]} have one width"
        return FactorFit(nan, nan, nan, nan, window, x.size, n_excluded, spread, depth, reason)
    slope = float(np.dot(x_centred, y_centred) / np.dot(x_centred, x_centred))
    intercepts = y_means - slope * x_means
    residual = float(np.sum((y_centred - slope * x_centred) ** 2))
    total = float(np.dot(y_centred, y_centred))
    rounding = 1e-24 * y.size * (1.0 + float(np.max(np.abs(y)))) ** 2
    r2 = 1.0 if total <= rounding else max(0.0, 1.0 - residual / total)
    factor = math.exp(-slope) if -slope < 709 else math.inf
    ranked = sorted(range(len(order)), key=lambda g: -counts[g])  # stable: ties by layer
    groups = tuple(
        (order[g], float(intercepts[g]), tuple(int(layer) for layer in x[index == g]))
        for g in ranked
    )
    main = groups[0][1]
    return FactorFit(factor, slope, main, r2, window, x.size, n_excluded, spread, depth, "", groups)


def fit_factors(matrix: np.ndarray, fit_skip: float = 0.15) -> np.ndarray:
    """M for each row of a (steps, depth) matrix of per-layer norms."""
    return np.array([fit_factor(row, fit_skip).factor for row in np.atleast_2d(matrix)])


def varying_widths(width) -> tuple[int, ...] | None:
    """The hidden layers' widths when ``width`` (model.width) lists different ones, else None."""
    if isinstance(width, list | tuple) and len(set(width)) > 1:
        return tuple(width)
    return None


def width_caveat(width) -> str | None:
    """The warning that goes with a verdict on narrow layers (None when wide or unknown);
    ``width`` is model.width, an integer or a list."""
    narrowest = min(width) if isinstance(width, list | tuple) else width
    if narrowest is None or narrowest >= WIDE_ENOUGH:
        return None
    which = "narrowest width" if varying_widths(width) else "width"
    return f"{which} {narrowest} < {WIDE_ENOUGH}: mean-field theory assumes wide layers"


def describe(fit: FactorFit, tol: float = 0.05, width=None) -> str:
    """The plain sentence, e.g. 'vanishing: the gradient shrinks x0.63 per layer, 10^-7.9 from
    layer 40 to layer 1', with the mean-field caveat when ``width`` is small."""
    sentence = _sentence(fit, tol)
    if fit.reason == "" and fit.intercepts is not None and len(fit.intercepts) > 1:
        sentence += "; M from layers of equal width"
    caveat = width_caveat(width)
    return f"{sentence}; {caveat}" if caveat and fit.reason == "" else sentence


def _sentence(fit: FactorFit, tol: float) -> str:
    regime = verdict(fit.factor, tol)
    if regime == "unknown":
        return f"unknown: no factor ({fit.reason})"
    verb = {"vanishing": "shrinks", "exploding": "grows", "stable": "changes"}[regime]
    if math.isinf(fit.factor):
        return f"{regime}: the gradient {verb} without bound from layer to layer"
    decades = (fit.depth - 1) * math.log10(fit.factor)  # log10(norm_1 / norm_L) = (L-1) log10 M
    sentence = (
        f"{regime}: the gradient {verb} x{fit.factor:.3g} per layer, "
        f"10^{decades:+.1f} from layer {fit.depth} to layer 1"
    )
    if fit.n_excluded:
        sentence += f" ({fit.n_excluded} zero or non-finite layer norms left out)"
    return sentence


def factor_summary(
    delta_norms,
    weight_norms,
    fit_skip: float = 0.15,
    tol: float = 0.05,
    width=None,
    width_theory: bool = True,
) -> dict:
    """What summary.json records for one step: M from the delta norms (the verdict's basis) and
    from the weight-gradient norms, with the fit's quality. This is the one definition of M and
    of the verdict: the run report, ``gradlab summary`` and every figure show these values.

    ``width`` is model.width. When it lists different widths, M comes from layers of equal
    width (the delta fit groups layers by width, the weight-gradient fit by fan-in, layer 1's
    input apart) and ``width_steps`` gives each group's step against the theory's (none when
    ``width_theory`` is false: ``initial_theory.width_theory_applies``)."""
    widths = varying_widths(width)
    delta = fit_factor(delta_norms, fit_skip, widths)
    weight = fit_factor(weight_norms, fit_skip, fan_in_groups(widths))
    result = {
        "delta": _finite_or_none(delta.factor),
        "weight": _finite_or_none(weight.factor),
        "r2": _finite_or_none(delta.r2),
        "weight_r2": _finite_or_none(weight.r2),
        "fit_layers": list(delta.fit_layers) if delta.fit_layers else None,
        "n_excluded": delta.n_excluded,
        "spread_decades": _finite_or_none(delta.spread_decades),
        "regime": verdict(delta.factor, tol),
        "sentence": describe(delta, tol, width),
        "caveat": width_caveat(width) if delta.reason == "" else None,
    }
    if widths is not None:
        predicted = width_factors(widths)
        if not width_theory:  # e.g. xavier: sigma_w changes with the width, no prediction
            predicted = {column: [None] * len(values) for column, values in predicted.items()}
        result["width_steps"] = {
            "delta_norm": width_steps(delta, predicted["delta_norm"], "width"),
            "weight_grad_norm": width_steps(weight, predicted["weight_grad_norm"], "fan_in"),
        }
    return result


def fan_in_groups(widths: Sequence[int] | None) -> tuple | None:
    """The weight-gradient fit's groups: each layer's fan-in, layer 1's input apart."""
    return None if widths is None else ("input", *widths[:-1])


def width_steps(fit: FactorFit, predicted: Sequence[float | None], key: str) -> list[dict]:
    """Each group of a grouped fit (largest first): its ``key`` (the width or fan-in), its
    layers, the measured step exp(intercept - the largest group's intercept), the norm of its
    layers over the largest group's along the fitted slope, and the theory's (``predicted``:
    the per-layer factors of ``theory_widths.width_factors``; None where it has none)."""
    if fit.intercepts is None:
        return []
    _, main, main_layers = fit.intercepts[0]
    reference = predicted[main_layers[0] - 1]
    steps = []
    for label, intercept, layers in fit.intercepts:
        theory = predicted[layers[0] - 1]
        steps.append(
            {
                key: label,
                "layers": list(layers),
                "step": _finite_or_none(math.exp(min(intercept - main, 709.0))),
                "theory": None if theory is None or reference is None else theory / reference,
            }
        )
    return steps


_STEP_NAMES = {"delta_norm": ("|delta|", "width"), "weight_grad_norm": ("|dL/dW|", "fan_in")}


def describe_width_steps(steps: Mapping[str, list], when: str = "at init") -> list[str]:
    """One line per gradient norm of ``width_steps``: each group's step against the largest
    group, with the theory's, e.g. '|dL/dW| at init, steps from the layers of fan-in 256:
    fan-in 64 x0.512 (theory x0.5)'."""
    lines = []
    for column, groups in steps.items():
        if len(groups) < 2:
            continue
        symbol, key = _STEP_NAMES[column]
        word = key.replace("_", "-")
        parts = [
            f"{word} {group[key]} x{number_text(group['step'], '.3g', 'nan')} "
            f"(theory {'x' + number_text(group['theory'], '.3g') if group['theory'] else 'none'})"
            for group in groups[1:]
        ]
        lines.append(
            f"{symbol} {when}, steps from the layers of {word} {groups[0][key]}: "
            + "; ".join(parts)
        )
    return lines


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


# ---- comparing runs ----------------------------------------------------------------------


def flatten(mapping: Mapping, prefix: str = "") -> dict:
    """{'model': {'depth': 3}} -> {'model.depth': 3}."""
    flat = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def differing_keys(configs: Iterable[Mapping], ignore: Sequence[str] = ("name",)) -> list[str]:
    """Dotted config keys whose values are not the same in every config, in first-seen order."""
    flats = [flatten(config) for config in configs]
    keys: dict[str, None] = {}
    for flat in flats:
        keys.update(dict.fromkeys(flat))
    missing = object()
    return [
        key
        for key in keys
        if key not in ignore and len({repr(flat.get(key, missing)) for flat in flats}) > 1
    ]


def order_key(flat: Mapping, keys: Sequence[str], text_first: bool = False) -> tuple:
    """Sort key over ``keys`` of a flat config: numbers numerically, text by its str, missing
    last; numbers before text, or after it with ``text_first``."""
    number_rank, text_rank = (1, 0) if text_first else (0, 1)
    parts = []
    for key in keys:
        value = flat.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            parts.append((number_rank, float(value), ""))
        else:
            parts.append((text_rank if value is not None else 2, 0.0, str(value)))
    return tuple(parts)


def shortest_suffixes(keys: Sequence[str], others: Iterable[str], reserved=()) -> list[str]:
    """Each dotted key's shortest dotted suffix that no other key in ``keys`` or ``others``
    ends with and that is not ``reserved`` ('model.init.weight_scale' -> 'weight_scale');
    the whole key where every shorter suffix clashes."""

    def suffix(key: str, parts: int) -> str:
        return ".".join(key.split(".")[-parts:])

    rivals = set(keys) | set(others)
    labels = []
    for key in keys:
        parts = 1
        while suffix(key, parts) != key and (
            suffix(key, parts) in reserved
            or any(suffix(other, parts) == suffix(key, parts) for other in rivals - {key})
        ):
            parts += 1
        labels.append(suffix(key, parts))
    return labels


def short_key(key: str) -> str:
    """The last part of a dotted key ('model.init.weight_scale' -> 'weight_scale')."""
    return key.rsplit(".", 1)[-1]


# ---- residual networks -------------------------------------------------------------------


def quarter_blocks(depth: int) -> int:
    """Blocks in a quarter of a residual network: depth // 4, at least one."""
    return max(1, depth // 4)


def quarter_means(log_factors) -> tuple[float, float]:
    """exp of the mean of the first and of the last quarter of per-block log factors."""
    log_factors = np.asarray(log_factors, dtype=np.float64)
    k = quarter_blocks(log_factors.size)
    return float(np.exp(np.mean(log_factors[:k]))), float(np.exp(np.mean(log_factors[-k:])))


def gradient_profile(stream_norms, theory=None, tol: float = 0.05) -> dict:
    """What summary.json records for one step of a residual network: ``stream_norms`` are
    |dL/dx^l| for l = 0..depth (x^0 the input layer's output), ``theory`` a
    ``theory_residual.ResidualPrediction`` (or None). ``ratio`` is |g^0| / |g^depth|; the
    quarter factors are the geometric mean of the per-block factor |g^{l-1}| / |g^l| over the
    first and the last quarter of the blocks; the theory's are null, with a ``theory_note``,
    where it does not apply. ``theory_factors``: the theory's per-block factors."""
    norms = np.asarray(stream_norms, dtype=np.float64)
    depth = norms.size - 1
    k = quarter_blocks(depth)
    with np.errstate(all="ignore"):
        ratio = norms[0] / norms[-1]
        first = (norms[0] / norms[k]) ** (1.0 / k)
        last = (norms[depth - k] / norms[-1]) ** (1.0 / k)
    applicable = theory is not None and theory.applicable
    theory_first, theory_last = theory.quarter_factors() if applicable else (None, None)
    profile = {
        "ratio": _finite_or_none(float(ratio)),
        "theory_ratio": theory.ratio if applicable else None,
        "factor_first_quarter": _finite_or_none(float(first)),
        "factor_last_quarter": _finite_or_none(float(last)),
        "theory_factor_first_quarter": theory_first,
        "theory_factor_last_quarter": theory_last,
        "quarter_blocks": k,
    }
    profile["theory_note"] = (
        None if applicable else (theory.reason if theory is not None else "no theory")
    )
    profile["sentence"] = profile_sentence(profile, depth, tol)
    # the theory's per-block factors, for the figure's theory profile
    profile["theory_factors"] = list(theory.factors) if applicable else None
    return profile


def profile_sentence(profile: dict, depth: int, tol: float = 0.05) -> str:
    """'the gradient grows x3.1 across 100 blocks (theory x3.0); no exponential vanishing or
    explosion': the ratio, and the verdict on the mean per-block factor ratio^(1/depth)."""
    ratio = profile["ratio"]
    if ratio is None:
        return "unknown: the gradient on the stream is zero or not finite"
    verb = "grows" if ratio >= 1 else "shrinks"
    theory = profile["theory_ratio"]
    shown = f"theory x{theory:.3g}" if theory is not None else "no theory"
    sentence = f"the gradient {verb} x{ratio:.3g} across {depth} blocks ({shown})"
    per_block = ratio ** (1.0 / depth)
    regime = verdict(per_block, tol)
    if regime == "stable":
        return f"{sentence}; no exponential vanishing or explosion"
    kind = "explosion" if regime == "exploding" else "vanishing"
    return f"{sentence}; exponential {kind}, x{per_block:.3g} per block"
