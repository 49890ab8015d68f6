"""Optimizers against hand-written reference formulas (PyTorch conventions), float64.

SGD: p <- p - lr g. Momentum: v <- mu v + g, p <- p - lr v. Nesterov: v <- mu v + g,
p <- p - lr (g + mu v). Adam: m <- b1 m + (1 - b1) g, s <- b2 s + (1 - b2) g^2,
p <- p - lr m_hat / (sqrt(s_hat) + eps) with bias-corrected m_hat, s_hat. Weight decay
(L2) replaces g by g + wd p before any of these. State is keyed by parameter name.
"""

import numpy as np
import pytest

from gradlab.engine import SGD, Adam, make_optimizer
from gradlab.engine.optim import OPTIMIZERS
from gradlab.errors import EngineError

RTOL = 1e-12
STEPS = 5
SHAPES = {"layer1.weight": (4, 3), "layer1.bias": (3,), "output.weight": (3, 2)}


def _params(rng, dtype=np.float64):
    return {name: rng.normal(size=shape).astype(dtype) for name, shape in SHAPES.items()}


def _grad_sequence(rng, steps=STEPS, dtype=np.float64):
    """Gradients of very different sizes per parameter, so mixed-up state would show."""
    scales = {"layer1.weight": 1.0, "layer1.bias": 1e-3, "output.weight": 50.0}
    return [
        {
            name: (scales[name] * rng.normal(size=shape)).astype(dtype)
            for name, shape in SHAPES.items()
        }
        for _ in range(steps)
    ]


def _copy(arrays):
    return {name: a.copy() for name, a in arrays.items()}


def _reference_sgd(params, grads_seq, lr, momentum=0.0, nesterov=False, wd=0.0):
    """Returns (params, buffers, last update) after all steps."""
    params = _copy(params)
    buffers = {name: np.zeros_like(p) for name, p in params.items()}
    updates = {}
    for grads in grads_seq:
        for name, p in params.items():
            g = grads[name] + wd * p
            if momentum:
                buffers[name] = momentum * buffers[name] + g
                direction = g + momentum * buffers[name] if nesterov else buffers[name]
            else:
                direction = g
            updates[name] = lr * direction
            params[name] = p - updates[name]
    return params, buffers, updates


def _reference_adam(params, grads_seq, lr, betas=(0.9, 0.999), eps=1e-8, wd=0.0):
    b1, b2 = betas
    params = _copy(params)
    m = {name: np.zeros_like(p) for name, p in params.items()}
    s = {name: np.zeros_like(p) for name, p in params.items()}
    updates = {}
    for t, grads in enumerate(grads_seq, start=1):
        for name, p in params.items():
            g = grads[name] + wd * p
            m[name] = b1 * m[name] + (1 - b1) * g
            s[name] = b2 * s[name] + (1 - b2) * g * g
            m_hat = m[name] / (1 - b1**t)
            s_hat = s[name] / (1 - b2**t)
            updates[name] = lr * m_hat / (np.sqrt(s_hat) + eps)
            params[name] = p - updates[name]
    return params, m, s, updates


def _run(optimizer, params, grads_seq):
    """Step ``optimizer`` in place over live arrays; checks identity and untouched grads."""
    live = _copy(params)
    identities = {name: id(a) for name, a in live.items()}
    for grads in grads_seq:
        frozen = _copy(grads)
        optimizer.step(live, grads)
        for name in grads:  # the optimizer never writes into the gradients
            np.testing.assert_array_equal(grads[name], frozen[name])
    assert {name: id(a) for name, a in live.items()} == identities  # updated in place
    return live


# --- SGD family --------------------------------------------------------------------------


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_sgd_matches_reference_exactly(wd):
    rng = np.random.default_rng(0)
    params, grads_seq = _params(rng), _grad_sequence(rng)
    optimizer = SGD(0.1, weight_decay=wd)
    result = _run(optimizer, params, grads_seq)
    expected, _, updates = _reference_sgd(params, grads_seq, 0.1, wd=wd)
    for name in SHAPES:
        np.testing.assert_array_equal(result[name], expected[name], err_msg=name)
        np.testing.assert_array_equal(optimizer.updates[name], updates[name], err_msg=name)


def test_sgd_single_step_by_hand():
    params = {"w": np.array([1.0, -2.0, 3.0])}
    optimizer = SGD(0.5)
    optimizer.step(params, {"w": np.array([0.5, 1.0, -4.0])})
    np.testing.assert_array_equal(params["w"], [0.75, -2.5, 5.0])
    np.testing.assert_array_equal(optimizer.updates["w"], [0.25, 0.5, -2.0])


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_momentum_matches_reference_exactly(nesterov, wd):
    rng = np.random.default_rng(1)
    params, grads_seq = _params(rng), _grad_sequence(rng)
    optimizer = SGD(0.05, momentum=0.9, nesterov=nesterov, weight_decay=wd)
    result = _run(optimizer, params, grads_seq)
    expected, buffers, updates = _reference_sgd(
        params, grads_seq, 0.05, momentum=0.9, nesterov=nesterov, wd=wd
    )
    assert set(optimizer.state) == set(SHAPES)
    for name in SHAPES:
        np.testing.assert_array_equal(result[name], expected[name], err_msg=name)
        np.testing.assert_array_equal(optimizer.updates[name], updates[name], err_msg=name)
        buffer = optimizer.state[name]["momentum_buffer"]
        np.testing.assert_array_equal(buffer, buffers[name], err_msg=name)


def test_momentum_and_nesterov_by_hand():
    """Two steps with g = 1 then g = 2, mu = 0.5, lr = 1 (all exact in binary)."""
    for nesterov, first, second in [(False, 1.0, 2.5), (True, 1.5, 3.25)]:
        # buffer: 1, then 0.5 * 1 + 2 = 2.5; nesterov steps along g + mu buf: 1.5, 3.25
        params = {"w": np.zeros(2)}
        optimizer = SGD(1.0, momentum=0.5, nesterov=nesterov)
        optimizer.step(params, {"w": np.ones(2)})
        np.testing.assert_array_equal(params["w"], [-first] * 2)
        optimizer.step(params, {"w": np.full(2, 2.0)})
        np.testing.assert_array_equal(params["w"], [-first - second] * 2)
        np.testing.assert_array_equal(optimizer.state["w"]["momentum_buffer"], [2.5, 2.5])


def test_weight_decay_adds_wd_times_param_to_grad():
    params = {"w": np.array([2.0, -4.0])}
    optimizer = SGD(0.5, weight_decay=0.25)
    optimizer.step(params, {"w": np.array([1.0, 1.0])})
    # g + wd p = (1.5, 0); p - lr (g + wd p) = (1.25, -4)
    np.testing.assert_array_equal(params["w"], [1.25, -4.0])


# --- Adam --------------------------------------------------------------------------------


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_matches_reference(wd):
    rng = np.random.default_rng(2)
    params, grads_seq = _params(rng), _grad_sequence(rng)
    optimizer = Adam(1e-3, weight_decay=wd)
    result = _run(optimizer, params, grads_seq)
    expected, m, s, updates = _reference_adam(params, grads_seq, 1e-3, wd=wd)
    assert optimizer.steps == STEPS
    assert set(optimizer.state) == set(SHAPES)
    for name in SHAPES:
        np.testing.assert_allclose(result[name], expected[name], rtol=RTOL, atol=0, err_msg=name)
        np.testing.assert_allclose(optimizer.updates[name], updates[name], rtol=RTOL, atol=0)
        np.testing.assert_allclose(optimizer.state[name]["exp_avg"], m[name], rtol=RTOL, atol=0)
        np.testing.assert_allclose(optimizer.state[name]["exp_avg_sq"], s[name], rtol=RTOL, atol=0)


def test_adam_custom_betas_and_eps():
    rng = np.random.default_rng(3)
    params, grads_seq = _params(rng), _grad_sequence(rng)
    optimizer = Adam(0.01, betas=(0.5, 0.75), eps=1e-3)
    result = _run(optimizer, params, grads_seq)
    expected, *_ = _reference_adam(params, grads_seq, 0.01, betas=(0.5, 0.75), eps=1e-3)
    for name in SHAPES:
        np.testing.assert_allclose(result[name], expected[name], rtol=RTOL, atol=0, err_msg=name)


def test_adam_first_step_is_lr_times_sign():
    """Bias correction makes step 1 lr g / (|g| + eps): lr sign(g) up to eps / |g|."""
    grad = np.array([1e-3, -2.0, 300.0, 0.0])
    params = {"w": np.zeros(4)}
    optimizer = Adam(0.1)
    optimizer.step(params, {"w": grad})
    expected = 0.1 * grad / (np.abs(grad) + 1e-8)
    np.testing.assert_allclose(optimizer.updates["w"], expected, rtol=RTOL, atol=0)
    np.testing.assert_allclose(params["w"], -expected, rtol=RTOL, atol=0)
    assert params["w"][3] == 0.0


# --- state keyed by name -----------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_follows_names_not_dict_order(name):
    """Stepping with the dicts in a different order gives the same result."""
    rng = np.random.default_rng(4)
    params, grads_seq = _params(rng), _grad_sequence(rng)
    forward = make_optimizer(name, 0.01, weight_decay=0.001)
    reverse = make_optimizer(name, 0.01, weight_decay=0.001)
    a, b = _copy(params), {k: params[k].copy() for k in reversed(list(params))}
    for grads in grads_seq:
        forward.step(a, grads)
        reverse.step(b, {k: grads[k] for k in reversed(list(grads))})
    for key in SHAPES:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        for state_key, value in forward.state.get(key, {}).items():
            np.testing.assert_array_equal(value, reverse.state[key][state_key])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_parameters_stay_float32(name):
    rng = np.random.default_rng(5)
    params = _params(rng, np.float32)
    optimizer = make_optimizer(name, 0.01, weight_decay=0.001)
    for grads in _grad_sequence(rng, dtype=np.float32):
        optimizer.step(params, grads)
    for key in SHAPES:
        assert params[key].dtype == np.float32
        assert optimizer.updates[key].dtype == np.float32
        for value in optimizer.state.get(key, {}).values():
            assert value.dtype == np.float32


def test_make_optimizer():
    sgd = make_optimizer("sgd", 0.1, momentum=0.9, weight_decay=0.01)
    assert isinstance(sgd, SGD)
    assert (sgd.lr, sgd.momentum, sgd.nesterov, sgd.weight_decay) == (0.1, 0.0, False, 0.01)
    momentum = make_optimizer("momentum", 0.1, momentum=0.8)
    assert (momentum.momentum, momentum.nesterov) == (0.8, False)
    nesterov = make_optimizer("nesterov", 0.1, momentum=0.7)
    assert (nesterov.momentum, nesterov.nesterov) == (0.7, True)
    adam = make_optimizer("adam", 1e-3, weight_decay=0.5)
    assert isinstance(adam, Adam)
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps, adam.weight_decay) == (
        1e-3,
        0.9,
        0.999,
        1e-8,
        0.5,
    )
    with pytest.raises(EngineError, match="optimizer 'rmsprop'"):
        make_optimizer("rmsprop", 0.1)


def _model_and_grads(dtype=np.float64):
    from gradlab.engine import MLP

    rng = np.random.default_rng(3)
    model = MLP(5, 2, 3, 7, "sigmoid", "batch", "normal", 1.0, 0.2, dtype, rng)
    for grad in model.grads.values():
        grad[...] = rng.normal(size=grad.shape)
    return model


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_plain_sgd_on_a_model_equals_the_per_parameter_loop(dtype):
    """MLP lays its parameters out in one array; SGD then updates them in one call. The
    result, and the logged updates, must be those of the per-name loop, bit for bit."""
    model = _model_and_grads(dtype)
    loose_params = {name: value.copy() for name, value in model.params.items()}
    loose_grads = {name: value.copy() for name, value in model.grads.items()}
    fast, loop = SGD(0.3), SGD(0.3)
    for _ in range(3):
        fast.step(model.params, model.grads)
        loop.step(loose_params, loose_grads)
    assert fast._flat is not None and loop._flat is None  # the fast path was taken
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, loose_params[name], err_msg=name)
        np.testing.assert_array_equal(fast.updates[name], loop.updates[name], err_msg=name)
        assert value.dtype == dtype
    # the model's dicts are still the live arrays the layers use
    assert model.params["layer1.weight"] is model.blocks[0].linear.params["weight"]


def test_sgd_fast_path_notices_replaced_arrays():
    model = _model_and_grads()
    sgd = SGD(0.5)
    sgd.step(model.params, model.grads)
    replaced = dict(model.params)
    replaced["output.bias"] = model.params["output.bias"].copy()  # no longer a view
    before = replaced["output.bias"].copy()
    sgd.step(replaced, model.grads)
    np.testing.assert_array_equal(
        replaced["output.bias"], before - 0.5 * model.grads["output.bias"]
    )


def test_plain_sgd_reports_update_norms_from_gradient_norms():
    """lr ||g|| is ||update|| of plain SGD to rounding of the products; other optimizers (and
    weight decay) do not step along a fixed multiple of g and say so with None."""
    from gradlab.engine.norms import l2_norm

    rng = np.random.default_rng(11)
    params, grads = _params(rng), _grad_sequence(rng, steps=1)[0]
    optimizer = SGD(0.037)
    optimizer.step(params, grads)
    norms = optimizer.update_norms({name: l2_norm(g) for name, g in grads.items()})
    assert set(norms) == set(grads)
    for name, update in optimizer.updates.items():
        assert norms[name] == pytest.approx(l2_norm(update), rel=1e-14)
    for other in (SGD(0.1, momentum=0.9), SGD(0.1, weight_decay=0.01), Adam(0.1)):
        other.step(params, grads)
        assert other.update_norms({name: 1.0 for name in grads}) is None
