"""Mean-field theory of signal propagation at initialization (numpy only).

For W ~ N(0, sigma_w^2 / fan_in) and b ~ N(0, sigma_b^2) (Poole et al. 2016, arXiv:1606.05340;
Schoenholz et al. 2017, arXiv:1611.01232), the pre-activations of a wide network are Gaussian
with second moment q^l:

    q^1 = sigma_w^2 q^0 + sigma_b^2                        (q^0: mean squared input)
    q^l = sigma_w^2 E_z[phi(sqrt(q^{l-1}) z)^2] + sigma_b^2,   z ~ N(0, 1)

E[phi^2] is the *raw* second moment, so the sigmoid's mean of 1/2 counts. q^l converges to a
fixed point q*, and one layer of backprop multiplies the squared norm of the delta dL/dh by

    chi_1 = sigma_w^2 E_z[phi'(sqrt(q*) z)^2],

so the predicted per-layer delta factor is M = sqrt(chi_1): M < 1 vanishing, M > 1 exploding.

Expectations: Gauss-Hermite quadrature in z needs thousands of nodes once q is large, because
phi(sqrt(q) z) then has features of width 1/sqrt(q) (at q = 100, 201 nodes still err by 4% on
E[sigmoid'^2]). We integrate in u = sqrt(q) z with the trapezoid rule instead, which converges
geometrically for analytic integrands (sigmoid and tanh have their nearest poles at |Im u| =
pi and pi/2) and is accurate to ~1e-12 over 1e-4 <= q <= 1e4; relu and linear use closed forms.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from gradlab import vocabulary
from gradlab.engine.activations import make_activation
from gradlab.engine.layers import Activation
from gradlab.theory_batchnorm import batch_coupled_rate
from gradlab.vocabulary import regime_of

ACTIVATIONS = vocabulary.ACTIVATIONS
NORMS = vocabulary.NORMS
_TRUNCATE = 9.0  # the Gaussian weight beyond 9 standard deviations is below 1e-18
_MAX_STEP = 0.2  # trapezoid step in u: error ~ exp(-2 pi * pole distance / step) < 1e-20
_Q_UNBOUNDED = 1e6  # a length map still rising here grows without bound (q* = inf)
_KINK_PANEL = 1.0  # Gauss-Legendre panel width in u for activations kinked at 0
_KINK_NODES = np.polynomial.legendre.leggauss(12)


@functools.lru_cache(maxsize=64)
def _cached_entry(activation: str, leaky_slope: float) -> Activation:
    return make_activation(activation, leaky_slope=leaky_slope)


def activation_entry(activation: str | Activation, leaky_slope: float = 0.01) -> Activation:
    """The engine's activation entry (phi, phi', closed forms) for a name or an entry."""
    if isinstance(activation, Activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
    return _cached_entry(activation, float(leaky_slope))


def phi_and_derivative(activation, leaky_slope: float = 0.01) -> tuple[Callable, Callable]:
    """(phi, phi') of an activation as float64 numpy functions, e.g. for ``batch_coupled_rate``."""
    entry = activation_entry(activation, leaky_slope)
    return entry.phi, entry.derivative


def gaussian_expectation(function: Callable, q: float, kink: bool = False) -> float:
    """E[f(u)] for u ~ N(0, q), by the trapezoid rule on [-9 sqrt(q), 9 sqrt(q)]; with
    ``kink`` (f not smooth at 0), by Gauss-Legendre panels on each side of 0 instead."""
    if q <= 0:
        return float(function(np.zeros(1))[0])
    std = math.sqrt(q)
    if kink:
        panels = max(1, math.ceil(_TRUNCATE * std / min(_KINK_PANEL, std)))
        width = _TRUNCATE * std / panels
        x, w = _KINK_NODES
        half = (np.arange(panels)[:, None] + (x + 1) / 2) * width  # (panels, nodes)
        u = np.concatenate([half.ravel(), -half.ravel()])
        weights = np.tile(w * width / 2, 2 * panels)
    else:
        step = min(_MAX_STEP, std / 4)
        half = math.ceil(_TRUNCATE * std / step)
        u = np.arange(-half, half + 1) * step  # (2 half + 1,)
        density = np.exp(-0.5 * (u / std) ** 2) / (std * math.sqrt(2 * math.pi))
        return float(np.sum(function(u) * density) * step)
    density = np.exp(-0.5 * (u / std) ** 2) / (std * math.sqrt(2 * math.pi))
    return float(np.sum(function(u) * density * weights))


def _expectation(entry: Activation, function: Callable, q: float) -> float:
    return gaussian_expectation(function, q, entry.kink)


def second_moment(activation, q: float) -> float:
    """E[phi(u)^2] for u ~ N(0, q) (raw, not centred)."""
    return _square_moment(activation, q, derivative=False)


def derivative_moment(activation, q: float) -> float:
    """E[phi'(u)^2] for u ~ N(0, q)."""
    return _square_moment(activation, q, derivative=True)


def _square_moment(activation, q: float, derivative: bool) -> float:
    """E[f(u)^2], f = phi' or phi: the entry's closed form where it has one, else quadrature."""
    entry = activation_entry(activation)
    closed = entry.closed_moments(q)
    if closed is not None:
        return closed[1 if derivative else 0]
    function = entry.derivative if derivative else entry.phi
    return _expectation(entry, lambda u: function(u) ** 2, q)


def variance(activation, q: float) -> float:
    """Var[phi(u)] for u ~ N(0, q)."""
    entry = activation_entry(activation)
    if entry.homogeneous is not None:
        mean_square, second, _ = entry.homogeneous
        return q * second - q * mean_square
    mean = _expectation(entry, entry.phi, q)
    return second_moment(entry, q) - mean * mean


def q_map(activation, weight_scale: float, bias_scale: float, q: float) -> float:
    """One layer of the length map: sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2."""
    return weight_scale**2 * second_moment(activation, q) + bias_scale**2


def fixed_point(activation, weight_scale: float, bias_scale: float, q0: float = 1.0) -> float:
    """q*, the fixed point the length map converges to from q^1 = sigma_w^2 q0 + sigma_b^2; inf if
    q grows without bound (e.g. relu with sigma_w^2 > 2, linear with sigma_w > 1)."""
    entry = activation_entry(activation)
    sw2, sb2 = weight_scale**2, bias_scale**2
    if entry.homogeneous is not None:  # a linear length map: q -> slope q + sigma_b^2
        slope = sw2 * entry.homogeneous[1]
        if slope < 1:
            return sb2 / (1 - slope)
        if slope == 1 and sb2 == 0:
            return sw2 * q0  # q stays at q^1 forever
        return math.inf
    if sw2 == 0:
        return sb2
    if not entry.bounded:  # unbounded: q may fall to 0 or grow without bound
        return _reached_fixed_point(entry, weight_scale, bias_scale, sw2 * q0 + sb2)
    phi_0 = float(entry.phi(np.zeros(1))[0])
    slope_0 = float(entry.derivative(np.zeros(1))[0])
    if phi_0 == 0 and sb2 == 0 and sw2 * slope_0**2 <= 1:
        return 0.0  # q = 0 is the stable fixed point: the map's slope there is sigma_w^2 phi'(0)^2
    # |phi| <= 1, so q_map(q) < q at q = sigma_w^2 + sigma_b^2, and q_map(q) > q as q -> 0
    # (phi(0)^2 > 0, or sigma_b > 0, or a slope above 1 at 0): the stable fixed point is the
    # root of 1 - q_map(q) / q, found in log q. Iterating the map would creep near
    # criticality, where its slope at q* approaches 1. Lower brackets: sigmoid's
    # E[phi^2] >= E[phi]^2 = 1/4 = phi(0)^2; with phi(0) = 0, q* exceeds sigma_b^2.
    low = sw2 * phi_0**2 + sb2
    return _root_log(
        lambda q: 1 - q_map(entry, weight_scale, bias_scale, q) / q,
        low if low > 0 else 1e-30,
        sw2 + sb2,
    )


def _reached_fixed_point(entry, weight_scale, bias_scale, q1) -> float:
    """The first fixed point in the direction the length map moves from q1 (where iterating
    a rising map converges), bracketed by steps of 4x in q; 0 or inf if there is none."""
    excess = lambda q: 1 - q_map(entry, weight_scale, bias_scale, q) / q  # noqa: E731
    at_zero = q_map(entry, weight_scale, bias_scale, 0.0)
    if q1 <= 0:
        q1 = at_zero
        if q1 <= 0:
            return 0.0
    # with q_map(0) = 0 and a slope below 1 there, q -> 0 once it falls below 1e-8 (the map
    # is linear there); with a slope of 1 or more, the fall stops at a root above 0
    slope_0 = weight_scale**2 * float(entry.derivative(np.zeros(1))[0]) ** 2
    floor = 1e-8 if at_zero == 0 and slope_0 < 1 else 1e-30
    value = excess(q1)
    if value == 0:
        return q1
    low = high = q1
    if value < 0:  # q rises
        while excess(high) < 0:
            low, high = high, 4 * high
            if high > _Q_UNBOUNDED:
                return math.inf
    else:  # q falls
        while excess(low) > 0:
            low, high = low / 4, low
            if low < floor:
                return 0.0
    return _root_log(excess, low, high)


def chi_1(activation, weight_scale: float, bias_scale: float, q0: float = 1.0) -> float:
    """sigma_w^2 E[phi'(sqrt(q*) z)^2]: one layer's factor on the squared delta norm (with
    q* = inf, E[phi'^2] is the mean of phi'(-inf)^2 and phi'(inf)^2)."""
    entry = activation_entry(activation)
    if entry.homogeneous is not None:
        return weight_scale**2 * entry.homogeneous[2]
    q_star = fixed_point(entry, weight_scale, bias_scale, q0)
    if q_star == math.inf:
        left, right = entry.slope_limits
        return weight_scale**2 * (left * left + right * right) / 2
    return weight_scale**2 * derivative_moment(entry, q_star)


def layernorm_factor(activation, weight_scale: float, bias_scale: float) -> float:
    """Delta factor with LayerNorm before the activation (unit-variance pre-activations):
    sigma_w sqrt(E[phi'(z)^2]) / s with s^2 = sigma_w^2 E[phi(z)^2] + sigma_b^2, z ~ N(0, 1)."""
    s2 = weight_scale**2 * second_moment(activation, 1.0) + bias_scale**2
    return weight_scale * math.sqrt(derivative_moment(activation, 1.0) / s2)


@functools.lru_cache(maxsize=256)
def _batchnorm_rate(entry: Activation, batch_size: int) -> float:
    """``batch_coupled_rate`` of an activation entry (cached: sweeps ask for it once per run)."""
    return batch_coupled_rate(entry.phi, entry.derivative, batch_size)


def batchnorm_factor(activation, batch_size: int | None) -> tuple[float, str]:
    """Delta factor at initialization with BatchNorm before the activation (Yang et al. 2019,
    arXiv:1902.08129), independent of sigma_w and sigma_b, and how it was obtained.

    Linear networks: squared factor (B - 2) / (B - 3), exact. Other activations: the square
    root of ``batch_coupled_rate`` at batch size B; without a batch size, the large-batch limit
    sqrt(E[phi'(z)^2] / Var[phi(z)]), z ~ N(0, 1)."""
    entry = activation_entry(activation)
    if entry.name == "linear":
        if batch_size is None:
            return 1.0, "BatchNorm, infinite batch: squared factor 1"
        return math.sqrt((batch_size - 2) / (batch_size - 3)), "BatchNorm, linear: (B-2)/(B-3)"
    if batch_size is None:
        large = derivative_moment(activation, 1.0) / variance(activation, 1.0)
        return math.sqrt(large), "BatchNorm, large batch: E[phi'^2]/Var[phi]"
    return math.sqrt(_batchnorm_rate(entry, batch_size)), (
        f"BatchNorm: finite-batch rate of the batch-coupled backward map at B={batch_size}"
    )


def _root_log(function: Callable[[float], float], low: float, high: float) -> float | None:
    """Root of a function rising through 0 on [low, high], in log space; None if none.

    Illinois regula falsi: bracketing like bisection, but superlinear (about 10 evaluations)."""
    x_low, x_high = math.log(low), math.log(high)
    f_low, f_high = function(low), function(high)
    if f_low > 0 or f_high < 0:
        return None
    if f_low == 0 or f_high == 0:
        return low if f_low == 0 else high
    x, side = x_low, 0
    for _ in range(200):
        if f_high == f_low:
            break
        x = (x_low * f_high - x_high * f_low) / (f_high - f_low)
        value = function(math.exp(x))
        if value == 0:
            return math.exp(x)
        if value < 0:
            x_low, f_low = x, value
            if side == -1:
                f_high /= 2
            side = -1
        else:
            x_high, f_high = x, value
            if side == 1:
                f_low /= 2
            side = 1
        if x_high - x_low < 1e-13:
            break
    return math.exp(x)


def critical_weight_scale(
    activation, bias_scale: float = 0.0, norm: str = "none", q0: float = 1.0, dropout: float = 0.0
) -> float | None:
    """The sigma_w where the predicted factor is 1 (chi_1 = 1), or None if there is none
    (``critical_scale_note`` says why). With dropout p every map but the correlation map sees
    sigma_w^2 / (1 - p): the critical sigma_w is sqrt(1 - p) times the one for sigma_w / (1 - p)
    (and q0 (1 - p), so that the first layer's q is unchanged)."""
    keep = 1 - dropout
    scale = _critical(activation, bias_scale, norm, q0 * keep)[0]
    return None if scale is None else scale * math.sqrt(keep)


def critical_scale_note(
    activation, bias_scale: float = 0.0, norm: str = "none", q0: float = 1.0, dropout: float = 0.0
) -> str | None:
    """Why there is no critical weight scale, in one phrase (None when there is one)."""
    return _critical(activation, bias_scale, norm, q0 * (1 - dropout))[1]


_JUMP = 1e-3  # chi_1 changing by more than this across 1e-9 of sigma_w is a jump


@functools.lru_cache(maxsize=256)  # sweeps ask once per point with the same q0
def _critical(activation, bias_scale, norm, q0) -> tuple[float | None, str | None]:
    entry = activation_entry(activation)
    if norm == "batch":
        return None, "M does not depend on it"
    if norm == "layer":
        if bias_scale == 0:  # M = sqrt(E[phi'^2] / E[phi^2]) whatever sigma_w is
            factor = layernorm_factor(entry, 1.0, 0.0)
            return None, f"M = {factor:.4g} whatever sigma_w is, when sigma_b = 0"
        scale = _root_log(lambda scale: layernorm_factor(entry, scale, bias_scale) - 1, 1e-3, 1e4)
        return scale, None if scale is not None else "M never reaches 1"
    if entry.homogeneous is not None:  # chi_1 = sigma_w^2 E[phi'^2], a constant times sigma_w^2
        return math.sqrt(1 / entry.homogeneous[2]), None
    scale = _root_log(lambda scale: chi_1(entry, scale, bias_scale, q0) - 1, 1e-3, 1e4)
    if scale is None:
        return None, "chi_1 never reaches 1"
    below = chi_1(entry, scale * (1 - 1e-9), bias_scale, q0)
    above = chi_1(entry, scale * (1 + 1e-9), bias_scale, q0)
    if abs(above - below) > _JUMP:
        return None, (
            f"chi_1 jumps across 1 ({below:.3g} to {above:.3g}) at sigma_w = {scale:.4g}: "
            "the reached fixed point q* jumps there"
        )
    return scale, None


@dataclass(frozen=True)
class Prediction:
    """What mean-field theory says about one network at initialization."""

    activation: str
    weight_scale: float
    bias_scale: float
    norm: str
    q0: float
    q_star: float | None  # fixed point of the pre-activation second moment (None: no norm-free q)
    chi_1: float | None  # squared per-layer delta factor
    factor: float | None  # predicted per-layer delta factor M = sqrt(chi_1)
    regime: str
    critical_weight_scale: float | None
    applicable: bool
    reason: str  # what the prediction rests on, or why there is none
    dropout: float = 0.0  # probability of dropping a unit of each hidden layer's output
    # depth scales (gradlab.theory_depth), in layers; None where theory cannot say (see notes)
    xi_grad: float | None = None  # the squared gradient changes by e over xi_grad layers
    gradient_toward_input: str = "unknown"  # "shrinks", "grows" or "constant"
    xi_q: float | None = None  # how fast q^l reaches q*
    c_star: float | None = None  # stable fixed point of the correlation map
    chi_c: float | None = None  # slope of the correlation map at c*
    xi_c: float | None = None  # correlations reach c* over xi_c layers
    notes: dict[str, str] = field(default_factory=dict)  # why a value is None (inf included)

    def to_dict(self) -> dict:
        """JSON-safe: non-finite floats become None; an infinite one gets a note."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, float) and not math.isfinite(value):
                if value == math.inf:
                    data["notes"].setdefault(key, "infinite")
                data[key] = None
        return data


def predict(
    activation: str,
    weight_scale: float,
    bias_scale: float = 0.0,
    *,
    norm: str = "none",
    q0: float = 1.0,
    batch_size: int | None = None,
    tol: float = 0.05,
    leaky_slope: float = 0.01,
    dropout: float = 0.0,
    depth_scales: bool = True,
) -> Prediction:
    """Predicted per-layer delta factor, regime, critical weight scale and (``depth_scales``)
    the depth scales at initialization (``leaky_slope``: leaky_relu's negative slope;
    ``dropout``: inverted dropout of that probability on each hidden layer's output, which
    makes the length map and chi_1 see sigma_w^2 / (1 - p))."""
    from gradlab.theory_depth import prediction_depth_scales  # (that module builds on this one)

    entry = activation_entry(activation, leaky_slope)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), not {dropout!r}")
    keep = 1 - dropout
    effective = weight_scale / math.sqrt(keep)
    common = {
        "activation": activation,
        "weight_scale": float(weight_scale),
        "bias_scale": float(bias_scale),
        "norm": norm,
        "q0": float(q0),
        "critical_weight_scale": critical_weight_scale(entry, bias_scale, norm, q0, dropout),
        "dropout": float(dropout),
    }
    absent = None
    if norm == "batch" and batch_size is not None and batch_size <= 3:
        absent = f"BatchNorm theory needs a batch of at least 4, not {batch_size}"
    elif norm == "batch" and dropout > 0:
        absent = "BatchNorm theory does not cover dropout"
    if absent is not None:
        return Prediction(
            **common,
            q_star=None,
            chi_1=None,
            factor=None,
            regime="unknown",
            applicable=False,
            reason=absent,
            notes=dict.fromkeys(("xi_grad", "xi_q", "c_star", "chi_c", "xi_c"), absent),
        )
    if norm in ("batch", "layer"):  # normalized pre-activations: q = 1 by construction
        if norm == "batch":
            factor, reason = batchnorm_factor(entry, batch_size)
        else:
            factor = layernorm_factor(entry, effective, bias_scale)
            reason = "LayerNorm: sigma_w sqrt(E[phi'(z)^2]) / s, unit-variance pre-activations"
        q_star, chi = 1.0, factor**2
    else:
        chi = chi_1(entry, effective, bias_scale, q0 * keep)
        factor = math.sqrt(chi)
        q_star = fixed_point(entry, effective, bias_scale, q0 * keep)
        reason = "mean-field: M = sqrt(chi_1) at the fixed point q*"
    scales = {}
    if depth_scales:
        scales = prediction_depth_scales(entry, weight_scale, bias_scale, norm, chi, dropout, q0)
    return Prediction(
        **common,
        q_star=q_star,
        chi_1=chi,
        factor=factor,
        regime=regime_of(factor, tol),
        applicable=True,
        reason=reason,
        **scales,
    )


def predicted_factor_grid(
    activation: str,
    weight_scales,
    bias_scale: float = 0.0,
    *,
    norm: str = "none",
    q0: float = 1.0,
    batch_size: int | None = None,
) -> np.ndarray:
    """Predicted factor M for each weight scale (NaN where theory does not apply)."""
    values = []
    for scale in weight_scales:
        factor = predict(
            activation,
            scale,
            bias_scale,
            norm=norm,
            q0=q0,
            batch_size=batch_size,
            depth_scales=False,
        ).factor
        values.append(math.nan if factor is None else factor)
    return np.asarray(values, dtype=np.float64)
