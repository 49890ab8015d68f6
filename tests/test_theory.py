"""Mean-field theory: facts that follow from the formulas, and agreement with the engine."""

import math

import numpy as np
import pytest

from gradlab import analysis, theory
from gradlab.engine import MLP, get_loss


def _reference_expectation(function, q, points=400_001):
    """E[f(u)], u ~ N(0, q), by a much finer midpoint sum than the library uses."""
    std = math.sqrt(q)
    edges = np.linspace(-12 * std, 12 * std, points + 1)
    u = 0.5 * (edges[1:] + edges[:-1])
    density = np.exp(-0.5 * (u / std) ** 2) / (std * math.sqrt(2 * math.pi))
    return float(np.sum(function(u) * density) * (edges[1] - edges[0]))


@pytest.mark.parametrize("q", [1e-3, 0.3, 1.0, 25.0, 100.0])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_gaussian_expectations_are_accurate_to_1e_8_up_to_q_100(activation, q):
    phi, derivative = theory.phi_and_derivative(activation)
    assert theory.second_moment(activation, q) == pytest.approx(
        _reference_expectation(lambda u: phi(u) ** 2, q), abs=1e-8
    )
    assert theory.derivative_moment(activation, q) == pytest.approx(
        _reference_expectation(lambda u: derivative(u) ** 2, q), rel=1e-8
    )


def test_expectation_of_polynomials_is_exact():
    for q in (1e-4, 1.0, 100.0):
        assert theory.gaussian_expectation(lambda u: u**2, q) == pytest.approx(q, rel=1e-12)
        assert theory.gaussian_expectation(lambda u: u**4, q) == pytest.approx(3 * q**2, rel=1e-12)


@pytest.mark.parametrize("weight_scale", [0.5, 1.0, 1.3])
def test_relu_closed_form(weight_scale):
    assert theory.chi_1("relu", weight_scale, 0.2) == weight_scale**2 / 2
    assert theory.predict("relu", weight_scale, 0.2).factor == pytest.approx(weight_scale / 2**0.5)
    assert theory.critical_weight_scale("relu") == pytest.approx(math.sqrt(2))
    # below criticality the length map has the fixed point sigma_b^2 / (1 - sigma_w^2 / 2)
    assert theory.fixed_point("relu", 1.0, 0.2) == pytest.approx(0.04 / 0.5)


def test_relu_and_linear_fixed_point_is_infinite_past_criticality():
    assert theory.fixed_point("relu", 2.0, 0.1) == math.inf
    assert theory.fixed_point("linear", 1.5, 0.0) == math.inf
    assert theory.predict("relu", 2.0, 0.1).to_dict()["q_star"] is None


def test_tanh_without_bias_is_critical_at_weight_scale_1():
    assert theory.critical_weight_scale("tanh", 0.0) == pytest.approx(1.0, rel=1e-6)
    assert theory.chi_1("tanh", 0.9, 0.0) == pytest.approx(0.81, rel=1e-12)  # q* = 0
    assert theory.predict("tanh", 0.9, 0.0).regime == "vanishing"
    assert theory.predict("tanh", 1.0, 0.0).regime == "stable"


@pytest.mark.parametrize(
    ("weight_scale", "bias_scale"), [(1.0, 0.0), (4.0, 0.5), (10.0, 0.0), (16.0, 2.0)]
)
def test_sigmoid_network_equals_rescaled_tanh_network(weight_scale, bias_scale):
    """sigmoid(x) = (1 + tanh(x / 2)) / 2: a sigmoid net with (sigma_w, sigma_b) is a tanh net
    with (sigma_w / 4, sqrt(sigma_w^2 / 16 + sigma_b^2 / 4)) -- the sigmoid's mean of 1/2 acts as
    an extra random bias."""
    tanh_weight = weight_scale / 4
    tanh_bias = math.sqrt(weight_scale**2 / 16 + bias_scale**2 / 4)
    assert theory.chi_1("sigmoid", weight_scale, bias_scale) == pytest.approx(
        theory.chi_1("tanh", tanh_weight, tanh_bias), rel=1e-10
    )
    assert theory.fixed_point("sigmoid", weight_scale, bias_scale) / 4 == pytest.approx(
        theory.fixed_point("tanh", tanh_weight, tanh_bias), rel=1e-10
    )


def test_sigmoid_critical_weight_scale_is_about_10_not_4():
    critical = theory.critical_weight_scale("sigmoid", 0.0)
    assert critical == pytest.approx(10.149, abs=5e-3)
    assert theory.chi_1("sigmoid", critical, 0.0) == pytest.approx(1.0, rel=1e-9)
    assert theory.predict("sigmoid", 4.0, 0.0).regime == "vanishing"
    assert theory.predict("sigmoid", 14.0, 0.0).regime == "exploding"


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "linear"])
def test_layernorm_without_bias_has_no_critical_weight_scale(activation):
    """With LayerNorm and sigma_b = 0, M = sqrt(E[phi'^2] / E[phi^2]) for every sigma_w: no
    single sigma_w is critical (relu's M is 1 everywhere, which once read as sigma_w = 0.001,
    the search's lower end)."""
    factors = {theory.layernorm_factor(activation, scale, 0.0) for scale in (0.01, 1.0, 30.0)}
    assert max(factors) - min(factors) < 1e-12
    assert theory.critical_weight_scale(activation, 0.0, "layer") is None
    note = theory.critical_scale_note(activation, 0.0, "layer")
    assert note == f"M = {min(factors):.4g} whatever sigma_w is, when sigma_b = 0"


def test_layernorm_with_bias_still_searches_for_the_critical_weight_scale():
    critical = theory.critical_weight_scale("tanh", 0.5, "layer")
    assert theory.layernorm_factor("tanh", critical, 0.5) == pytest.approx(1.0, rel=1e-9)


def test_fixed_point_is_a_fixed_point_of_the_length_map():
    for activation, weight_scale, bias_scale in [
        ("sigmoid", 10, 0),
        ("tanh", 1.01, 0),
        ("tanh", 3, 1),
    ]:
        q_star = theory.fixed_point(activation, weight_scale, bias_scale)
        assert q_star > 0
        assert theory.q_map(activation, weight_scale, bias_scale, q_star) == pytest.approx(
            q_star, rel=1e-11
        )


@pytest.mark.parametrize("batch_size", [4, 8, 64, 1000])
def test_linear_batchnorm_factor(batch_size):
    prediction = theory.predict("linear", 3.0, 0.5, norm="batch", batch_size=batch_size)
    assert prediction.chi_1 == pytest.approx((batch_size - 2) / (batch_size - 3), rel=1e-12)
    assert prediction.critical_weight_scale is None


def test_batchnorm_large_batch_limit_and_small_batch_is_not_applicable():
    large = theory.predict("tanh", 1.0, norm="batch").chi_1
    expected = theory.derivative_moment("tanh", 1.0) / theory.variance("tanh", 1.0)
    assert large == pytest.approx(expected, rel=1e-12)
    assert large > 1  # BatchNorm makes gradients explode with depth (Yang et al. 2019)
    small = theory.predict("sigmoid", 1.0, norm="batch", batch_size=3)
    assert small.applicable is False and "at least 4" in small.reason
    assert small.to_dict()["factor"] is None


def test_layernorm_factor_formula():
    weight_scale, bias_scale = 2.0, 0.5
    s2 = weight_scale**2 * theory.second_moment("tanh", 1.0) + bias_scale**2
    expected = weight_scale * math.sqrt(theory.derivative_moment("tanh", 1.0) / s2)
    prediction = theory.predict("tanh", weight_scale, bias_scale, norm="layer")
    assert prediction.factor == pytest.approx(expected, rel=1e-14)
    # with sigma_b = 0 the weight scale cancels: LayerNorm's factor is sqrt(E[phi'^2] / E[phi^2])
    assert theory.predict("sigmoid", 1.0, norm="layer").factor == pytest.approx(
        theory.predict("sigmoid", 8.0, norm="layer").factor, rel=1e-12
    )


def test_prediction_is_json_safe_and_validates_names():
    data = theory.predict("sigmoid", 4.0).to_dict()
    assert data["regime"] == "vanishing" and data["applicable"] is True
    notes = data.pop("notes")  # why a value is None: {key: reason}
    assert all(isinstance(key, str) and isinstance(why, str) for key, why in notes.items())
    assert all(value is None or isinstance(value, str | float | bool) for value in data.values())
    with pytest.raises(ValueError, match="activation must be one of"):
        theory.predict("swish", 1.0)
    with pytest.raises(ValueError, match="norm must be one of"):
        theory.predict("tanh", 1.0, norm="group")


def test_regime_of():
    assert [theory.regime_of(m) for m in (0.9, 0.96, 1.04, 1.2)] == [
        "vanishing",
        "stable",
        "stable",
        "exploding",
    ]
    assert theory.regime_of(math.inf) == "exploding" and theory.regime_of(math.nan) == "unknown"


def test_predicted_factor_grid_matches_predict():
    scales = [1.0, 4.0, 10.0]
    grid = theory.predicted_factor_grid("sigmoid", scales)
    assert grid == pytest.approx([theory.predict("sigmoid", s).factor for s in scales], rel=0)
    assert np.isnan(theory.predicted_factor_grid("linear", [1.0], norm="batch", batch_size=2)[0])


def _measured_delta_factor(activation, weight_scale, bias_scale, norm):
    rng = np.random.default_rng(0)
    width, depth, batch = 512, 40, 128
    model = MLP(
        input_dim=width,
        output_dim=1,
        depth=depth,
        width=width,
        activation=activation,
        norm=norm,
        weight_scale=weight_scale,
        bias_scale=bias_scale,
        rng=rng,
    )
    x = rng.standard_normal((batch, width))  # q0 = 1
    _, dlogits = get_loss("mse")(model.forward(x, train=True), rng.standard_normal((batch, 1)))
    model.backward(dlogits)
    return analysis.fit_factor([np.linalg.norm(delta) for delta in model.deltas()], 0.15).factor


@pytest.mark.parametrize(
    ("activation", "weight_scale", "bias_scale", "norm"),
    [
        ("sigmoid", 4.0, 0.0, "none"),
        ("sigmoid", 10.149, 0.0, "none"),
        ("tanh", 1.5, 0.3, "none"),
        ("relu", 1.2, 0.1, "none"),
        ("sigmoid", 4.0, 0.0, "layer"),
        ("sigmoid", 4.0, 0.0, "batch"),
    ],
)
def test_engine_delta_factor_at_init_agrees_with_theory(activation, weight_scale, bias_scale, norm):
    measured = _measured_delta_factor(activation, weight_scale, bias_scale, norm)
    predicted = theory.predict(activation, weight_scale, bias_scale, norm=norm, batch_size=128)
    assert measured == pytest.approx(predicted.factor, rel=0.02)
