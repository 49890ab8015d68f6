"""The Jacobian J = d x^depth / d x^1 and its singular values (gradlab.engine.jacobian):
closed forms, the explicit one-layer matrix, finite differences, extremes, float32."""

import numpy as np
import pytest

from gradlab import vocabulary
from gradlab.engine import MLP
from gradlab.engine.jacobian import below_resolution, jacobian_spectrum, jacobians
from gradlab.errors import EngineError


def _model(depth, width=8, activation="tanh", norm="none", dtype="float64", seed=0, **init):
    return MLP(
        input_dim=5,
        output_dim=2,
        depth=depth,
        width=width,
        activation=activation,
        norm=norm,
        dtype=dtype,
        rng=np.random.default_rng(seed),
        **init,
    )


def _inputs(samples=3, seed=1):
    return np.random.default_rng(seed).normal(size=(samples, 5))


@pytest.mark.parametrize(
    ("weight_scale", "depth"), [(0.5, 20), (0.05, 200), (10.0, 300), (1.0, 60)]
)
def test_linear_orthogonal_network_has_every_singular_value_sigma_w_to_the_l(weight_scale, depth):
    """J = sigma_w^L Q with Q orthogonal; 1e-259 and 1e299 are reached without over- or
    underflow on the way (the running product is rescaled by powers of 2)."""
    model = _model(
        depth, width=16, activation="linear", init="orthogonal", weight_scale=weight_scale
    )
    spectrum = jacobian_spectrum(model, _inputs())
    assert spectrum.layers == depth - 1
    assert spectrum.singular_values.shape == (3, 16)
    expected = weight_scale ** (depth - 1)
    np.testing.assert_allclose(spectrum.singular_values, expected, rtol=1e-12)
    assert not spectrum.unresolved.any() and spectrum.out_of_range == 0


def test_beyond_the_float64_range_is_counted_not_hidden():
    model = _model(130, width=8, activation="linear", init="orthogonal", weight_scale=1e-3)
    spectrum = jacobian_spectrum(model, _inputs(2))  # 1e-387: below the float64 range
    assert (spectrum.singular_values == 0).all()
    assert spectrum.out_of_range == 2 * 8 and not spectrum.unresolved.any()


def _explicit_block_jacobian(model, x):
    """J of depth-2 networks built by hand: W_2 N_2 D_2 with N_2 the LayerNorm Jacobian."""
    block1, block2 = model.blocks
    h1 = x @ block1.linear.params["weight"] + block1.linear.params["bias"]
    x1 = model.blocks[0].activation.phi(_layernorm(h1, block1.norm)[0])
    h2 = x1 @ block2.linear.params["weight"] + block2.linear.params["bias"]
    y2, norm_jacobians = _layernorm(h2, block2.norm)
    slopes = block2.activation.derivative(y2)  # S, n
    weight = block2.linear.params["weight"]
    return np.stack([weight @ norm_jacobians[s] * slopes[s][None, :] for s in range(x.shape[0])])


def _layernorm(h, norm):
    """(LN(h), dLN/dh per sample) written out from the definition (identity without norm)."""
    features = h.shape[1]
    if norm is None:
        return h, np.broadcast_to(np.eye(features), (h.shape[0], features, features))
    gamma, beta = norm.params["gamma"], norm.params["beta"]
    mean = h.mean(axis=1, keepdims=True)
    sigma = np.sqrt(((h - mean) ** 2).mean(axis=1, keepdims=True) + norm.eps)
    xhat = (h - mean) / sigma
    jacobians_ = []
    for s in range(h.shape[0]):
        centring = np.eye(features) - 1 / features - np.outer(xhat[s], xhat[s]) / features
        jacobians_.append(centring / sigma[s] * gamma[None, :])
    return xhat * gamma + beta, np.stack(jacobians_)


@pytest.mark.parametrize("norm", ["none", "layer"])
def test_one_layer_jacobian_and_its_singular_values_match_the_explicit_matrix(norm):
    model = _model(2, width=6, activation="tanh", norm=norm, bias_scale=0.3, weight_scale=1.5)
    rng = np.random.default_rng(3)
    if norm == "layer":  # trained-looking gamma and beta, not the init's ones and zeros
        for block in model.blocks:
            block.norm.params["gamma"][...] = rng.uniform(0.5, 1.5, size=6)
            block.norm.params["beta"][...] = rng.normal(size=6)
    x = _inputs(4)
    explicit = _explicit_block_jacobian(model, x)
    np.testing.assert_allclose(jacobians(model, x), explicit, rtol=1e-13, atol=1e-15)
    expected = np.linalg.svd(explicit, compute_uv=False)
    spectrum = jacobian_spectrum(model, x)
    assert spectrum.layers == 1
    np.testing.assert_allclose(spectrum.singular_values, expected, rtol=1e-12, atol=1e-15)


def _stack_above_layer_1(model, x1):
    """x^depth as a function of x^1: blocks 2..depth run by their layers' forward."""
    for block in model.blocks[1:]:
        for layer in block.layers:
            x1 = layer.forward(x1, train=False)
    return x1.copy()


@pytest.mark.parametrize("norm", ["none", "layer"])
@pytest.mark.parametrize("activation", vocabulary.ACTIVATIONS)
def test_jacobian_matches_central_differences(activation, norm):
    model = _model(4, width=7, activation=activation, norm=norm, bias_scale=0.2, weight_scale=1.3)
    if norm == "layer":
        rng = np.random.default_rng(5)
        for block in model.blocks:
            block.norm.params["gamma"][...] = rng.uniform(0.5, 1.5, size=7)
            block.norm.params["beta"][...] = 0.3 * rng.normal(size=7)
    x = _inputs(2)
    analytic = jacobians(model, x)  # S, n, n: row i is d x^depth / d x^1_i
    model.forward(x, train=False)
    first = model.blocks[0].activation.output.copy()  # S, n: x^1
    eps = 1e-6
    for sample in range(x.shape[0]):
        for i in range(first.shape[1]):
            shift = np.zeros_like(first)
            shift[sample, i] = eps
            above = _stack_above_layer_1(model, first + shift)[sample]
            below = _stack_above_layer_1(model, first - shift)[sample]
            numeric = (above - below) / (2 * eps)
            scale = np.abs(analytic[sample]).max()
            np.testing.assert_allclose(analytic[sample, i], numeric, rtol=0, atol=1e-8 * scale)


def test_float32_network_gets_float64_singular_values_below_the_float32_range():
    """0.1^40 = 1e-40 is below float32's smallest normal number: computed in float64 from the
    float32 weights, none is zero and none is out of range."""
    model = _model(
        41, width=8, activation="linear", dtype="float32", init="orthogonal", weight_scale=0.1
    )
    spectrum = jacobian_spectrum(model, _inputs(2))
    assert spectrum.singular_values.dtype == np.float64
    assert (spectrum.singular_values < np.finfo(np.float32).tiny).all()
    np.testing.assert_allclose(spectrum.singular_values, 1e-40, rtol=1e-4)
    assert spectrum.out_of_range == 0 and not spectrum.unresolved.any()


def test_saturated_units_keep_their_tiny_slopes():
    """tanh'(25) ~ 7.7e-22: 1 - tanh^2 would round it to 0, the engine's backward keeps it."""
    model = _model(2, width=4, activation="tanh")
    model.blocks[1].linear.params["bias"][...] = 25.0
    model.blocks[1].linear.params["weight"][...] = np.eye(4)  # J = diag(tanh'(x^1 + 25))
    x = _inputs(1)
    spectrum = jacobian_spectrum(model, x)
    model.forward(x, train=False)
    h = model.blocks[1].linear.output[0]
    expected = np.sort(1 / np.cosh(h) ** 2)[::-1]
    assert (expected > 1e-23).all() and (expected < 1e-20).all()
    np.testing.assert_allclose(spectrum.singular_values[0], expected, rtol=1e-12)


def test_relu_jacobian_is_singular_and_says_so():
    model = _model(6, width=32, activation="relu", init="orthogonal", weight_scale=2**0.5)
    spectrum = jacobian_spectrum(model, _inputs(2))
    # the last layer's zero slopes zero whole columns of J: about half the values are 0
    assert 0.2 < spectrum.unresolved.mean() < 0.8
    np.testing.assert_array_equal(spectrum.unresolved, below_resolution(spectrum.singular_values))


def test_depth_one_has_the_identity_and_non_finite_networks_give_a_reason():
    spectrum = jacobian_spectrum(_model(1), _inputs(2))
    assert spectrum.layers == 0
    np.testing.assert_array_equal(spectrum.singular_values, 1.0)
    model = _model(3)
    model.blocks[1].linear.params["weight"][0, 0] = np.inf
    with np.errstate(all="raise"):  # nothing warns on the way
        broken = jacobian_spectrum(model, _inputs(2))
    assert broken.problem == "non-finite pre-activations at hidden layer 2"
    assert broken.singular_values.shape == (2, 0)


def test_batchnorm_has_no_per_sample_jacobian():
    with pytest.raises(EngineError, match="BatchNorm"):
        jacobian_spectrum(_model(3, norm="batch"), _inputs(3))


def test_samples_in_chunks_give_the_same_values(monkeypatch):
    """(to rounding: a chunk of one sample takes other BLAS paths than one of two)"""
    from gradlab.engine import jacobian

    model = _model(5, width=8)
    whole = jacobian_spectrum(model, _inputs(5))
    monkeypatch.setattr(jacobian, "_CHUNK_BYTES", 2 * 8 * 8 * 8)  # two samples per chunk
    chunked = jacobian_spectrum(model, _inputs(5))
    np.testing.assert_allclose(chunked.singular_values, whole.singular_values, rtol=1e-12)


def test_hidden_layers_of_different_widths_give_a_rectangular_j():
    """J = d x^depth / d x^1 of widths 6 -> 9 -> 4: a 6 x 4 matrix, 4 singular values."""
    model = _model(3, width=6, activation="tanh")
    rng = np.random.default_rng(7)
    from gradlab.engine.layers import Linear

    for block, (fan_in, fan_out) in zip(model.blocks[1:], [(6, 9), (9, 4)], strict=True):
        block.linear = Linear(rng.normal(size=(fan_in, fan_out)), np.zeros(fan_out))
        block.activation = block.activation.twin(np.float64)
    model.output = Linear(rng.normal(size=(4, 2)), np.zeros(2))
    x = _inputs(2)
    matrices = jacobians(model, x)
    assert matrices.shape == (2, 6, 4)
    spectrum = jacobian_spectrum(model, x)
    expected = np.linalg.svd(matrices, compute_uv=False)
    np.testing.assert_allclose(spectrum.singular_values, expected, rtol=1e-12)
