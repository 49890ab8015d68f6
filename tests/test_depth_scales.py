"""Depth scales (xi_grad, xi_q, c*, xi_c) against numbers computed independently here: the
ordered-phase identity, closed forms for relu and erf, and a simulation of a wide network."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from gradlab import analysis, theory, theory_depth
from gradlab.cli import cli
from gradlab.engine import MLP, get_loss


def _bisect(function, low, high, steps=200):
    """Root of a function with opposite signs at low and high, by plain bisection."""
    f_low = function(low)
    for _ in range(steps):
        middle = (low + high) / 2
        if (function(middle) > 0) == (f_low > 0):
            low, f_low = middle, function(middle)
        else:
            high = middle
    return (low + high) / 2


@pytest.mark.parametrize(
    ("activation", "weight_scale", "bias_scale"),
    [("tanh", 0.8, 0.1), ("sigmoid", 4.0, 0.0), ("erf", 0.8, 0.05), ("softplus", 0.9, 0.2)],
)
def test_ordered_phase_has_c_star_1_and_xi_c_equal_to_xi_grad(activation, weight_scale, bias_scale):
    scales = theory_depth.depth_scales(activation, weight_scale, bias_scale)
    chi_1 = theory.chi_1(activation, weight_scale, bias_scale)
    assert chi_1 < 1
    assert scales.c_star == 1.0
    assert scales.xi_grad == pytest.approx(-1 / math.log(chi_1), rel=1e-12)
    # chi_c comes from the two-input quadrature at c = 1, chi_1 from the one-input one
    assert scales.xi_c == pytest.approx(scales.xi_grad, rel=1e-9)
    assert scales.gradient_toward_input == "shrinks"


def _relu_kernel(c):
    """E[relu(u1) relu(u2)] / q and E[relu'(u1) relu'(u2)] at correlation c (arc-cosine)."""
    angle = math.acos(c)
    return (math.sin(angle) + (math.pi - angle) * c) / (2 * math.pi), (math.pi - angle) / (
        2 * math.pi
    )


def test_relu_depth_scales_in_closed_form():
    weight_scale, bias_scale = 1.2, 0.1
    scales = theory_depth.depth_scales("relu", weight_scale, bias_scale)
    chi_1 = weight_scale**2 / 2  # the length map is linear: its slope is chi_1 too
    assert scales.xi_grad == pytest.approx(-1 / math.log(chi_1), rel=1e-12)
    assert scales.xi_q == pytest.approx(-1 / math.log(chi_1), rel=1e-12)
    assert scales.c_star == 1.0 and scales.xi_c == pytest.approx(scales.xi_grad, rel=1e-12)


def test_relu_with_dropout_in_closed_form():
    weight_scale, bias_scale, dropout = 1.0, 0.3, 0.2
    keep = 1 - dropout
    sw2, sb2 = weight_scale**2, bias_scale**2
    q_star = sb2 / (1 - sw2 / (2 * keep))
    c_star = _bisect(lambda c: (sw2 * q_star * _relu_kernel(c)[0] + sb2) / q_star - c, 0.0, 1.0)
    chi_c = sw2 * _relu_kernel(c_star)[1]
    scales = theory_depth.depth_scales("relu", weight_scale, bias_scale, dropout=dropout)
    assert scales.q_star == pytest.approx(q_star, rel=1e-12)
    assert scales.chi_1 == pytest.approx(sw2 / (2 * keep), rel=1e-12)
    assert scales.c_star == pytest.approx(c_star, abs=1e-10)
    assert scales.xi_c == pytest.approx(-1 / math.log(chi_c), rel=1e-8)


def test_relu_correlation_closed_form_matches_a_fine_grid():
    """The arc-cosine kernels the library uses, against a 2000 x 2000 midpoint sum."""
    q, c = 2.0, 0.3
    z = np.linspace(-8, 8, 2001)
    z = (z[1:] + z[:-1]) / 2
    weight = np.exp(-(z**2) / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    u1 = math.sqrt(q) * z[:, None]
    u2 = math.sqrt(q) * (c * z[:, None] + math.sqrt(1 - c * c) * z[None, :])
    product = weight @ (np.maximum(u1, 0) * np.maximum(u2, 0)) @ weight
    derivative = weight @ ((u1 > 0) * (u2 > 0)) @ weight
    closed = theory_depth.correlation_moments("relu", q, c)
    assert closed[0] == pytest.approx(product, rel=1e-5)
    assert closed[1] == pytest.approx(derivative, rel=1e-3)  # the grid cuts the kinks


def _erf_depth_scales(weight_scale, bias_scale, dropout=0.0):
    """q*, chi_1, xi_q, c*, xi_c of an erf network from the closed forms (neural-tangents
    ``stax.Erf``): E[erf(u1) erf(u2)] = (2/pi) asin(2 q12 / (1 + 2 q)), E[erf'(u1) erf'(u2)]
    = (4/pi) / sqrt((1 + 2q)^2 - 4 q12^2)."""
    keep = 1 - dropout
    sw2, sb2 = weight_scale**2, bias_scale**2

    def q_map(q):
        return sw2 / keep * (2 / math.pi) * math.asin(2 * q / (1 + 2 * q)) + sb2

    q = _bisect(lambda q: q_map(q) - q, 1e-12, sw2 / keep + sb2)
    chi_1 = sw2 / keep * (4 / math.pi) / math.sqrt(1 + 4 * q)
    slope = sw2 / keep * 4 / (math.pi * (1 + 2 * q) * math.sqrt(1 + 4 * q))  # dq_map/dq

    def c_map(c):
        return (sw2 * (2 / math.pi) * math.asin(2 * q * c / (1 + 2 * q)) + sb2) / q

    high = 1.0 if dropout else 1 - 1e-9  # without dropout c = 1 is a fixed point too
    c_star = _bisect(lambda c: c_map(c) - c, 0.0, high)
    chi_c = sw2 * (4 / math.pi) / math.sqrt((1 + 2 * q) ** 2 - 4 * (q * c_star) ** 2)
    return q, chi_1, -1 / math.log(slope), c_star, -1 / math.log(chi_c)


@pytest.mark.parametrize(
    ("weight_scale", "bias_scale", "dropout"), [(2.0, 0.3, 0.0), (1.0, 0.2, 0.1), (0.7, 0.1, 0.3)]
)
def test_erf_depth_scales_match_the_closed_forms(weight_scale, bias_scale, dropout):
    q_star, chi_1, xi_q, c_star, xi_c = _erf_depth_scales(weight_scale, bias_scale, dropout)
    scales = theory_depth.depth_scales("erf", weight_scale, bias_scale, dropout=dropout)
    assert scales.q_star == pytest.approx(q_star, rel=1e-10)
    assert scales.chi_1 == pytest.approx(chi_1, rel=1e-10)
    assert scales.xi_q == pytest.approx(xi_q, rel=1e-8)
    assert scales.c_star == pytest.approx(c_star, abs=1e-9)
    assert c_star < 1
    assert scales.xi_c == pytest.approx(xi_c, rel=1e-7)


def test_criticality_gives_infinite_depth_scales_written_as_null_with_a_note():
    prediction = theory.predict("tanh", 1.0, 0.0)  # q* = 0 and chi_1 = phi'(0)^2 = 1 exactly
    assert prediction.xi_grad == math.inf and prediction.xi_c == math.inf
    data = prediction.to_dict()
    assert data["xi_grad"] is None and data["xi_c"] is None and data["xi_q"] is None
    assert data["notes"]["xi_grad"].startswith("infinite")
    assert data["notes"]["xi_q"].startswith("infinite")
    json.dumps(data, allow_nan=False)


def test_past_relu_criticality_q_has_no_fixed_point_and_the_scales_say_so():
    data = theory.predict("relu", 2.0, 0.1).to_dict()
    assert data["xi_grad"] == pytest.approx(1 / math.log(2.0))
    assert data["gradient_toward_input"] == "grows"
    for key in ("xi_q", "c_star", "xi_c"):
        assert data[key] is None and "no fixed point" in data["notes"][key]


def test_dropout_destroys_the_critical_point():
    critical = theory.critical_weight_scale("tanh", 0.05)
    assert theory_depth.depth_scales("tanh", critical, 0.05).xi_c > 1e4  # ~ critical
    for weight_scale in [0.5, 1.0, critical, 1.5, 2.5, 4.0]:
        scales = theory_depth.depth_scales("tanh", weight_scale, 0.05, dropout=0.1)
        assert scales.c_star < 1
        assert 0 < scales.xi_c < 100
        # the length map sees sigma_w^2 / (1 - p)
        q = scales.q_star
        expected = weight_scale**2 / 0.9 * theory.second_moment("tanh", q) + 0.05**2
        assert q == pytest.approx(expected, rel=1e-10)


def test_dropout_scales_the_critical_weight_scale_by_sqrt_keep():
    assert theory.critical_weight_scale("relu", dropout=0.5) == pytest.approx(1.0, rel=1e-12)
    assert theory.predict("relu", 1.0, dropout=0.5).chi_1 == pytest.approx(1.0, rel=1e-12)
    assert theory.predict("tanh", 1.0, norm="batch", dropout=0.1).applicable is False


def test_engine_delta_factor_with_dropout_agrees_with_theory():
    """The measured per-layer delta factor of a training-mode pass with dropout p is
    sqrt(chi_1) with sigma_w^2 / (1 - p)."""
    rng = np.random.default_rng(0)
    width, depth, batch = 256, 30, 64
    weight_scale, bias_scale, dropout = 1.1, 0.1, 0.2
    model = MLP(
        width, 1, depth, width, "tanh", weight_scale=weight_scale, bias_scale=bias_scale,
        rng=rng, dropout=dropout,
    )  # fmt: skip
    x = rng.standard_normal((batch, width))
    _, dlogits = get_loss("mse")(model.forward(x, train=True), rng.standard_normal((batch, 1)))
    model.backward(dlogits)
    norms = [np.linalg.norm(delta) for delta in model.deltas()]
    measured = analysis.fit_factor(norms, 0.15).factor
    predicted = math.sqrt(theory_depth.depth_scales("tanh", 1.1, 0.1, dropout=dropout).chi_1)
    assert measured == pytest.approx(predicted, rel=0.02)
    assert predicted > math.sqrt(theory.chi_1("tanh", weight_scale, bias_scale)) * 1.02


@pytest.mark.slow
def test_correlations_of_a_wide_chaotic_network_decay_to_c_star_at_rate_1_over_xi_c():
    """16 pairs of inputs (correlation 0.6) through a tanh network of width 3000 (sigma_w = 2,
    sigma_b = 0.3: chaotic, c* = 0.26, xi_c = 6.6): the mean correlation of their
    pre-activations follows the correlation map down to c*, where the map shrinks |c - c*|
    like exp(-l / xi_c). (Finite width adds noise of about 0.01 here, too much to fit the
    rate on the network itself; narrower networks settle measurably above c*: at width 250 near
    0.32, at width 1000 near 0.28.)"""
    weight_scale, bias_scale, width, depth, pairs, seeds = 2.0, 0.3, 3000, 20, 16, 1
    scales = theory_depth.depth_scales("tanh", weight_scale, bias_scale)
    measured = np.zeros(depth)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((2, pairs, width))
        h = np.concatenate([z[0], 0.6 * z[0] + 0.8 * z[1]])  # 2 pairs, width
        h *= math.sqrt(scales.q_star / np.mean(h * h))
        for layer in range(depth):
            weight = rng.standard_normal((width, width)) * (weight_scale / math.sqrt(width))
            h = np.tanh(h) @ weight + bias_scale * rng.standard_normal(width)
            first, second = h[:pairs], h[pairs:]
            cosine = np.sum(first * second, axis=1) / np.sqrt(
                np.sum(first * first, axis=1) * np.sum(second * second, axis=1)
            )
            measured[layer] += np.mean(cosine) / seeds
    predicted = [0.6]
    for _ in range(depth):
        map_value = theory_depth.correlation_map(
            "tanh", weight_scale, bias_scale, scales.q_star, predicted[-1]
        )
        predicted.append(map_value)
    predicted = np.asarray(predicted[1:])
    np.testing.assert_allclose(measured, predicted, atol=0.02)
    assert abs(measured[-1] - scales.c_star) < 0.04
    # near c* the map (which the network follows) shrinks |c - c*| by exp(-1 / xi_c) a layer
    c = scales.c_star + 1e-6
    rate = (theory_depth.correlation_map("tanh", 2.0, 0.3, scales.q_star, c) - scales.c_star) / 1e-6
    assert rate == pytest.approx(math.exp(-1 / scales.xi_c), rel=1e-4)


def _invoke(*args):
    return CliRunner().invoke(cli, ["theory", *map(str, args)], catch_exceptions=False)


def test_theory_json_has_the_keys_and_nulls_for_infinities():
    result = _invoke("--activation", "tanh", "--weight-scale", "1.3", "--bias-scale", "0.05",
                     "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    keys = {"q_star", "chi_1", "M", "regime", "critical_weight_scale", "xi_grad", "xi_q"}
    assert keys | {"xi_c", "c_star"} <= set(data)
    prediction = theory.predict("tanh", 1.3, 0.05)
    assert data["M"] == prediction.factor and data["xi_c"] == prediction.xi_c
    assert data["c_star"] < 1 and data["regime"] == prediction.regime
    critical = json.loads(_invoke("--activation", "tanh", "--weight-scale", "1", "--format",
                                  "json").output)  # fmt: skip
    assert critical["xi_grad"] is None and "infinite" in critical["notes"]["xi_grad"]


def test_theory_text_prints_depth_scales_inf_and_dropout():
    text = _invoke("--activation", "tanh", "--weight-scale", "1").output
    assert "xi_grad                inf (infinite: chi_1 = 1" in text
    assert "c*                     1\n" in text
    text = _invoke("--activation", "tanh", "--weight-scale", "1", "--dropout", "0.1").output
    assert "dropout=0.1" in text.splitlines()[0]
    assert "(the squared gradient grows toward the input)" in text


def test_critical_line():
    result = _invoke("--activation", "relu", "--critical-line", "--bias-scales", "0,0.05,0.3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[1] for line in lines[2:]] == ["1.41421"] * 3
    result = _invoke(
        "--activation", "erf", "--critical-line", "--bias-scales", "0,0.05,0.3", "--format", "json"
    )
    line = json.loads(result.output)["critical_line"]
    assert [row["bias_scale"] for row in line] == [0, 0.05, 0.3]
    assert line[0]["critical_weight_scale"] == pytest.approx(math.sqrt(math.pi) / 2, rel=1e-7)
    scales = [row["critical_weight_scale"] for row in line]
    assert scales == sorted(scales) and scales[2] > 1.2
    assert _invoke("--activation", "relu", "--critical-line", "--dropout", "0.5").output.endswith(
        "0           1\n"
    )  # sqrt(1 - p) times sqrt(2)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--activation", "tanh"), "--weight-scale is required (unless --critical-line)"),
        (("--critical-line", "--bias-scales", "0,x"), "--bias-scales: 'x' is not a number"),
        (("--critical-line", "--bias-scales", "0,-1"), "--bias-scale must be >= 0"),
        (("--weight-scale", "1", "--dropout", "1"), "Invalid value for '--dropout'"),
    ],
)
def test_theory_refuses_bad_depth_scale_options(args, fragment):
    result = _invoke(*args)
    assert result.exit_code == 2
    assert fragment in result.output
