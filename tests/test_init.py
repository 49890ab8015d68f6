"""Initializers: reproducible draws from the given Generator and the documented variances.

Statistical checks use a 400 x 500 matrix (N = 200,000 entries) and a tolerance of
Z = 5 standard errors of the estimator, derived from N (e.g. the mean of W^2 estimates the
variance with standard error sqrt((mu_4 - sigma^4) / N): sqrt(2 / N) sigma^2 = 0.32% for a
Gaussian). Seeds are fixed, so the tests are deterministic; the tolerance says how tight
they are.
"""

import math

import numpy as np
import pytest

from gradlab.engine import MLP
from gradlab.engine.init import WEIGHT_INITS, init_bias, init_weight
from gradlab.errors import GradlabError

FAN_IN, FAN_OUT = 400, 500
N = FAN_IN * FAN_OUT
Z = 5.0
GAIN = 1.5  # sigma_w != 1, so a missing or squared-twice gain shows


def _variance(scheme, fan_in, fan_out, gain):
    """The documented entry variance of each scheme."""
    return {
        "normal": gain**2 / fan_in,
        "uniform": gain**2 / fan_in,
        "xavier": gain**2 * 2.0 / (fan_in + fan_out),
        "he": gain**2 * 2.0 / fan_in,
        "orthogonal": gain**2 / max(fan_in, fan_out),
    }[scheme]


# mu_4 / sigma^4 of each scheme's entry distribution
_KURTOSIS = {"normal": 3.0, "he": 3.0, "uniform": 1.8, "xavier": 1.8}


@pytest.mark.parametrize("scheme", sorted(WEIGHT_INITS))
def test_same_seed_same_weights_different_seed_different(scheme):
    a = init_weight(scheme, np.random.default_rng(11), 30, 20, GAIN)
    b = init_weight(scheme, np.random.default_rng(11), 30, 20, GAIN)
    c = init_weight(scheme, np.random.default_rng(12), 30, 20, GAIN)
    np.testing.assert_array_equal(a, b)
    assert np.count_nonzero(a == c) == 0


@pytest.mark.parametrize("scheme", sorted(WEIGHT_INITS))
def test_draws_from_the_given_generator(scheme):
    """The generator passed in is consumed (its state advances); no global RNG is used."""
    rng = np.random.default_rng(21)
    global_state = np.random.get_state()[1].copy()  # noqa: NPY002 (checked, not used)
    init_weight(scheme, rng, 6, 4, GAIN)
    assert rng.random() != np.random.default_rng(21).random()
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)  # noqa: NPY002


@pytest.mark.parametrize("scheme, fan_in, fan_out", [("normal", 7, 5), ("he", 5, 7)])
def test_gaussian_schemes_scale_the_generators_standard_normals(scheme, fan_in, fan_out):
    std = math.sqrt(_variance(scheme, fan_in, fan_out, GAIN))
    weight = init_weight(scheme, np.random.default_rng(3), fan_in, fan_out, GAIN)
    expected = std * np.random.default_rng(3).standard_normal((fan_in, fan_out))
    np.testing.assert_allclose(weight, expected, rtol=1e-14, atol=0)


@pytest.mark.parametrize("scheme, fan_in, fan_out", [("uniform", 7, 5), ("xavier", 5, 7)])
def test_uniform_schemes_scale_the_generators_uniforms(scheme, fan_in, fan_out):
    limit = math.sqrt(3.0 * _variance(scheme, fan_in, fan_out, GAIN))  # U(-a, a): a^2 / 3
    weight = init_weight(scheme, np.random.default_rng(3), fan_in, fan_out, GAIN)
    expected = limit * (2.0 * np.random.default_rng(3).random((fan_in, fan_out)) - 1.0)
    np.testing.assert_allclose(weight, expected, rtol=0, atol=limit * 1e-14)


@pytest.mark.parametrize("scheme", sorted(_KURTOSIS))
def test_documented_variance(scheme):
    weight = init_weight(scheme, np.random.default_rng(5), FAN_IN, FAN_OUT, GAIN)
    assert weight.shape == (FAN_IN, FAN_OUT)
    assert weight.dtype == np.float64
    variance = _variance(scheme, FAN_IN, FAN_OUT, GAIN)
    kurtosis = _KURTOSIS[scheme]
    # mean 0: standard error sqrt(variance / N)
    assert abs(weight.mean()) <= Z * math.sqrt(variance / N)
    # mean of W^2 estimates the variance: standard error sqrt((kurtosis - 1) / N) variance
    squares = weight**2
    assert abs(squares.mean() - variance) <= Z * math.sqrt((kurtosis - 1.0) / N) * variance
    # the shape of the distribution: mean of W^4 / variance^2 estimates the kurtosis
    # (its standard error from the 8th moment: 105 - 3^2 for a Gaussian, 9 - 1.8^2 uniform)
    fourth = float(np.mean(squares**2)) / variance**2
    eighth_var = {3.0: 105.0 - 9.0, 1.8: 81.0 / 9.0 - 1.8**2}[kurtosis]
    assert abs(fourth - kurtosis) <= Z * math.sqrt(eighth_var / N)


@pytest.mark.parametrize("scheme", ["uniform", "xavier"])
def test_uniform_schemes_are_bounded_by_their_limit(scheme):
    weight = init_weight(scheme, np.random.default_rng(6), FAN_IN, FAN_OUT, GAIN)
    limit = math.sqrt(3.0 * _variance(scheme, FAN_IN, FAN_OUT, GAIN))
    assert np.max(np.abs(weight)) <= limit
    # N uniforms come within limit * 20 / N of the edge with probability 1 - e^-10 per side
    assert weight.max() >= limit * (1 - 20.0 / N)
    assert weight.min() <= -limit * (1 - 20.0 / N)


@pytest.mark.parametrize("fan_in, fan_out", [(50, 20), (20, 50), (30, 30)])
def test_orthogonal(fan_in, fan_out):
    weight = init_weight("orthogonal", np.random.default_rng(8), fan_in, fan_out, GAIN)
    assert weight.shape == (fan_in, fan_out)
    assert weight.dtype == np.float64
    # columns orthonormal (fan_in >= fan_out) or rows (fan_in <= fan_out), times sigma_w
    if fan_in >= fan_out:
        np.testing.assert_allclose(weight.T @ weight, GAIN**2 * np.eye(fan_out), atol=1e-13)
    if fan_in <= fan_out:
        np.testing.assert_allclose(weight @ weight.T, GAIN**2 * np.eye(fan_in), atol=1e-13)
    # so the mean of W^2 is exactly sigma_w^2 / max(fan_in, fan_out)
    expected = _variance("orthogonal", fan_in, fan_out, GAIN)
    assert float(np.mean(weight**2)) == pytest.approx(expected, rel=1e-13)
    # all singular values equal sigma_w: the linear map neither shrinks nor stretches
    singular = np.linalg.svd(weight, compute_uv=False)
    np.testing.assert_allclose(singular, GAIN, rtol=1e-13)


@pytest.mark.parametrize("fan_in, fan_out", [(40, 10), (10, 40)])
def test_orthogonal_is_haar_via_sign_fix(fan_in, fan_out):
    """With Q's columns multiplied by sign(diag R), Q's first column is the generator's first
    Gaussian column normalized (Gram-Schmidt), not its sign-flipped LAPACK version."""
    weight = init_weight("orthogonal", np.random.default_rng(9), fan_in, fan_out, GAIN)
    gaussian = np.random.default_rng(9).normal(size=(max(fan_in, fan_out), min(fan_in, fan_out)))
    first = GAIN * gaussian[:, 0] / np.linalg.norm(gaussian[:, 0])
    got = weight[:, 0] if fan_in >= fan_out else weight[0, :]
    np.testing.assert_allclose(got, first, rtol=1e-12, atol=1e-15)


def test_unknown_scheme_is_an_error():
    with pytest.raises(GradlabError, match="init scheme: 'lecun'"):
        init_weight("lecun", np.random.default_rng(0), 3, 3)


# --- biases ------------------------------------------------------------------------------


def test_bias_is_normal_with_sigma_b():
    sigma_b = 0.3
    bias = init_bias(np.random.default_rng(13), N, sigma_b)
    assert bias.shape == (N,)
    assert bias.dtype == np.float64
    assert abs(bias.mean()) <= Z * sigma_b / math.sqrt(N)
    assert abs(np.mean(bias**2) - sigma_b**2) <= Z * math.sqrt(2.0 / N) * sigma_b**2
    expected = sigma_b * np.random.default_rng(13).standard_normal(N)
    np.testing.assert_allclose(bias, expected, rtol=1e-14, atol=0)


def test_zero_bias_scale_gives_zeros_and_draws_nothing():
    rng = np.random.default_rng(14)
    bias = init_bias(rng, 17, 0.0)
    assert bias.shape == (17,)
    assert bias.dtype == np.float64
    assert not bias.any()
    assert rng.random() == np.random.default_rng(14).random()  # the state did not advance


# --- dtype through the model -------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("scheme", sorted(WEIGHT_INITS))
def test_model_casts_the_drawn_weights_to_its_dtype(scheme, dtype):
    """The MLP draws layer 1's weight then bias from its rng and stores them in ``dtype``."""
    model = MLP(
        input_dim=6,
        output_dim=2,
        depth=2,
        width=9,
        init=scheme,
        weight_scale=GAIN,
        bias_scale=0.2,
        dtype=dtype,
        rng=np.random.default_rng(15),
    )
    rng = np.random.default_rng(15)
    weight = init_weight(scheme, rng, 6, 9, GAIN)
    bias = init_bias(rng, 9, 0.2)
    for name, value in model.params.items():
        assert value.dtype == np.dtype(dtype), name
    np.testing.assert_array_equal(model.params["layer1.weight"], weight.astype(dtype))
    np.testing.assert_array_equal(model.params["layer1.bias"], bias.astype(dtype))
    if dtype == "float32":
        np.testing.assert_allclose(model.params["layer1.weight"], weight, rtol=2.0**-24)
