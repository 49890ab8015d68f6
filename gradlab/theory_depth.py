"""Depth scales of signal propagation (Schoenholz et al. 2017, arXiv:1611.01232), numpy only.

How many layers a signal or a gradient survives at initialization, for a plain network (no
normalization), optionally with inverted dropout of probability p (keep probability
rho = 1 - p) on each hidden layer's output:

    xi_grad = 1 / |ln chi_1|        the squared gradient changes by e every xi_grad layers
    xi_q    = -1 / ln(dq'/dq at q*)  how fast q^l reaches q*; dq'/dq = chi_1 + sigma_w^2
                                      E[phi''(u) phi(u)] / rho, taken as (sigma_w^2 / rho)
                                      E[u phi(u) phi'(u)] / q* (Stein's lemma: no phi'')
    xi_c    = -1 / ln chi_c,  chi_c = sigma_w^2 E[phi'(u1) phi'(u2)] at (q*, c*)

with (u1, u2) Gaussian, variances q*, correlation c. c* is the stable fixed point of the
correlation map c -> (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*: 1 in the ordered phase
(chi_1 <= 1, where chi_c = chi_1 and xi_c = xi_grad), below 1 in the chaotic phase. Dropout
divides sigma_w^2 by rho in the length map and in chi_1 (each sample gets its own mask, so
E[(mask / rho)^2] = 1 / rho on the diagonal) but not in the correlation map: c = 1 is then
no fixed point, c* < 1 and xi_c is finite at every weight scale.

Two-input expectations: arc-cosine kernels for relu, leaky_relu and linear; else the
trapezoid rule in rotated coordinates (accurate to ~1e-12; for elu, whose phi'' jumps at 0,
on an 8x finer grid, E[phi' phi'] to ~1e-7). A depth scale beyond ``INFINITE_DEPTH`` layers
is infinite (criticality, up to rounding); ``DepthScales.to_dict`` writes it as null with a
note, as every value theory cannot give.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from gradlab import theory

INFINITE_DEPTH = 1e9  # layers: a rate within 1e-9 of 1 is criticality up to rounding
_STEP = 0.2  # trapezoid step in u, as gradlab.theory (smooth activations)
_KINK_REFINE = 8  # a kinked activation (elu) gets an 8x finer step: its kinks cross the grid
_TRUNCATE = 9.0
_NEAR_ONE = 1e-7  # the chaotic root search's upper end: 1 - 1e-7
_CRITICAL_GRADIENT = "infinite: chi_1 = 1, the gradient keeps its size at any depth"


@dataclass(frozen=True)
class DepthScales:
    """Depth scales of one plain network at initialization (None: theory cannot say; the
    reason is in ``notes``; inf: critical)."""

    q_star: float | None
    chi_1: float | None  # squared per-layer delta factor (with dropout: sigma_w^2 / rho ...)
    xi_grad: float | None  # layers over which the squared gradient changes by e
    gradient_toward_input: str  # "shrinks", "grows" or "constant" going down the layers
    xi_q: float | None
    c_star: float | None
    chi_c: float | None  # slope of the correlation map at c*
    xi_c: float | None
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-safe: inf and nan become None, each with a note saying why."""
        data = asdict(self)
        notes = dict(self.notes)
        for key, value in data.items():
            if isinstance(value, float) and not math.isfinite(value):
                notes.setdefault(key, "infinite" if value == math.inf else "not a number")
                data[key] = None
        data["notes"] = notes
        return data


def rate_depth(rate: float | None) -> float | None:
    """-1 / ln(rate) for a rate in (0, 1), |1 / ln(rate)| above 1: the layers over which
    a quantity multiplied by ``rate`` per layer changes by e; inf within 1e-9 of 1."""
    if rate is None or not math.isfinite(rate) or rate < 0:
        return None
    if rate == 0:
        return 0.0  # gone after one layer
    log_rate = math.log(rate)
    if abs(log_rate) < 1 / INFINITE_DEPTH:
        return math.inf
    return 1 / abs(log_rate)


def gradient_direction(chi_1: float | None) -> str:
    """What happens to the squared gradient going down toward the input."""
    depth = rate_depth(chi_1)
    if depth is None:
        return "unknown"
    if depth == math.inf:
        return "constant"
    return "shrinks" if chi_1 < 1 else "grows"


def _trapezoid(std: float, refine: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of E[f(v)], v ~ N(0, std^2), by the trapezoid rule on 9 std."""
    if std == 0:
        return np.zeros(1), np.ones(1)
    step = min(_STEP, std / 4) / refine
    half = math.ceil(_TRUNCATE * std / step)
    nodes = np.arange(-half, half + 1) * step
    weights = np.exp(-0.5 * (nodes / std) ** 2) * (step / (std * math.sqrt(2 * math.pi)))
    return nodes, weights


def _pair_expectation(function, q: float, c: float, refine: int) -> float:
    """E[f(u1) f(u2)] for (u1, u2) with variances q and correlation c, in the coordinates
    u1 = a + b, u2 = a - b (a, b independent, variances q (1 + c) / 2 and q (1 - c) / 2),
    where both directions keep their own scale as c -> 1."""
    a, weights_a = _trapezoid(math.sqrt(q * (1 + c) / 2), refine)
    b, weights_b = _trapezoid(math.sqrt(max(q * (1 - c) / 2, 0.0)), refine)
    u1 = a[:, None] + b[None, :]  # (nodes_a, nodes_b)
    u2 = a[:, None] - b[None, :]
    values = function(u1) * function(u2)  # (nodes_a, nodes_b)
    # sums, not BLAS products: the same bits on every machine (summary.json stays identical)
    return float(np.sum(np.sum(values * weights_b, axis=1) * weights_a))


def correlation_moments(activation, q: float, c: float) -> tuple[float, float]:
    """(E[phi(u1) phi(u2)], E[phi'(u1) phi'(u2)]) for variances q and correlation c:
    arc-cosine kernels for positively homogeneous activations (relu, leaky_relu, linear),
    else quadrature."""
    entry = theory.activation_entry(activation)
    c = min(max(c, -1.0), 1.0)
    if entry.homogeneous is not None:  # phi(u) = relu(u) - a relu(-u), a = phi'(-inf)
        slope = entry.slope_limits[0]
        angle = math.acos(c)

        def kernel(k):  # E[relu(u1) relu(u2)] / q at correlation k (Cho & Saul 2009)
            return (math.sqrt(1 - k * k) + (math.pi - math.acos(k)) * k) / (2 * math.pi)

        product = q * ((1 + slope**2) * kernel(c) - 2 * slope * kernel(-c))
        derivative = ((1 + slope**2) * (math.pi - angle) + 2 * slope * angle) / (2 * math.pi)
        return product, derivative
    refine = _KINK_REFINE if entry.kink else 1
    return (
        _pair_expectation(entry.phi, q, c, refine),
        _pair_expectation(entry.derivative, q, c, refine),
    )


def correlation_map(activation, weight_scale, bias_scale, q_star, c) -> float:
    """One layer of the correlation map at q*: (sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2) / q*
    (sigma_w as drawn: dropout does not enter it)."""
    product, _ = correlation_moments(activation, q_star, c)
    return (weight_scale**2 * product + bias_scale**2) / q_star


def correlation_fixed_point(
    activation, weight_scale, bias_scale, q_star, chaotic: bool
) -> float | None:
    """The stable fixed point c* of the correlation map at q* (0 < q* < inf) in [0, 1): the
    map rises from c-map(0) >= 0 and meets the diagonal below 1 when c = 1 is unstable
    (``chaotic``) or no fixed point (dropout). Found in ln(1 - c), which resolves a c* near 1.
    None when the root lies within 1e-7 of 1 (the edge of chaos)."""

    def excess(c):
        return correlation_map(activation, weight_scale, bias_scale, q_star, c) - c

    near = _NEAR_ONE if chaotic else 1e-15
    if excess(1 - near) >= 0:
        return None
    if excess(0.0) <= 0:
        return 0.0  # e.g. an odd activation without bias: c-map(0) = 0
    return 1 - theory._root_log(lambda distance: excess(1 - distance), near, 1.0)


def depth_scales(
    activation,
    weight_scale: float,
    bias_scale: float = 0.0,
    *,
    dropout: float = 0.0,
    q0: float = 1.0,
    leaky_slope: float = 0.01,
) -> DepthScales:
    """xi_grad, xi_q, c* and xi_c of a plain network (see the module), e.g. for a figure of
    trainable depth over a grid of weight scales: trainable depth is about k xi_c."""
    entry = theory.activation_entry(activation, leaky_slope)
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), not {dropout!r}")
    keep = 1 - dropout
    effective = weight_scale / math.sqrt(keep)  # the length map's and chi_1's sigma_w
    q_star = theory.fixed_point(entry, effective, bias_scale, q0 * keep)
    chi_1 = theory.chi_1(entry, effective, bias_scale, q0 * keep)
    notes: dict[str, str] = {}
    xi_grad = rate_depth(chi_1)
    if xi_grad == math.inf:
        notes["xi_grad"] = _CRITICAL_GRADIENT
    elif xi_grad is None:
        notes["xi_grad"] = "chi_1 is not a finite number"
    result = {"q_star": q_star, "chi_1": chi_1, "xi_grad": xi_grad}
    result["gradient_toward_input"] = gradient_direction(chi_1)
    if q_star == math.inf:
        why = "q grows without bound: there is no fixed point q* to approach"
        for key in ("xi_q", "c_star", "chi_c", "xi_c"):
            notes[key] = why
        return DepthScales(**result, xi_q=None, c_star=None, chi_c=None, xi_c=None, notes=notes)
    result["xi_q"] = rate_depth(_length_map_slope(entry, effective, q_star))
    if result["xi_q"] == math.inf:
        notes["xi_q"] = "infinite: the length map's slope at q* is 1 (q creeps, a power law)"
    c_star, chi_c = _correlation_fixed_point(
        entry, weight_scale, bias_scale, q_star, chi_1, dropout > 0
    )
    if c_star is None and chi_c is None:
        why = "q* = 0 with dropout: the correlation map is degenerate (q decays to 0)"
        notes.update(c_star=why, chi_c=why, xi_c=why)
        return DepthScales(**result, c_star=None, chi_c=None, xi_c=None, notes=notes)
    if c_star is None:
        notes["c_star"] = f"within {_NEAR_ONE:g} of 1: at the edge of chaos"
        c_star = 1.0
    xi_c = rate_depth(chi_c)
    if xi_c == math.inf:
        notes["xi_c"] = "infinite: chi_c = 1, correlations reach c* slower than exponentially"
    return DepthScales(**result, c_star=c_star, chi_c=chi_c, xi_c=xi_c, notes=notes)


def _length_map_slope(entry, effective_scale: float, q_star: float) -> float:
    """d q^{l+1} / d q^l at q*: sigma_eff^2 E[u phi phi'] / q*, its limit
    sigma_eff^2 phi'(0)^2 at q* = 0 (phi(0) = 0 there), sigma_eff^2 E[phi^2] / q for
    positively homogeneous phi."""
    sw2 = effective_scale**2
    if entry.homogeneous is not None:
        return sw2 * entry.homogeneous[1]
    if q_star == 0:
        return sw2 * float(entry.derivative(np.zeros(1))[0]) ** 2
    moment = theory.gaussian_expectation(
        lambda u: u * entry.phi(u) * entry.derivative(u), q_star, entry.kink
    )
    return sw2 * moment / q_star


def _correlation_fixed_point(entry, weight_scale, bias_scale, q_star, chi_1, dropout: bool):
    """(c*, chi_c); (None, chi_c = 1) within 1e-7 of the edge of chaos; (None, None) where
    the correlation map is degenerate (q* = 0 with dropout)."""
    sw2 = weight_scale**2
    ordered = chi_1 <= 1
    if q_star == 0:
        # q* = 0 needs phi(0) = 0 and sigma_b = 0: ordered; c = 1 stays a fixed point
        # without dropout (chi_c = sigma_w^2 phi'(0)^2 = chi_1), degenerate with it
        return (1.0, sw2 * correlation_moments(entry, 0.0, 1.0)[1]) if not dropout else (None,) * 2
    if ordered and not dropout:
        return 1.0, sw2 * correlation_moments(entry, q_star, 1.0)[1]
    c_star = correlation_fixed_point(entry, weight_scale, bias_scale, q_star, chaotic=not dropout)
    if c_star is None:
        return None, 1.0
    return c_star, sw2 * correlation_moments(entry, q_star, c_star)[1]


def prediction_depth_scales(
    entry, weight_scale, bias_scale, norm: str, chi_1: float, dropout: float, q0: float
) -> dict:
    """The depth-scale fields of a ``theory.Prediction``: ``depth_scales`` without
    normalization; with it, only xi_grad (from the normalized network's chi_1)."""
    if norm == "none":
        scales = asdict(depth_scales(entry, weight_scale, bias_scale, dropout=dropout, q0=q0))
        del scales["q_star"], scales["chi_1"]
        return scales
    why = "the depth scales of q and c are for networks without normalization"
    notes = dict.fromkeys(("xi_q", "c_star", "chi_c", "xi_c"), why)
    xi_grad = rate_depth(chi_1)
    if xi_grad == math.inf:
        notes["xi_grad"] = _CRITICAL_GRADIENT
    return {
        "xi_grad": xi_grad,
        "gradient_toward_input": gradient_direction(chi_1),
        "xi_q": None,
        "c_star": None,
        "chi_c": None,
        "xi_c": None,
        "notes": notes,
    }
