"""The MLP: structure, parameter access, deltas, determinism, overwrite semantics, stats."""

import numpy as np
import pytest

from gradlab.engine import MLP, Probe, mse
from gradlab.engine.layers import Sigmoid, Tanh
from gradlab.engine.norms import l2_norm
from gradlab.engine.probe import STAT_NAMES
from gradlab.errors import GradlabError


def _model(**kwargs):
    spec = dict(input_dim=5, output_dim=2, depth=4, width=7, rng=np.random.default_rng(0))
    spec.update(kwargs)
    return MLP(**spec)


def _step(model, x, y, probe=None):
    loss, dlogits = mse(model.forward(x, probe=probe), y)
    model.backward(dlogits, probe=probe)
    return loss


def _probed(model, x, y=None):
    """A probe that took every statistic of a forward (and, with ``y``, backward) pass."""
    probe = Probe(model)
    probe.start(layer_stats=True)
    if y is None:
        model.forward(x, probe=probe)
    else:
        _step(model, x, y, probe)
    return probe


class _Made:
    """An optimizer that made ``updates`` and knows their norms (``known``) or not."""

    def __init__(self, updates, known=None):
        self.updates, self.known = updates, known

    def update_norms(self, grad_norms):
        return self.known


def test_structure_and_names():
    model = _model(norm="layer")
    assert len(model.blocks) == 4
    assert [b.index for b in model.blocks] == [1, 2, 3, 4]
    assert model.params["layer1.weight"].shape == (5, 7)
    assert model.params["layer2.weight"].shape == (7, 7)
    assert model.params["output.weight"].shape == (7, 2)
    assert model.params["layer3.norm.gamma"].shape == (7,)
    assert set(model.params) == set(model.grads)
    assert model.hidden_weight_names() == [f"layer{i}.weight" for i in range(1, 5)]


def test_from_dict_matches_constructor():
    spec = dict(input_dim=3, output_dim=1, depth=2, width=4, activation="tanh")
    a = MLP.from_dict(spec, rng=np.random.default_rng(5))
    b = MLP(**spec, rng=np.random.default_rng(5))
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


def test_backward_overwrites_gradients():
    rng = np.random.default_rng(1)
    model = _model()
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    _step(model, x, y)
    first = {name: g.copy() for name, g in model.grads.items()}
    _step(model, x, y)
    for name, g in model.grads.items():
        np.testing.assert_array_equal(g, first[name], err_msg=name)


def test_delta_is_gradient_wrt_linear_output_before_norm():
    """delta_l = dL/dh_l: perturbing h_l of one sample by t changes L by <delta_l, t>."""
    rng = np.random.default_rng(2)
    model = _model(norm="batch")
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    _step(model, x, y)
    delta = model.deltas()[1].copy()  # layer 2
    bias = model.params["layer2.bias"]
    # a bias shift adds t to h_2 of every sample: dL/dt = sum over the batch of delta (about
    # 0 under BatchNorm, so the two summation orders agree to rounding of the summed terms)
    rounding = 8 * np.finfo(np.float64).eps * np.abs(delta).sum(0).max()
    np.testing.assert_allclose(model.grads["layer2.bias"], delta.sum(0), rtol=0, atol=rounding)
    weight_grad = model.blocks[0].activation.output.T @ delta
    np.testing.assert_allclose(model.grads["layer2.weight"], weight_grad, rtol=1e-12)
    assert bias.shape == (7,)


def test_load_params_and_errors():
    model = _model()
    model.load_params({"layer1.bias": np.full(7, 0.5)})
    np.testing.assert_array_equal(model.params["layer1.bias"], 0.5)
    assert model.blocks[0].linear.params["bias"] is model.params["layer1.bias"]
    with pytest.raises(GradlabError, match="unknown parameter"):
        model.load_params({"layer9.bias": np.zeros(7)})
    with pytest.raises(GradlabError, match="shape"):
        model.load_params({"layer1.bias": np.zeros(3)})


def test_forward_returns_a_fresh_array_and_checks_shape():
    rng = np.random.default_rng(3)
    model = _model()
    a = model.forward(rng.normal(size=(4, 5)))
    b = model.forward(rng.normal(size=(4, 5)))
    assert not np.shares_memory(a, b)
    assert not np.array_equal(a, b)
    with pytest.raises(GradlabError, match=r"\(batch, 5\)"):
        model.forward(np.zeros((4, 3)))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(depth=0),
        dict(width=0),
        dict(norm="group"),
        dict(activation="swish"),
        dict(dtype="int8"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs):
    with pytest.raises(GradlabError):
        _model(**kwargs)


def test_layer_stats_shapes_and_values():
    rng = np.random.default_rng(4)
    model = _model(activation="sigmoid")
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    probe = _probed(model, x, y)
    assert np.isnan(probe.layer_stats()["update_ratio"]).all()  # no update made yet
    updates = {name: 0.1 * g for name, g in model.grads.items()}
    probe.after_step(_Made(updates), probe.grad_norms)
    stats = probe.layer_stats()
    for values in stats.values():
        assert values.shape == (4,) and values.dtype == np.float64
    np.testing.assert_allclose(
        stats["weight_grad_norm"][2], np.linalg.norm(model.grads["layer3.weight"]), rtol=1e-14
    )
    np.testing.assert_allclose(
        stats["delta_norm"][0], np.linalg.norm(model.deltas()[0]), rtol=1e-14
    )
    activation = model.blocks[3].activation.output
    np.testing.assert_allclose(stats["act_mean"][3], activation.mean(), rtol=1e-14)
    np.testing.assert_allclose(stats["act_std"][3], activation.std(), rtol=1e-14)
    saturated = np.mean((activation < 0.01) | (activation > 0.99))
    assert stats["saturation"][3] == saturated
    expected_ratio = 0.1 * np.linalg.norm(model.grads["layer1.weight"])
    expected_ratio /= np.linalg.norm(model.params["layer1.weight"])
    np.testing.assert_allclose(stats["update_ratio"][0], expected_ratio, rtol=1e-13)


@pytest.mark.parametrize("dtype, disagreements", [(np.float64, 0), (np.float32, 1)])
def test_saturation_counted_with_one_comparison_matches_the_output_definition(dtype, disagreements):
    """Counting sigmoid' < 0.0099 (sigmoid) or e = exp(-2|z|) < 1/199 (tanh) is the
    definition on the output (sigmoid < 0.01 or > 0.99; |tanh| > 0.99) across the
    thresholds; float32's rounding of the output moves at most one point of this
    2-million-point grid."""
    z = np.linspace(-8.0, 8.0, 2_000_001).astype(dtype).reshape(1, -1)
    for layer, definition in (
        (Sigmoid(dtype), lambda out: (out < 0.01) | (out > 0.99)),
        (Tanh(dtype), lambda out: np.abs(out) > 0.99),
    ):
        expected = np.count_nonzero(definition(layer.forward(z)))
        assert abs(layer.saturation() * z.size - expected) <= disagreements
        assert expected > 0.4 * z.size


def test_saturation_definitions():
    rng = np.random.default_rng(5)
    relu = _model(activation="relu", weight_scale=1.0)
    relu.params["layer2.bias"][:3] = -1e6  # three units of layer 2 can never fire
    stats = _probed(relu, rng.normal(size=(8, 5))).layer_stats()
    assert stats["saturation"][1] == pytest.approx(3 / 7)
    tanh = _model(activation="tanh", weight_scale=50.0)
    stats = _probed(tanh, rng.normal(size=(8, 5))).layer_stats()
    output = tanh.blocks[2].activation.output
    assert stats["saturation"][2] == np.mean(np.abs(output) > 0.99) > 0.5
    linear = _model(activation="linear")
    assert (_probed(linear, rng.normal(size=(8, 5))).layer_stats()["saturation"] == 0).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_activation_mean_and_std_are_float64_accurate(dtype):
    rng = np.random.default_rng(5)
    model = _model(activation="tanh", dtype=dtype, width=64)
    x = rng.normal(size=(32, 5)).astype(dtype)
    stats = _probed(model, x, rng.normal(size=(32, 2)).astype(dtype)).layer_stats()
    for index, block in enumerate(model.blocks):
        output = block.activation.output
        assert output.dtype == dtype
        mean, std = np.mean(output, dtype=np.float64), np.std(output, dtype=np.float64)
        assert stats["act_mean"][index] == pytest.approx(mean, rel=1e-12, abs=1e-15)
        assert stats["act_std"][index] == pytest.approx(std, rel=1e-12)


def test_each_array_is_measured_once_per_step(monkeypatch):
    """The layer statistics take the gradient norms the backward pass measured (for clipping)
    instead of measuring them again: per logged step, one norm of each gradient, delta and
    hidden weight; per other step, of each gradient only."""
    import gradlab.engine.probe as probe_module

    measured = []
    monkeypatch.setattr(
        probe_module, "l2_norm", lambda array: measured.append(id(array)) or l2_norm(array)
    )
    rng = np.random.default_rng(6)
    model = _model(norm="layer")
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    probe = _probed(model, x, y)
    weights = [id(block.linear.params["weight"]) for block in model.blocks]
    deltas = [id(delta) for delta in model.deltas()]
    everything = [id(grad) for grad in model.grads.values()] + weights + deltas
    assert sorted(measured) == sorted(everything)
    stats = probe.layer_stats()
    assert list(stats["weight_grad_norm"]) == probe.grad_norms[0:-2:4]  # layer l: W b gamma beta
    measured.clear()
    probe.start(layer_stats=False)
    _step(model, x, y, probe)
    assert sorted(measured) == sorted(id(grad) for grad in model.grads.values())


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_statistics_taken_during_the_passes_equal_those_computed_after(norm):
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(6, 5)), rng.normal(size=(6, 2))
    probed, plain = _model(norm=norm), _model(norm=norm)
    probe = _probed(probed, x, y)
    _step(plain, x, y)
    for name, value in plain.grads.items():  # probing changes nothing the model computes
        np.testing.assert_array_equal(probed.grads[name], value, err_msg=name)
    assert probe.grad_norms == [l2_norm(value) for value in plain.grads.values()]
    mean_std = [Probe(plain).mean_std(block.activation.output) for block in plain.blocks]
    expected = {
        "weight_grad_norm": [l2_norm(plain.grads[f"layer{i}.weight"]) for i in range(1, 5)],
        "bias_grad_norm": [l2_norm(plain.grads[f"layer{i}.bias"]) for i in range(1, 5)],
        "delta_norm": [l2_norm(delta) for delta in plain.deltas()],
        "weight_norm": [l2_norm(block.linear.params["weight"]) for block in plain.blocks],
        "act_mean": [mean for mean, _ in mean_std],
        "act_std": [std for _, std in mean_std],
        "saturation": [block.activation.saturation() for block in plain.blocks],
        "update_ratio": [np.nan] * 4,
    }
    stats = probe.layer_stats()
    assert list(stats) == list(STAT_NAMES)
    for name in STAT_NAMES:
        np.testing.assert_array_equal(stats[name], expected[name], err_msg=name)
    # a step without layer statistics still takes every gradient norm, and forgets the
    # statistics of the last one
    probe.start(layer_stats=False)
    _step(probed, rng.normal(size=(6, 5)), y, probe)
    assert probe.grad_norms == [l2_norm(value) for value in probed.grads.values()]
    for name in STAT_NAMES:
        assert np.isnan(probe.layer_stats()[name]).all(), name


def test_update_ratio_uses_the_weights_the_update_was_applied_to():
    model = _model()
    rng = np.random.default_rng(9)
    probe = _probed(model, rng.normal(size=(6, 5)))
    before = probe.layer_stats()["weight_norm"]
    updates = {"layer1.weight": np.full_like(model.params["layer1.weight"], 0.5)}
    model.params["layer1.weight"] -= updates["layer1.weight"]
    probe.after_step(_Made(updates), probe.grad_norms)
    ratios = probe.layer_stats()["update_ratio"]
    assert ratios[0] == pytest.approx(np.linalg.norm(updates["layer1.weight"]) / before[0])
    assert np.isnan(ratios[1:]).all()
    # known update norms (Optimizer.update_norms) are used instead of measuring the updates
    known = {"layer1.weight": 2.0, "layer2.weight": 3.0}
    probe.after_step(_Made(updates, known), probe.grad_norms)
    ratios = probe.layer_stats()["update_ratio"]
    np.testing.assert_allclose(ratios[:2], [2.0 / before[0], 3.0 / before[1]], rtol=1e-15)
    assert np.isnan(ratios[2:]).all()


def test_std_of_a_saturated_layer_does_not_cancel():
    """All outputs ~1: E[x^2] - mean^2 would cancel; the two-pass formula takes over."""
    model = _model()
    values = 1.0 - np.linspace(0.0, 1e-12, 64).reshape(8, 8)
    mean, std = Probe(model).mean_std(values)
    assert mean == pytest.approx(values.mean(), rel=1e-15)
    assert std == pytest.approx(values.std(), rel=1e-9)
