"""Float64 finite-difference checks of every layer, activation, loss and network combination."""

import numpy as np
import pytest
from gradcheck import assert_close, check_layer, check_model

from gradlab import vocabulary
from gradlab.engine import (
    ACTIVATIONS,
    MLP,
    BatchNorm,
    LayerNorm,
    Linear,
    Sigmoid,
    bce_with_logits,
    cross_entropy,
    mse,
)

BATCH, FEATURES = 7, 5


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_linear(rng):
    layer = Linear(rng.normal(size=(FEATURES, 3)), rng.normal(size=3))
    check_layer(layer, rng.normal(size=(BATCH, FEATURES)), rng)


def test_linear_without_input_grad_still_gives_param_grads(rng):
    layer = Linear(rng.normal(size=(FEATURES, 3)), rng.normal(size=3))
    layer.needs_input_grad = False
    check_layer(layer, rng.normal(size=(BATCH, FEATURES)), rng)


@pytest.mark.parametrize("activation", list(ACTIVATIONS.values()))
def test_activation(activation, rng):
    # spread of 3 reaches the curved and saturating parts of sigmoid and tanh
    check_layer(activation(), 3.0 * rng.normal(size=(BATCH, FEATURES)), rng)


def test_sigmoid_far_in_saturation(rng):
    """At z ~ -20 the derivative is ~1e-9 and must still be exact (relative 1e-7).

    Only the negative side is checkable by differences: there sigma(z) ~ 2e-9 is stored with
    full relative precision, while near 1 the differences drown in rounding.
    """
    check_layer(Sigmoid(), -20.0 + rng.normal(size=(BATCH, FEATURES)), rng)


def test_sigmoid_fallback_form(rng):
    """One pre-activation of -800 (exp(800) overflows) sends the whole forward and backward
    to the exp(-|z|) form; its gradient must be as right as the fast path's."""
    x = 3.0 * rng.normal(size=(BATCH, FEATURES))
    x[0, 0] = -800.0
    layer = Sigmoid()
    layer.forward(x)
    # sigma'(-800) = e r^2 = 0 (underflow): the exp(-|z|) form; the fast path's u sigma^2
    # would be inf * 0 = nan here
    assert layer.backward(np.ones_like(x))[0, 0] == 0.0
    check_layer(layer, x, rng)


@pytest.mark.parametrize("train", [True, False])
def test_batchnorm(train, rng):
    layer = BatchNorm(FEATURES)
    layer.params["gamma"][...] = rng.normal(size=FEATURES)
    layer.params["beta"][...] = rng.normal(size=FEATURES)
    layer.buffers["running_mean"][...] = rng.normal(size=FEATURES)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, size=FEATURES)
    check_layer(layer, 2.0 + 3.0 * rng.normal(size=(BATCH, FEATURES)), rng, train=train)


def test_layernorm(rng):
    layer = LayerNorm(FEATURES)
    layer.params["gamma"][...] = rng.normal(size=FEATURES)
    layer.params["beta"][...] = rng.normal(size=FEATURES)
    check_layer(layer, 2.0 + 3.0 * rng.normal(size=(BATCH, FEATURES)), rng)


def _targets(loss, shape, rng):
    if loss is cross_entropy:
        return rng.integers(0, shape[1], size=shape[0])
    if loss is bce_with_logits:
        return rng.integers(0, 2, size=shape).astype(float)
    return rng.normal(size=shape)


@pytest.mark.parametrize("loss", [mse, bce_with_logits, cross_entropy])
@pytest.mark.parametrize("logit_scale", [1.0, 30.0])
def test_loss_gradient(loss, logit_scale, rng):
    logits = logit_scale * rng.normal(size=(BATCH, 4))
    targets = _targets(loss, logits.shape, rng)
    value, grad = loss(logits.copy(), targets)
    tangent = rng.normal(size=logits.shape)
    eps = 1e-6
    numeric = loss(logits + eps * tangent, targets)[0] - loss(logits - eps * tangent, targets)[0]
    numeric /= 2 * eps
    assert_close(float(np.sum(grad * tangent)), numeric, value, eps, 1e-7, loss.__name__)


def _model(activation, norm, output_dim, rng, depth=3):
    return MLP(
        input_dim=4,
        output_dim=output_dim,
        depth=depth,
        width=6,
        activation=activation,
        norm=norm,
        weight_scale=1.5,
        bias_scale=0.3,
        rng=rng,
    )


@pytest.mark.parametrize("loss", [mse, bce_with_logits, cross_entropy])
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("activation", vocabulary.ACTIVATIONS)
def test_whole_network(activation, norm, loss, rng):
    output_dim = 3 if loss is cross_entropy else 1
    model = _model(activation, norm, output_dim, rng)
    x = rng.normal(size=(BATCH, 4))
    check_model(model, loss, x, _targets(loss, (BATCH, output_dim), rng), rng)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_whole_network_batchnorm_eval(activation, rng):
    model = _model(activation, "batch", 1, rng)
    x = rng.normal(size=(BATCH, 4))
    for _ in range(3):  # move the running statistics away from (0, 1)
        model.forward(x + rng.normal(size=x.shape), train=True)
    check_model(model, mse, x, rng.normal(size=(BATCH, 1)), rng, train=False)


def test_deep_vanishing_network_gradients_are_exact(rng):
    """Depth 12 sigmoid: first-layer gradients are ~1e-8 of the last; each is still checked."""
    model = _model("sigmoid", "none", 1, rng, depth=12)
    check_model(model, mse, rng.normal(size=(BATCH, 4)), rng.normal(size=(BATCH, 1)), rng)


def test_check_detects_a_wrong_gradient(rng):
    """The checker itself must fail on a wrong backward (here: a bias gradient off by 1%)."""
    model = _model("sigmoid", "none", 1, rng)
    original_backward = model.blocks[0].linear.backward

    def wrong_backward(grad_out):
        result = original_backward(grad_out)
        model.blocks[0].linear.grads["bias"] *= 1.01
        return result

    model.blocks[0].linear.backward = wrong_backward
    with pytest.raises(AssertionError, match=r"layer1\.bias"):
        check_model(model, mse, rng.normal(size=(BATCH, 4)), rng.normal(size=(BATCH, 1)), rng)
