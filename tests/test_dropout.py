"""Dropout: inverted masks in training, none in eval, exact gradients with a fixed mask (also
with BatchNorm and LayerNorm), masks from the run's own generator, nothing drawn at p = 0."""

import json

import numpy as np
import pytest
from gradcheck import check_layer, check_model

from gradlab import runner, seeds
from gradlab.config import config_from_dict
from gradlab.engine import MLP, Dropout, cross_entropy, mse
from gradlab.engine.model import memory_footprint
from gradlab.errors import EngineError


def _model(dropout=0.3, seed=0, **kwargs):
    spec = dict(input_dim=4, output_dim=2, depth=3, width=6, activation="tanh")
    spec.update(weight_scale=1.5, bias_scale=0.3, rng=np.random.default_rng(seed))
    spec.update(kwargs)
    return MLP(**spec, dropout=dropout)


def test_training_masks_are_inverted_and_eval_is_the_identity():
    layer = Dropout(0.25, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(400, 50))
    y = layer.forward(x, train=True)
    kept = y != 0
    assert abs(1 - kept.mean() - 0.25) < 0.01
    np.testing.assert_array_equal(y[kept], x[kept] * (1 / 0.75))
    grad = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(grad, kept * (1 / 0.75))
    assert layer.forward(x, train=False) is x
    assert layer.backward(x) is x
    with pytest.raises(EngineError, match="in \\(0, 1\\)"):
        Dropout(1.0, np.random.default_rng(0))


def test_dropout_layer_gradient_with_a_fixed_mask():
    rng = np.random.default_rng(3)
    layer = Dropout(0.4, rng)
    state = rng.bit_generator.state
    forward = layer.forward

    def fixed_mask_forward(x, train=True):
        rng.bit_generator.state = state  # every forward draws the same mask
        return forward(x, train)

    layer.forward = fixed_mask_forward
    check_layer(layer, np.random.default_rng(4).normal(size=(7, 5)), np.random.default_rng(5))


def _fix_masks(model):
    """Make every training forward of ``model`` draw the same masks (all blocks share one
    generator: resetting its state repeats them)."""
    state = model.dropout_rng.bit_generator.state
    forward = model.forward

    def fixed(x, train=True, probe=None):
        model.dropout_rng.bit_generator.state = state
        return forward(x, train, probe)

    model.forward = fixed
    return model


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
def test_whole_network_with_dropout_and_a_fixed_mask(activation, norm):
    rng = np.random.default_rng(7)
    model = _fix_masks(_model(activation=activation, norm=norm))
    x = rng.normal(size=(7, 4))
    targets = rng.integers(0, 2, size=7)
    check_model(model, cross_entropy, x, targets, rng)
    outputs = model.forward(x)
    assert not np.array_equal(outputs, model.predict(x))  # the check ran with masks


def test_a_new_mask_each_step_and_eval_ignores_dropout():
    model = _model()
    x = np.random.default_rng(2).normal(size=(5, 4))
    first, second = model.forward(x), model.forward(x)
    assert not np.array_equal(first, second)
    plain = _model(dropout=0.0)
    np.testing.assert_array_equal(model.forward(x, train=False), plain.forward(x, train=False))
    np.testing.assert_array_equal(model.predict(x), plain.predict(x))


def test_zero_dropout_builds_no_layer_and_draws_nothing():
    rng = np.random.default_rng(0)
    model = MLP(4, 2, 3, 6, rng=rng, dropout=0.0)
    assert model.dropout_rng is None
    assert all(block.dropout is None for block in model.blocks)
    state = rng.bit_generator.state
    mse(model.forward(np.ones((3, 4))), np.zeros((3, 2)))
    assert rng.bit_generator.state == state
    with pytest.raises(EngineError, match="dropout"):
        MLP(4, 2, 3, 6, dropout=1.0)


def test_float32_dropout_keeps_its_dtype():
    model = _model(dtype="float32")
    outputs = model.forward(np.ones((3, 4), dtype=np.float32))
    assert outputs.dtype == np.float32
    assert model.backward(np.ones_like(outputs), input_grad=True).dtype == np.float32


def _held_by_a_step(dropout):
    """Bytes of the (batch, features) arrays a training step leaves, and the estimate."""
    model = _model(dropout=dropout)
    _, dlogits = mse(model.forward(np.ones((16, 4))), np.zeros((16, 2)))
    model.backward(dlogits)
    held = [a for layer in model.layers for a in layer._scratch.values()]
    held += list(model._input_grads.values())
    measured = sum(a.nbytes for a in held if a.ndim == 2 and a.shape[0] == 16)
    footprint = memory_footprint(4, 2, 3, 6, "tanh", "none", batch=16, dropout=dropout)
    return measured, footprint["activations"]


def test_footprint_counts_the_dropout_arrays():
    with_dropout, without = _held_by_a_step(0.2), _held_by_a_step(0.0)
    added = with_dropout[0] - without[0]
    assert added == 3 * 3 * 16 * 6 * 8  # mask, output and dL/dx in each of 3 blocks
    assert with_dropout[1] - without[1] == added


def test_the_masks_come_from_the_runs_own_dropout_stream():
    config = config_from_dict({"model": {"dropout": 0.1}})
    model = runner.build_model(config, np.random.default_rng(0))
    fourth = np.random.SeedSequence(config.seed).spawn(4)[3]
    assert model.dropout_rng.random() == np.random.default_rng(fourth).random()
    # the data, init and batch streams are the first three children, as before
    first_three = np.random.SeedSequence(0).spawn(4)[:3]
    for new, old in zip(seeds.seed_streams(config), first_three, strict=True):
        assert new.generate_state(4).tolist() == old.generate_state(4).tolist()
    assert runner.build_model(config_from_dict({}), np.random.default_rng(0)).dropout_rng is None


def _dropout_config(small_config, dropout, norm="none", weight_scale=1.0):
    config = json.loads(json.dumps(small_config))
    config["model"].update(dropout=dropout, norm=norm, activation="tanh")
    config["model"]["init"] = {"weight_scale": weight_scale}
    return config_from_dict(config)


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_runs_with_dropout_are_deterministic_and_differ_from_runs_without(
    small_config, tmp_path, norm
):
    first = runner.run_config(_dropout_config(small_config, 0.2, norm), out=tmp_path / "a")
    again = runner.run_config(_dropout_config(small_config, 0.2, norm), out=tmp_path / "b")
    plain = runner.run_config(_dropout_config(small_config, 0.0, norm), out=tmp_path / "c")
    assert first.status == "completed"
    for name in ("metrics.csv", "layers.csv", "summary.json"):
        assert (first.path / name).read_bytes() == (again.path / name).read_bytes()
    assert (first.path / "layers.csv").read_bytes() != (plain.path / "layers.csv").read_bytes()
    theory = first.summary["theory"]
    assert theory["dropout"] == 0.2
    if norm == "none":
        assert theory["c_star"] < 1 and theory["xi_c"] > 0
    if norm == "batch":
        assert theory["applicable"] is False and "dropout" in theory["reason"]


def test_every_run_summary_carries_the_depth_scales(small_config, tmp_path):
    config = _dropout_config(small_config, 0.0, weight_scale=0.8)
    run = runner.run_config(config, out=tmp_path / "r")
    theory = run.summary["theory"]
    for key in ("xi_grad", "xi_q", "c_star", "chi_c", "xi_c", "notes", "gradient_toward_input"):
        assert key in theory
    assert theory["dropout"] == 0.0 and theory["c_star"] == 1.0
    assert theory["xi_c"] == pytest.approx(theory["xi_grad"], rel=1e-9)
