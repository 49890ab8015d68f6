"""BatchNorm and LayerNorm semantics (PyTorch conventions), beyond their gradients."""

import numpy as np
import pytest

from gradlab.engine import MLP, BatchNorm, LayerNorm
from gradlab.errors import GradlabError


def test_batchnorm_running_statistics_follow_the_formula():
    rng = np.random.default_rng(0)
    momentum, eps, features = 0.3, 1e-5, 4
    layer = BatchNorm(features, momentum=momentum, eps=eps)
    running_mean, running_var = np.zeros(features), np.ones(features)
    for _ in range(5):
        x = 3.0 + 2.0 * rng.normal(size=(10, features))
        layer.forward(x, train=True)
        # by hand: biased variance normalizes, the unbiased one feeds running_var
        running_mean = (1 - momentum) * running_mean + momentum * x.mean(axis=0)
        running_var = (1 - momentum) * running_var + momentum * x.var(axis=0, ddof=1)
    np.testing.assert_allclose(layer.buffers["running_mean"], running_mean, rtol=1e-14)
    np.testing.assert_allclose(layer.buffers["running_var"], running_var, rtol=1e-14)


def test_batchnorm_train_uses_batch_statistics_with_biased_variance():
    rng = np.random.default_rng(1)
    layer = BatchNorm(3)
    layer.params["gamma"][...] = [1.0, 2.0, 0.5]
    layer.params["beta"][...] = [0.0, -1.0, 3.0]
    x = rng.normal(size=(8, 3)) * 5 + 1
    expected = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * layer.params["gamma"]
    expected += layer.params["beta"]
    np.testing.assert_allclose(layer.forward(x, train=True), expected, rtol=1e-13)


def test_batchnorm_eval_uses_running_statistics():
    rng = np.random.default_rng(2)
    layer = BatchNorm(3)
    for _ in range(4):
        layer.forward(rng.normal(size=(16, 3)) * 2 + 5, train=True)
    mean, var = layer.buffers["running_mean"].copy(), layer.buffers["running_var"].copy()
    x = rng.normal(size=(5, 3))
    expected = (x - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(layer.forward(x, train=False), expected, rtol=1e-13)
    # eval leaves the running statistics alone and does not depend on the batch
    np.testing.assert_array_equal(layer.buffers["running_mean"], mean)
    single = layer.forward(x[:1], train=False).copy()
    np.testing.assert_allclose(single, expected[:1], rtol=1e-13)


def test_batchnorm_train_batch_of_one_is_an_error():
    with pytest.raises(GradlabError, match="at least 2 samples"):
        BatchNorm(3).forward(np.ones((1, 3)), train=True)


def test_batchnorm_running_statistics_are_buffers_not_params():
    model = MLP(3, 1, depth=2, width=4, norm="batch", rng=np.random.default_rng(0))
    assert set(model.buffers) == {
        "layer1.norm.running_mean",
        "layer1.norm.running_var",
        "layer2.norm.running_mean",
        "layer2.norm.running_var",
    }
    assert not any("running" in name for name in model.params)
    assert "layer1.norm.gamma" in model.params and "layer1.norm.beta" in model.params


def test_layernorm_normalizes_rows_and_is_the_same_in_train_and_eval():
    rng = np.random.default_rng(3)
    layer = LayerNorm(6)
    x = rng.normal(size=(4, 6)) * np.array([[1], [10], [100], [0.1]]) + 7
    expected = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    train_out = layer.forward(x, train=True).copy()
    np.testing.assert_allclose(train_out, expected, rtol=1e-12)
    np.testing.assert_array_equal(layer.forward(x, train=False), train_out)
    # a single sample is fine for LayerNorm (its statistics are per sample)
    np.testing.assert_allclose(layer.forward(x[:1], train=True), expected[:1], rtol=1e-12)


def test_batchnorm_columns_versus_layernorm_rows():
    """The lecture's picture: BN standardizes each column, LN each row."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(32, 8)) * 3 + 2
    bn = BatchNorm(8, eps=0.0).forward(x, train=True)
    ln = LayerNorm(8, eps=0.0).forward(x, train=True)
    np.testing.assert_allclose(bn.mean(axis=0), 0, atol=1e-14)
    np.testing.assert_allclose(bn.std(axis=0), 1, rtol=1e-12)
    np.testing.assert_allclose(ln.mean(axis=1), 0, atol=1e-14)
    np.testing.assert_allclose(ln.std(axis=1), 1, rtol=1e-12)
