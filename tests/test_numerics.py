"""Numerical edge cases of the engine: tiny and huge norms, saturated activations, losses at
extreme logits, float32 end to end.

pytest turns every warning into an error (pyproject), so a RuntimeWarning from numpy fails
these tests. On top of that, ``_strict()`` makes overflow, invalid operations and division by
zero raise FloatingPointError. Underflow is left at numpy's default (ignored): exp(-1000)
rounding to 0 is the correctly rounded result, not an error.
"""

import math

import numpy as np
import pytest

from gradlab.engine import (
    MLP,
    Probe,
    Sigmoid,
    Tanh,
    bce_with_logits,
    clip_by_global_norm,
    combine_norms,
    cross_entropy,
    global_norm,
    l2_norm,
    mse,
    norms,
)


def _strict():
    return np.errstate(over="raise", invalid="raise", divide="raise")


def _exact_norm(array):
    """The norm of the stored entries, computed at ordinary magnitude (power-of-two scaling)."""
    flat = np.asarray(array, dtype=np.float64).reshape(-1)
    exponent = math.frexp(float(np.max(np.abs(flat))))[1]
    return math.ldexp(float(np.linalg.norm(np.ldexp(flat, -exponent))), exponent)


# --- norms -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, value", [(np.float64, 1e-200), (np.float64, 1e-310), (np.float32, 1e-40)]
)
def test_tiny_gradient_norm_is_not_zero(dtype, value):
    """The squares underflow (1e-400, 1e-80 in float32), the norm must not."""
    grad = np.full((10, 10), value, dtype=dtype)
    stored = float(grad[0, 0])  # 1e-40 is subnormal in float32: not exactly 1e-40
    with _strict():
        norm = l2_norm(grad)
    assert isinstance(norm, float)
    assert norm > 0.0
    assert norm == pytest.approx(10.0 * stored, rel=1e-6)
    assert norm == pytest.approx(_exact_norm(grad), rel=1e-12)
    if value > 1e-300:  # normal numbers: the exact value itself
        assert norm == pytest.approx(10.0 * value, rel=1e-6)


def test_tiny_random_gradient_norm_and_global_norm():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(8, 5)) * 1e-200, rng.normal(size=5) * 1e-190]
    with _strict():
        norms = [l2_norm(g) for g in grads]
        total = global_norm(grads)
    for g, norm in zip(grads, norms, strict=True):
        assert norm == pytest.approx(_exact_norm(g), rel=1e-12)
    assert total == pytest.approx(
        _exact_norm(np.concatenate([g.ravel() for g in grads])), rel=1e-12
    )
    assert total == pytest.approx(math.hypot(*norms), rel=1e-12)


@pytest.mark.parametrize("value", [1e200, 1e300, -1e300])
def test_huge_gradient_norm_does_not_overflow(value):
    grad = np.full((10, 10), value)
    with _strict():
        norm = l2_norm(grad)
        total = global_norm([grad, grad])
    assert math.isfinite(norm)
    assert norm == pytest.approx(10.0 * abs(value), rel=1e-12)
    assert total == pytest.approx(10.0 * math.sqrt(2.0) * abs(value), rel=1e-12)


def test_huge_and_tiny_entries_together():
    grad = np.array([1e200, 1e-200, -3e200, 0.0])
    with _strict():
        assert l2_norm(grad) == pytest.approx(math.sqrt(10.0) * 1e200, rel=1e-12)


def test_float32_norm_beyond_float32_range_is_finite():
    """float32 entries near float32's max: the float64 result exceeds what float32 holds."""
    grad = np.full(100, 3e38, dtype=np.float32)
    with _strict():
        norm = l2_norm(grad)
    assert norm == pytest.approx(10.0 * float(np.float32(3e38)), rel=1e-12)
    assert norm > float(np.finfo(np.float32).max)


@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e15])
def test_float32_norm_of_a_large_array_is_accumulated_in_float64(scale):
    """More entries than one cast chunk, non-contiguous too: float64 accumulation (a float32
    sum is off by ~1e-7 relative, and its squares under- or overflow at these scales)."""
    rng = np.random.default_rng(5)
    array = (rng.normal(size=(300, 400)) * scale).astype(np.float32)
    for view in (array, array[:, ::3], array.T):
        exact = math.sqrt(math.fsum(float(v) ** 2 for v in view.ravel().tolist()))
        assert l2_norm(view) == pytest.approx(exact, rel=1e-13)


@pytest.mark.parametrize("size", [100, 3 * 8192, 120_000])
@pytest.mark.parametrize("chunk", [None, 20_000])
def test_float32_norm_rows_tail_and_chunks(size, chunk, monkeypatch):
    """Sums of squares as rows of 8192 plus a tail, per cast chunk: every split is exact.
    (A tail alone, rows alone, both; with a small chunk, several chunks that each end in a
    tail.)"""
    if chunk is not None:
        monkeypatch.setattr(norms, "_CHUNK", chunk)
    rng = np.random.default_rng(size)
    array = rng.normal(size=size).astype(np.float32)
    exact = math.sqrt(math.fsum(float(v) ** 2 for v in array.tolist()))
    assert l2_norm(array) == pytest.approx(exact, rel=1e-14)


def test_norm_that_really_overflows_is_inf_not_nan():
    grad = np.full(4, 1.5e308)  # true norm 3e308 > float64 max
    assert l2_norm(grad) == math.inf


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1e-200, 1e-200], math.sqrt(2.0) * 1e-200),
        ([3e200, 4e200], 5e200),
        ([0.0, 0.0], 0.0),
        ([], 0.0),
        ([1.0, math.inf], math.inf),
    ],
)
def test_combine_norms(values, expected):
    with _strict():
        assert combine_norms(values) == pytest.approx(expected, rel=1e-12)


def test_norm_of_nan_is_nan():
    assert math.isnan(l2_norm(np.array([1.0, math.nan])))
    assert math.isnan(l2_norm(np.array([math.inf, math.nan])))
    assert math.isnan(combine_norms([math.inf, math.nan]))


# --- saturated activations ---------------------------------------------------------------

Z = [-1000.0, -50.0, 0.0, 50.0, 1000.0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_saturates_exactly_without_warnings(dtype):
    layer = Sigmoid(dtype)
    z = np.array([Z], dtype=dtype)
    with _strict():
        out = layer.forward(z)
        grad = layer.backward(np.ones_like(z))
    assert out.dtype == grad.dtype == dtype
    assert out[0, 0] == 0.0 and out[0, -1] == 1.0 and out[0, 2] == 0.5
    assert grad[0, 0] == 0.0 and grad[0, -1] == 0.0 and grad[0, 2] == 0.25
    # z = +-50: sigmoid(-50) = 1.9e-22 keeps full relative precision; derivative too
    tiny = math.exp(-50.0)
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    assert float(out[0, 1]) == pytest.approx(tiny / (1 + tiny), rel=rtol)
    assert out[0, 3] == 1.0
    assert float(grad[0, 1]) == pytest.approx(tiny / (1 + tiny) ** 2, rel=rtol)
    assert float(grad[0, 3]) == pytest.approx(tiny / (1 + tiny) ** 2, rel=rtol)
    assert layer.saturation() == pytest.approx(4 / 5)


@pytest.mark.parametrize("dtype, deep", [(np.float64, 50.0), (np.float32, 20.0)])
def test_tanh_saturates_exactly_without_warnings(dtype, deep):
    layer = Tanh(dtype)
    z = np.array([[-1000.0, -deep, 0.0, deep, 1000.0]], dtype=dtype)
    with _strict():
        out = layer.forward(z)
        grad = layer.backward(np.full_like(z, 3.0))
    assert out.dtype == grad.dtype == dtype
    np.testing.assert_array_equal(out, [[-1.0, -1.0, 0.0, 1.0, 1.0]])
    assert grad[0, 0] == 0.0 and grad[0, -1] == 0.0 and grad[0, 2] == 3.0
    # 1 - tanh(z)^2 rounds to 0 here (tanh is exactly +-1), but 4 e / (1 + e)^2 with
    # e = exp(-2|z|) (3.7e-44 in float64, 4.2e-18 in float32) keeps full relative precision
    e = math.exp(-2.0 * deep)
    rtol = 1e-14 if dtype == np.float64 else 1e-6
    for column in (1, 3):
        assert float(grad[0, column]) == pytest.approx(3.0 * 4.0 * e / (1 + e) ** 2, rel=rtol)
    assert layer.saturation() == pytest.approx(4 / 5)


def test_sigmoid_derivative_keeps_precision_deep_in_saturation():
    """sigma'(-700) ~ 1e-304, where s (1 - s) would round to 0 on the positive side."""
    layer = Sigmoid()
    z = np.array([[-700.0, 700.0, -30.0, 30.0]])
    with _strict():
        layer.forward(z)
        grad = layer.backward(np.ones_like(z))
    expected = [math.exp(-700.0), math.exp(-700.0), 0.0, 0.0]
    expected[2] = expected[3] = math.exp(-30.0) / (1 + math.exp(-30.0)) ** 2
    np.testing.assert_allclose(grad, [expected], rtol=1e-14, atol=0)
    assert np.all(grad > 0)


def _sigmoid_reference(z):
    """sigma and sigma' in extended precision (x87 long double where numpy has it); the
    calling test is skipped where long double is no wider than z's dtype."""
    if np.finfo(np.longdouble).eps >= np.finfo(z.dtype).eps:
        pytest.skip("no extended precision here for a reference")
    wide = np.asarray(z, dtype=np.longdouble)
    e = np.exp(-np.abs(wide))
    r = 1 / (1 + e)
    return np.where(wide >= 0, r, e * r), e * r * r


@pytest.mark.parametrize("dtype, low", [(np.float64, -709.0), (np.float32, -87.0)])
def test_sigmoid_fast_path_is_exact_to_a_few_ulps(dtype, low):
    """Where exp(-z) does not overflow, sigma = 1/(1 + exp(-z)) and sigma' = (u sigma) sigma
    are the fast path; they must match the exact values to a few ulps over the whole range,
    deep in both saturations included (sigma' ~ 1e-308 and sigma ~ 1e-38 at the ends). The
    exp(-|z|) form is off by as much (4.1 ulps for float32 sigma'(2.68): rounding of exp and
    of three products)."""
    z = np.concatenate([np.linspace(low, 40.0, 20_001), np.linspace(-8.0, 8.0, 2001)])
    z = z.astype(dtype).reshape(1, -1)
    layer = Sigmoid(dtype)
    with _strict():
        out = layer.forward(z).copy()
        grad = layer.backward(np.ones_like(z)).copy()
    assert _sigmoid_max_ulps(out, grad, z) <= 5


def _sigmoid_max_ulps(out, grad, z):
    sigma, derivative = _sigmoid_reference(z)
    tiny = np.finfo(out.dtype).tiny  # compare normal numbers only: subnormals carry few bits
    errors = []
    for got, want in ((out, sigma), (grad, derivative)):
        normal = np.abs(want) >= tiny
        ulp = np.spacing(np.abs(want[normal]).astype(out.dtype)).astype(np.longdouble)
        errors.append(float(np.max(np.abs(got[normal] - want[normal]) / ulp)))
    return max(errors)


@pytest.mark.parametrize("dtype, overflowing", [(np.float64, -720.0), (np.float32, -95.0)])
def test_sigmoid_falls_back_where_exp_overflows(dtype, overflowing):
    """One entry whose exp(-z) overflows sends the whole forward to the exp(-|z|) form: no
    warning, the subnormal sigma(z) kept (not rounded to 0), the other entries as exact as
    on the fast path, and backward consistent with that forward."""
    z = np.array([[overflowing, -30.0, -1.0, 0.0, 2.0, 30.0]], dtype=dtype)
    layer = Sigmoid(dtype)
    with _strict():
        out = layer.forward(z).copy()
        grad = layer.backward(np.ones_like(z)).copy()
    assert 0.0 < out[0, 0] < np.finfo(dtype).tiny  # subnormal, not 0
    assert 0.0 < grad[0, 0] < np.finfo(dtype).tiny
    fast = Sigmoid(dtype)
    np.testing.assert_allclose(fast.forward(z[:, 1:]), out[:, 1:], rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(
        fast.backward(np.ones_like(z[:, 1:])), grad[:, 1:], rtol=4 * np.finfo(dtype).eps
    )
    assert _sigmoid_max_ulps(out, grad, z) <= 5


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_at_infinities_and_nan(dtype):
    z = np.array([[-np.inf, np.inf, np.nan, 1.0]], dtype=dtype)
    layer = Sigmoid(dtype)
    with np.errstate(over="raise", divide="raise"):
        out = layer.forward(z).copy()
        grad = layer.backward(np.ones_like(z))
    assert out[0, 0] == 0.0 and out[0, 1] == 1.0 and np.isnan(out[0, 2])
    assert grad[0, 0] == 0.0 and grad[0, 1] == 0.0 and np.isnan(grad[0, 2])
    assert layer.saturation() == pytest.approx(2 / 4)  # nan is not saturated


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_of_an_empty_batch(dtype):
    layer = Sigmoid(dtype)
    assert layer.forward(np.zeros((0, 3), dtype=dtype)).shape == (0, 3)
    assert layer.backward(np.zeros((0, 3), dtype=dtype)).shape == (0, 3)
    model = MLP(3, 1, 2, 4, "sigmoid", rng=np.random.default_rng(0), dtype=dtype)
    assert model.forward(np.zeros((0, 3))).shape == (0, 1)


# --- losses at extreme logits ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bce_with_logits_at_1e4(dtype):
    logits = np.array([[1e4, -1e4], [1e4, -1e4]], dtype=dtype)
    targets = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)  # right, right, wrong, wrong
    with _strict():
        loss, grad = bce_with_logits(logits, targets)
    assert isinstance(loss, float)
    assert loss == 2e4 / 4  # log1p(exp(-1e4)) = 0: the loss terms are 0, 0, 1e4, 1e4
    assert grad.dtype == dtype
    np.testing.assert_array_equal(grad, [[0.0, 0.0], [0.25, -0.25]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_at_1e4(dtype):
    logits = np.array([[1e4, -1e4, 0.0]] * 3, dtype=dtype)
    labels = np.array([0, 1, 2])
    with _strict():
        loss, grad = cross_entropy(logits, labels)
    assert isinstance(loss, float)
    assert loss == pytest.approx((0.0 + 2e4 + 1e4) / 3, rel=1e-15)
    assert grad.dtype == dtype
    # softmax = (1, 0, 0) exactly in floating point; grad = (softmax - onehot) / 3
    third = float(np.asarray(1.0, dtype) / 3)
    np.testing.assert_array_equal(
        grad, np.array([[0, 0, 0], [1, -1, 0], [1, 0, -1]], dtype=dtype) * np.asarray(third, dtype)
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mse_at_1e4(dtype):
    predictions = np.array([[1e4], [-1e4]], dtype=dtype)
    targets = np.array([[1.0], [0.0]], dtype=dtype)
    with _strict():
        loss, grad = mse(predictions, targets)
    assert isinstance(loss, float)
    # the sum of squares is accumulated in the input's dtype: float32 precision for float32
    assert loss == pytest.approx((9999.0**2 + 1e8) / 2, rel=1e-15 if dtype == np.float64 else 1e-7)
    assert grad.dtype == dtype
    np.testing.assert_array_equal(grad, [[9999.0], [-1e4]])  # 2 (y - t) / 2
    np.testing.assert_array_equal(predictions, [[1e4], [-1e4]])  # inputs not modified


# --- float32 end to end ------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
def test_float32_model_stays_float32_and_reports_float64(norm, activation):
    rng = np.random.default_rng(1)
    model = MLP(5, 3, depth=3, width=8, activation=activation, norm=norm, dtype="float32", rng=rng)
    x = rng.normal(size=(6, 5))  # float64 input is cast
    labels = rng.integers(0, 3, size=6)
    probe = Probe(model)
    probe.start(layer_stats=True)
    out = model.forward(x, probe=probe)
    assert out.dtype == np.float32
    loss, dlogits = cross_entropy(out, labels)
    assert isinstance(loss, float) and math.isfinite(loss)
    assert dlogits.dtype == np.float32
    dx = model.backward(dlogits, input_grad=True, probe=probe)
    assert dx.dtype == np.float32
    for layer in model.layers:
        assert layer.output.dtype == np.float32, type(layer).__name__
    for name in model.params:
        assert model.params[name].dtype == np.float32, name
        assert model.grads[name].dtype == np.float32, name
    for name, buffer in model.buffers.items():
        assert buffer.dtype == np.float32, name
    for delta in model.deltas():
        assert delta.dtype == np.float32
    stats = probe.layer_stats()
    for name, values in stats.items():
        assert values.dtype == np.float64, name
        assert values.shape == (3,), name
    norm_value = global_norm(list(model.grads.values()))
    assert type(norm_value) is float
    assert stats["weight_grad_norm"][0] == l2_norm(model.grads["layer1.weight"])
    result = clip_by_global_norm(list(model.grads.values()), 1e-3)
    assert all(type(v) is float for v in (result.norm, result.clipped_norm, result.factor))
    for name in model.grads:
        assert model.grads[name].dtype == np.float32, name


def test_layer_stats_see_vanishing_gradients():
    """A weight gradient of 1e-200 shows up as 1e-199 (not 0) in the per-layer stats."""
    model = MLP(4, 1, depth=2, width=25, rng=np.random.default_rng(2))
    model.backward(model.forward(np.random.default_rng(3).normal(size=(5, 4))))
    model.grads["layer1.weight"][...] = 1e-200
    model.grads["layer1.bias"][...] = 1e-40
    probe = Probe(model)
    probe.start(layer_stats=True)
    with _strict():
        probe.backward(model.blocks[0])  # as MLP.backward calls it after layer 1's backward
        stats = probe.layer_stats()
    assert stats["weight_grad_norm"][0] == pytest.approx(10.0 * 1e-200, rel=1e-12)
    assert stats["bias_grad_norm"][0] == pytest.approx(5.0 * 1e-40, rel=1e-12)
