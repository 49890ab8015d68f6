"""Memory: evaluation keeps nothing per layer, training keeps what the estimate counts, the
estimate is close to the measured peak, and the CLI warns before a run too big for the
machine."""

import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from gradlab import memory, runner
from gradlab.cli import cli
from gradlab.config import config_from_dict
from gradlab.engine import MLP, Probe, mse
from gradlab.engine.model import memory_footprint


def _model(depth=5, activation="sigmoid", norm="none", dtype="float64", weight_scale=1.0):
    return MLP(
        input_dim=6,
        output_dim=3,
        depth=depth,
        width=9,
        activation=activation,
        norm=norm,
        weight_scale=weight_scale,
        bias_scale=0.3,
        dtype=dtype,
        rng=np.random.default_rng(1),
    )


def _inputs(rows, seed=2):
    return np.random.default_rng(seed).normal(0.0, 2.0, (rows, 6))


def _train_step(model, batch=16):
    """One logged training step, as the runner takes it; returns its probe."""
    probe = Probe(model)
    probe.start(layer_stats=True)
    outputs = model.forward(_inputs(batch, seed=3), train=True, probe=probe)
    _, dlogits = mse(outputs, np.zeros_like(outputs))
    model.backward(dlogits, probe=probe)
    probe.layer_stats()
    return probe


def _measure_again(probe, model):
    """The probe's statistics taken anew from the arrays the last passes left."""
    probe.start(layer_stats=True)
    for block in model.blocks:
        probe.forward(block)
    probe.output_backward(model.output)
    for block in reversed(model.blocks):
        probe.backward(block)
    return probe.layer_stats()


def _held_arrays(model):
    """Every array the layers allocated (their reusable buffers, and the shared dL/dx)."""
    arrays = [array for layer in model.layers for array in layer._scratch.values()]
    return arrays + list(model._input_grads.values())


def _held_bytes(model):
    return sum(array.nbytes for array in _held_arrays(model))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "linear"])
def test_predict_is_the_eval_forward_bit_for_bit(activation, norm, dtype):
    model = _model(activation=activation, norm=norm, dtype=dtype)
    _train_step(model)  # BatchNorm's running statistics move away from 0 and 1
    x = _inputs(23)
    expected = model.forward(x, train=False)
    got = model.predict(x)
    assert got.dtype == expected.dtype and got.shape == (23, 3)
    np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predict_matches_where_sigmoid_takes_its_overflow_path(dtype):
    model = _model(dtype=dtype, weight_scale=3000.0)
    x = _inputs(40)
    expected = model.forward(x, train=False)
    limit = np.log(np.finfo(dtype).max)  # exp(-z) overflows below -limit
    assert any(block.linear.output.min() < -limit for block in model.blocks)
    np.testing.assert_array_equal(model.predict(x).view(np.uint8), expected.view(np.uint8))


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_predict_leaves_training_state_and_memory_untouched(norm):
    model = _model(depth=6, activation="tanh", norm=norm)
    probe = _train_step(model)
    held = [array.copy() for array in _held_arrays(model)]
    held_bytes = _held_bytes(model)
    stats = _measure_again(probe, model)
    buffers = {name: value.copy() for name, value in model.buffers.items()}
    for rows in (50, 200, 16):  # new batch shapes, and the training one
        model.predict(_inputs(rows))
    assert _held_bytes(model) == held_bytes  # nothing new per layer or per shape
    for before, after in zip(held, _held_arrays(model), strict=True):
        np.testing.assert_array_equal(after, before)
    for name, value in _measure_again(probe, model).items():
        np.testing.assert_array_equal(value, stats[name])
    for name, value in model.buffers.items():
        np.testing.assert_array_equal(value, buffers[name])


def _peak_bytes_of(call):
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_predict_memory_does_not_grow_with_depth(norm):
    rows, width = 400, 9
    x = _inputs(rows)
    shallow, deep = (_model(depth=depth, norm=norm) for depth in (3, 60))
    shallow_peak = _peak_bytes_of(lambda: shallow.predict(x))
    deep_peak = _peak_bytes_of(lambda: deep.predict(x))
    # two (rows, width) arrays and the output, whatever the depth; a per-layer cache of even
    # one (rows, width) array would add 57 of them
    assert shallow_peak >= 2 * rows * width * 8
    assert deep_peak < shallow_peak + rows * width * 8


@pytest.mark.parametrize(
    ("activation", "norm", "dtype"),
    [
        ("sigmoid", "none", "float64"),
        ("tanh", "layer", "float32"),
        ("relu", "batch", "float64"),
        ("linear", "none", "float32"),
    ],
)
def test_footprint_counts_the_arrays_training_keeps(activation, norm, dtype):
    batch, depth = 16, 7
    model = _model(depth=depth, activation=activation, norm=norm, dtype=dtype)
    probe = _train_step(model, batch)
    model.predict(_inputs(100))  # evaluation adds nothing to count
    footprint = memory_footprint(6, 3, depth, 9, activation, norm, dtype, batch=batch)
    # the (batch, features) arrays; per-feature and per-sample vectors are left out
    per_sample = [
        array
        for array in _held_arrays(model)
        if array.ndim == 2 and array.shape[0] == batch and array.shape[1] > 1
    ]
    assert sum(array.nbytes for array in per_sample) == footprint["activations"]
    statistics = sum(array.nbytes for array in [*probe._ones.values(), *probe._centred.values()])
    assert 0 < statistics <= footprint["statistics"]
    parameters = sum(value.nbytes for value in model.params.values())
    assert footprint["parameters"] == 2 * parameters  # values and gradients


def _own_input_grads(model):
    for layer in model.layers:
        if hasattr(layer, "workspace"):
            layer.workspace = None
    return model


@pytest.mark.parametrize(
    ("activation", "norm"),
    [("sigmoid", "none"), ("relu", "batch"), ("linear", "layer"), ("linear", "none")],
)
def test_shared_input_gradients_change_no_result(activation, norm):
    shared = _model(activation=activation, norm=norm)
    own = _own_input_grads(_model(activation=activation, norm=norm))
    x = _inputs(16, seed=3)
    results = []
    for model in (shared, own):
        probe = Probe(model)
        probe.start(layer_stats=True)
        outputs = model.forward(x, train=True, probe=probe)
        input_grad = model.backward(outputs - 1.0, input_grad=True, probe=probe)
        results.append((input_grad, model.deltas(), model.grads, probe.layer_stats()))
    (input_grad, deltas, grads, stats), (input_grad_own, deltas_own, grads_own, stats_own) = results
    np.testing.assert_array_equal(input_grad, input_grad_own)
    for delta, delta_own in zip(deltas, deltas_own, strict=True):
        np.testing.assert_array_equal(delta, delta_own)
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads_own[name])
    for name in stats:
        np.testing.assert_array_equal(stats[name], stats_own[name])
    # one (16, 9) dL/dx array (and layer 1's (16, 6)) serves every Linear, unless the
    # activation passes dL/dx on unchanged
    expected = {} if (activation, norm) == ("linear", "none") else {(16, 9), (16, 6)}
    assert set(shared._input_grads) == set(expected)


@pytest.mark.parametrize(
    "spec",
    [
        {"model": {"depth": 600, "width": 64}, "train": {"steps": 1}, "log": {"every": 1}},
        {
            "dtype": "float32",
            "model": {"depth": 150, "width": 128, "activation": "tanh", "norm": "layer"},
            "train": {"steps": 1, "batch_size": 256, "optimizer": "adam"},
        },
        {"data": {"n_train": 60000, "input_dim": 64}, "model": {"depth": 2}, "train": {"steps": 1}},
    ],
    ids=["deep", "wide-float32-adam", "data"],
)
def test_estimate_is_close_to_the_measured_peak(spec, tmp_path):
    """The estimate less the interpreter's share against the peak of the bytes numpy and
    Python allocate during the run (tracemalloc sees numpy's data buffers): deterministic,
    unlike the process's peak RSS, which BLAS thread buffers and a busy machine move by
    100 MB (benchmarks/deep_memory.py reports RSS)."""
    config = config_from_dict({"name": "m", **spec})
    tracemalloc.start()
    try:
        runner.run_config(config, out=tmp_path / "run")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    estimate = memory.estimate_memory(config) - memory._BASE_BYTES
    assert peak / 1.5 < estimate < peak * 1.5, (peak, estimate)


def test_estimate_grows_with_depth_and_batch():
    def estimate(**changes):
        base = {"model": {"depth": 100, "width": 64}, "train": {"batch_size": 64}}
        for key, value in changes.items():
            section, field = key.split("__")
            base[section][field] = value
        return memory.estimate_memory(config_from_dict(base))

    base = estimate()
    assert estimate(model__depth=1000) > base + 9 * 100 * 64 * 64 * 8 * 3  # params, 3 copies
    assert estimate(train__batch_size=256) > base


def test_memory_warning_only_above_half_the_machine():
    config = config_from_dict({"model": {"depth": 50}})
    estimate = memory.estimate_memory(config)
    assert memory.memory_warning(config, machine_bytes=2 * estimate) is None
    warning = memory.memory_warning(config, machine_bytes=2 * estimate - 2)
    assert warning.startswith("warning: ") and "\n" not in warning
    assert f"{estimate / 1e9:.3g} GB" in warning and f"{(2 * estimate - 2) / 1e9:.3g} GB" in warning


@pytest.mark.parametrize(("machine_bytes", "warned"), [(10**6, True), (10**15, False)])
def test_run_command_warns_on_stderr_before_a_run_too_big(
    machine_bytes, warned, write_config, tmp_path, monkeypatch
):
    monkeypatch.setattr(memory, "machine_memory_bytes", lambda: machine_bytes)
    result = CliRunner().invoke(
        cli, ["run", str(write_config()), "--out", str(tmp_path / "r"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == (1 if warned else 0)
    assert "warning" not in result.stdout
    if warned:
        assert "of memory (estimate)" in warnings[0]
