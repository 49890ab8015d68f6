"""Mean-field theory of residual MLPs at initialization (Yang & Schoenholz 2017,
arXiv:1712.08969), numpy only: a recursion over the blocks, not one number.

With p^l the mean square of the stream x^l (p^0 from the input Linear: sigma_w^2 q0 +
sigma_b^2), u the branch's input (x^{l-1}, or its LayerNorm with mean square 1) and
h^l = u W^l + b^l:

    q^l = sigma_w^2 E[u^2] + sigma_b^2          (E[u^2] = p^{l-1}, or 1 with pre-LayerNorm)
    p^l = p^{l-1} + sigma_v^2 E[phi(sqrt(q^l) z)^2]

and going down, one block multiplies the squared stream gradient by

    chi^l = 1 + sigma_v^2 sigma_w^2 E[phi'(sqrt(q^l) z)^2] / s

with s = 1 without a norm and s = p^{l-1} with pre-LayerNorm (its backward divides by the
stream's standard deviation). The reduced branch (V the identity) has sigma_v = 1. ReLU
without a norm: chi = 1 + sigma_v^2 sigma_w^2 / 2, exponential growth; tanh: E[phi'^2] falls
like 1/sqrt(q) while q grows linearly, so the total grows like exp(c sqrt(depth)).

Checked against simulations at width 256 (tests/test_residual_theory.py): within 1-2%
without a norm, 3-4% high with pre-LayerNorm. Where the recursion fails, there is no
prediction (measurement only): BatchNorm (its backward couples the batch), post-norm (the
LayerNorm's backward also removes the gradient's component along the stream: 9% off at 50
tanh blocks) and the reduced branch with an activation that is not odd (its mean piles up
on the stream and ties the units' slopes to W: relu 20x off at 30 blocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gradlab import theory
from gradlab.analysis import quarter_means

_Q_ASYMPTOTIC = 1e8  # beyond, an unbounded phi is its slope limits (relu-like) to ~1e-4


@dataclass(frozen=True)
class ResidualPrediction:
    """The predicted gradient profile of a residual network at initialization."""

    factors: tuple[float, ...] | None  # per block l = 1..depth: |dL/dx^{l-1}| / |dL/dx^l|
    q: tuple[float, ...] | None  # q^l, the branch pre-activations' second moment
    reason: str  # what the prediction rests on, or why there is none

    @property
    def applicable(self) -> bool:
        return self.factors is not None

    @property
    def ratio(self) -> float | None:
        """|dL/dx^0| / |dL/dx^depth|: the product of the per-block factors."""
        if self.factors is None:
            return None
        log_ratio = sum(math.log(factor) for factor in self.factors)
        return math.exp(log_ratio) if log_ratio < 709 else math.inf

    def quarter_factors(self) -> tuple[float | None, float | None]:
        """Geometric mean of the per-block factor over the first and the last quarter."""
        if self.factors is None:
            return None, None
        return quarter_means(np.log(self.factors))


def _moments(entry, q: float) -> tuple[float, float]:
    """(E[phi^2], E[phi'^2]) for u ~ N(0, q)."""
    if not entry.bounded and entry.homogeneous is None and q > _Q_ASYMPTOTIC:
        left, right = entry.slope_limits
        slope = (left * left + right * right) / 2
        return q * slope, slope
    return theory.second_moment(entry, q), theory.derivative_moment(entry, q)


def predict_residual(
    activation: str,
    weight_scale: float,
    bias_scale: float,
    depth: int,
    *,
    branch: str = "full",
    branch_scale: float = 1.0,
    norm: str = "none",
    norm_position: str = "pre",
    q0: float = 1.0,
    leaky_slope: float = 0.01,
) -> ResidualPrediction:
    """The per-block gradient factors of a residual network whose input layer sees inputs of
    mean square ``q0`` (see the module docstring); no factors, with the reason, where the
    theory does not apply."""
    entry = theory.activation_entry(activation, leaky_slope)
    if norm == "batch":
        return _no_theory(
            "no theory for BatchNorm in residual blocks (its backward couples the batch)"
        )
    if norm == "layer" and norm_position == "post":
        return _no_theory(
            "no theory for post-norm residual blocks: the LayerNorm's backward removes the "
            "gradient's component along the stream, which the recursion misses (9% off at 50 "
            "tanh blocks)"
        )
    if branch == "reduced" and not _odd(entry):
        return _no_theory(
            f"no theory for the reduced branch with {activation}: its mean piles up on the "
            "stream and ties the units' slopes to W (relu: 20x off at 30 blocks)"
        )
    sw2, sb2 = weight_scale**2, bias_scale**2
    sv2 = branch_scale**2 if branch == "full" else 1.0
    pre_norm = norm == "layer"
    mean_square = sw2 * q0 + sb2  # p^0: x^0 = x W + b
    factors, qs = [], []
    for _ in range(depth):
        q = sw2 * (1.0 if pre_norm else mean_square) + sb2
        if not math.isfinite(q):
            return _no_theory("no prediction: the stream's mean square overflows")
        second, derivative = _moments(entry, q)
        gain = sv2 * sw2 * derivative
        factors.append(math.sqrt(1.0 + (gain / mean_square if pre_norm else gain)))
        qs.append(q)
        mean_square += sv2 * second
    reason = "mean-field recursion for residual blocks (Yang & Schoenholz 2017)"
    if pre_norm:
        reason += " with pre-LayerNorm (3-4% high at width 256)"
    return ResidualPrediction(tuple(factors), tuple(qs), reason)


def _no_theory(reason: str) -> ResidualPrediction:
    return ResidualPrediction(None, None, f"{reason}: measurement only")


def _odd(entry) -> bool:
    """phi(-u) = -phi(u) (tanh, erf, linear): the branch adds no mean to the stream."""
    u = np.array([0.3, 1.1, 2.7])
    return bool(np.allclose(entry.phi(-u), -entry.phi(u), rtol=0, atol=1e-15))
