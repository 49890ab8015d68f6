"""Free-probability theory of the Jacobian's singular values at initialization (numpy only).

Pennington, Schoenholz & Ganguli 2017 (arXiv:1711.04735): for J = prod_{l=1..L} D_l W_l
with the pre-activations at their fixed point q* (``theory.fixed_point``), the squared
singular values lambda = s^2 of a wide network's J have

    E[lambda]   = chi_1^L                                    chi_1 = sigma_w^2 mu_1
    Var[lambda] = L (mu_2 / mu_1^2 - 1 - s_1)               at criticality, chi_1 = 1

with mu_k = E[act'(h)^(2k)], h ~ N(0, q*), and s_1 the first coefficient of the S-transform
of W^T W / sigma_w^2: -1 for weights with i.i.d. entries (Marchenko-Pastur: normal, he and,
by universality, uniform and xavier), 0 for orthogonal weights. (The S-transform of a
product of free factors is the product of theirs, so the normalized variances
m_2 / m_1^2 - 1 of the 2L factors D_l^2 and W_l^T W_l add up.) ReLU: mu_1 = mu_2 = 1/2, so
2L for Gaussian and L for orthogonal weights; tanh near q* = 0 has mu_2 / mu_1^2 -> 1, so
orthogonal weights give Var[lambda] -> 0: dynamical isometry.

Off criticality the variance formula is not a prediction here (no number: ``var_sq`` is
None with the reason); neither is anything with LayerNorm, whose J is not a product D W.
"""

from __future__ import annotations

import math

from gradlab import theory, vocabulary

# s_1 of each init scheme's W^T W (square layers): i.i.d. entries -1, orthogonal 0
S_1 = {"normal": -1.0, "uniform": -1.0, "xavier": -1.0, "he": -1.0, "orthogonal": 0.0}
vocabulary.check_registry("init scheme (spectrum s_1)", S_1, vocabulary.INIT_SCHEMES)
# "at criticality" for L layers: the predicted mean chi_1^L within 5% of 1
CRITICAL_LOG_MEAN = 0.05
BASIS = (
    "free probability at the fixed point q* (Pennington et al. 2017): "
    "mean chi_1^L, variance L (mu_2 / mu_1^2 - 1 - s_1) at criticality"
)


def derivative_moments(activation, q: float, leaky_slope: float = 0.01) -> tuple[float, float]:
    """(mu_1, mu_2) = (E[act'(u)^2], E[act'(u)^4]) for u ~ N(0, q); for q = inf the mean of
    the slopes' limits at -inf and +inf (as ``theory.chi_1``)."""
    entry = theory.activation_entry(activation, leaky_slope)
    if entry.homogeneous is not None:
        q = 1.0  # act' of a positively homogeneous act does not depend on the scale of u
    if q == math.inf:
        left, right = entry.slope_limits
        return (left**2 + right**2) / 2, (left**4 + right**4) / 2
    fourth = theory.gaussian_expectation(lambda u: entry.derivative(u) ** 4, q, entry.kink)
    return theory.derivative_moment(entry, q), fourth


def variance_per_layer(mu_1: float, mu_2: float, init: str) -> float:
    """mu_2 / mu_1^2 - 1 - s_1: Var[lambda] / L at criticality."""
    return mu_2 / mu_1**2 - 1 - S_1[init]


def predict_spectrum(
    activation: str,
    weight_scale: float,
    bias_scale: float = 0.0,
    *,
    init: str,
    layers: int,
    norm: str = "none",
    q0: float = 1.0,
    leaky_slope: float = 0.01,
) -> dict:
    """The predicted mean and variance of lambda (``mean_sq``, ``var_sq``) of a J of ``layers``
    layer Jacobians, with chi_1, mu_1, mu_2, s_1 and ``reason``: what the numbers rest on, or
    why one is None. ``weight_scale`` is the effective sigma_w (as in ``theory.predict``)."""
    result = dict.fromkeys(("mean_sq", "var_sq", "chi_1", "mu_1", "mu_2"))
    result["s_1"] = S_1[init]
    if norm != "none":
        result["reason"] = f"no prediction with model.norm {norm}: J is not a product D W"
        return result
    entry = theory.activation_entry(activation, leaky_slope)
    try:
        q_star = theory.fixed_point(entry, weight_scale, bias_scale, q0)
        chi_1 = theory.chi_1(entry, weight_scale, bias_scale, q0)
        mu_1, mu_2 = derivative_moments(entry, q_star)
    except OverflowError:
        result["reason"] = "no prediction: sigma_w^2, sigma_b^2 or q0 overflows a float"
        return result
    result.update(chi_1=chi_1, mu_1=mu_1, mu_2=mu_2)
    log_mean = layers * math.log(chi_1) if chi_1 > 0 else -math.inf
    result["mean_sq"] = math.exp(log_mean) if log_mean < 709 else math.inf
    if abs(log_mean) > CRITICAL_LOG_MEAN:
        result["reason"] = (
            f"{BASIS}; var_sq: none, off criticality (chi_1^L = {result['mean_sq']:.4g})"
        )
    elif mu_1 == 0:
        result["reason"] = f"{BASIS}; var_sq: none, mu_1 = 0"
    else:
        result["var_sq"] = layers * variance_per_layer(mu_1, mu_2, init)
        result["reason"] = BASIS
    return result


def at_criticality(
    activation: str, bias_scale: float = 0.0, q0: float = 1.0, leaky_slope: float = 0.01
) -> dict:
    """mu_1, mu_2 and Var[lambda] per layer for Gaussian and orthogonal weights at the critical
    weight scale of (activation, sigma_b), or ``reason`` why there is none."""
    entry = theory.activation_entry(activation, leaky_slope)
    weight_scale = theory.critical_weight_scale(entry, bias_scale, "none", q0)
    if weight_scale is None:
        return {"reason": theory.critical_scale_note(entry, bias_scale, "none", q0)}
    q_star = theory.fixed_point(entry, weight_scale, bias_scale, q0)
    mu_1, mu_2 = derivative_moments(entry, q_star)
    return {
        "weight_scale": weight_scale,
        "q_star": q_star,
        "mu_1": mu_1,
        "mu_2": mu_2,
        "gaussian": variance_per_layer(mu_1, mu_2, "normal"),
        "orthogonal": variance_per_layer(mu_1, mu_2, "orthogonal"),
    }
