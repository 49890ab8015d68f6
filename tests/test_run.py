"""`gradlab run` and the run directory: contents, clipping, divergence, signals, determinism."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import gradlab
from gradlab.config import config_from_dict
from gradlab.engine.probe import STAT_NAMES
from gradlab.results import read_run
from gradlab.runner import _Training, run_config


def _run(write_config, tmp_path, changes=None, out="run"):
    config_path = write_config(changes)
    return gradlab.run(config_path, out=tmp_path / out)


def test_run_writes_every_file(write_config, tmp_path):
    run = _run(write_config, tmp_path)
    assert run.status == "completed"
    for name in ("config.yaml", "meta.json", "metrics.csv", "layers.csv", "summary.json"):
        assert (run.path / name).is_file(), name
    meta = run.meta
    assert meta["status"] == "completed" and meta["step_reached"] == 20 and meta["seed"] == 0
    assert {"gradlab", "numpy", "python", "started_at", "ended_at", "wall_time_s"} <= set(meta)
    # logged steps: every 5 and the final pass; evaluation steps 0, 10, 20
    np.testing.assert_array_equal(run.metrics["step"], [0, 5, 10, 15, 20])
    assert np.isnan(run.metrics["test_loss"][[1, 3]]).all()
    assert np.isfinite(run.metrics["test_loss"][[0, 2, 4]]).all()
    assert np.isfinite(run.metrics["train_eval_loss"][[0, 2, 4]]).all()
    assert np.isnan(run.metrics["train_eval_loss"][[1, 3]]).all()
    assert run.summary["final"]["train_eval_loss"] == run.metrics["train_eval_loss"][-1]
    assert len(run.layers["step"]) == 5 * 6
    np.testing.assert_array_equal(run.layers["layer"][:6], np.arange(1, 7))
    # the resolved config is complete and loads back to the same config
    resolved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert resolved["train"]["clip"] == {"mode": "none", "threshold": 1.0}
    assert config_from_dict(resolved).model.depth == 6
    summary = run.summary
    assert summary["final"]["train_loss"] == pytest.approx(run.metrics["train_loss"][-1])
    assert set(summary["gradient_factor"]) == {"init", "final"}
    assert summary["divergence"] is None


def test_steps_zero_measures_initialization_only(write_config, tmp_path):
    run = _run(write_config, tmp_path, {"train.steps": 0})
    assert run.status == "completed"
    np.testing.assert_array_equal(run.metrics["step"], [0])
    assert len(run.layers["step"]) == 6
    assert (run.layers["weight_grad_norm"] > 0).all()
    assert np.isnan(run.layers["update_ratio"]).all()  # no update was made
    assert run.summary["gradient_factor"]["init"]["delta"] == pytest.approx(
        run.summary["gradient_factor"]["final"]["delta"]
    )


@pytest.mark.parametrize("mode", ["none", "norm", "layer_norm", "value"])
def test_update_ratio_is_the_clipped_step_over_the_weights(write_config, tmp_path, mode):
    """Plain SGD steps by lr * (clipped g), so update_ratio = lr ||clipped g_l|| / ||W_l||.
    Momentum measures its update arrays instead; at step 0 its update is lr * g as well."""
    threshold = 1e-3 if mode == "value" else 0.05  # both clip some steps of this network
    changes = {"log.every": 1, "train.clip.mode": mode, "train.clip.threshold": threshold}
    run = _run(write_config, tmp_path, changes, out=mode)
    layers, lr = run.layers, run.config["train"]["lr"]
    done = layers["step"] < run.config["train"]["steps"]  # the last step makes no update
    ratio = layers["update_ratio"][done]
    unclipped = lr * layers["weight_grad_norm"][done] / layers["weight_norm"][done]
    if mode in ("none", "norm"):  # one factor for every tensor
        factor = run.metrics["clip_factor"][layers["step"][done].astype(int)]
        np.testing.assert_allclose(ratio, factor * unclipped, rtol=1e-13)
    else:  # per tensor or per entry: never longer than the unclipped step, here shorter
        assert (ratio <= unclipped * (1 + 1e-12)).all()
        assert (ratio < unclipped * 0.99).any()
    if mode == "layer_norm":
        assert (ratio <= lr * threshold / layers["weight_norm"][done] * (1 + 1e-9)).all()
    changes["train.optimizer"] = "momentum"
    momentum = _run(write_config, tmp_path, changes, out=f"{mode}-momentum")
    first = layers["step"] == 0
    np.testing.assert_allclose(
        momentum.layers["update_ratio"][first], layers["update_ratio"][first], rtol=1e-12
    )


def test_same_config_and_seed_are_byte_identical(write_config, tmp_path):
    a = _run(write_config, tmp_path, out="a")
    b = _run(write_config, tmp_path, out="b")
    for name in ("metrics.csv", "layers.csv", "summary.json"):
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name
    c = gradlab.run(write_config(), out=tmp_path / "c", seed=1)
    assert (a.path / "metrics.csv").read_bytes() != (c.path / "metrics.csv").read_bytes()


def _training(changes):
    mapping = {"name": "t", **yaml.safe_load(yaml.safe_dump(SMALL_MAPPING))}
    config = config_from_dict(mapping, [f"{k}={v}" for k, v in changes.items()])

    class Sink:
        def log_metrics(self, row):
            pass

        def log_layers(self, step, stats):
            pass

        def flush(self):
            pass

    return _Training(config, Sink(), stop=type("S", (), {"signal_number": None})(), progress=False)


SMALL_MAPPING = {
    "data": {"n_train": 128, "n_test": 64, "input_dim": 8},
    "model": {"depth": 4, "width": 16},
    "train": {"steps": 3, "batch_size": 32},
}


def test_full_batch_uses_the_whole_training_set_every_step():
    training = _training({"train.batch_size": "full"})
    x, y = next(training.batches)
    assert x is training.dataset.x_train and y is training.dataset.y_train
    minibatch = _training({"train.batch_size": 32})
    seen = np.concatenate([next(minibatch.batches)[0] for _ in range(4)])
    # one epoch of minibatches is a permutation of the training set
    np.testing.assert_array_equal(np.sort(seen, axis=0), np.sort(minibatch.dataset.x_train, axis=0))


def test_full_batch_gradient_descent_decreases_the_loss_monotonically(write_config, tmp_path):
    run = _run(
        write_config,
        tmp_path,
        {"train.batch_size": "full", "train.lr": 0.05, "log.every": 1, "model.depth": 3},
    )
    assert (np.diff(run.metrics["train_loss"]) < 0).all()


def test_batchnorm_test_loss_uses_running_statistics():
    training = _training({"model.norm": "batch"})
    training.run()
    x_test, y_test = training.dataset.x_test, training.dataset.y_test
    running_mean = training.model.buffers["layer1.norm.running_mean"].copy()
    eval_loss, _, train_eval_loss, _ = training.evaluate()
    assert eval_loss == training.loss_fn(training.model.forward(x_test, train=False), y_test)[0]
    x_train, y_train = training.dataset.x_train, training.dataset.y_train
    expected = training.loss_fn(training.model.forward(x_train, train=False), y_train)[0]
    assert train_eval_loss == expected  # n_train = 128 <= 1024: the whole training set
    np.testing.assert_array_equal(training.model.buffers["layer1.norm.running_mean"], running_mean)
    batch_loss = training.loss_fn(training.model.forward(x_test, train=True), y_test)[0]
    assert eval_loss != batch_loss


def test_evaluation_leaves_no_per_layer_arrays_at_its_batch_shapes():
    training = _training({"log.eval_every": 1})  # test set 64 rows, training subset 128
    training.run()
    rows = {
        array.shape[0]
        for layer in training.model.layers
        for array in layer._scratch.values()
        if array.ndim == 2
    }
    assert rows == {32}  # the training batch only


@pytest.mark.parametrize("mode", ["norm", "layer_norm", "value"])
def test_each_clip_mode_bounds_the_gradient(mode, write_config, tmp_path):
    threshold = 0.05
    run = _run(
        write_config,
        tmp_path,
        {"train.clip": {"mode": mode, "threshold": threshold}, "log.every": 1},
    )
    m = run.metrics
    assert (m["clip_factor"] <= 1.0).all()
    assert (m["clip_factor"] < 1.0).any(), "the threshold is low enough to clip"
    if mode == "norm":
        assert (m["grad_norm_clipped"] <= threshold).all()
        np.testing.assert_allclose(m["clip_cosine"], 1.0)
    elif mode == "layer_norm":
        n_tensors = 2 * (6 + 1)  # weight and bias of 6 hidden layers and the output layer
        assert (m["grad_norm_clipped"] <= threshold * math.sqrt(n_tensors)).all()
    else:
        assert (m["clip_cosine"][m["clip_factor"] < 1] < 1.0).all()
    np.testing.assert_allclose(m["grad_norm_clipped"], m["grad_norm"] * m["clip_factor"], rtol=1e-9)


def test_no_clipping_reports_factor_one(write_config, tmp_path):
    m = _run(write_config, tmp_path).metrics
    np.testing.assert_array_equal(m["clip_factor"], 1.0)
    np.testing.assert_array_equal(m["grad_norm_clipped"], m["grad_norm"])


def test_divergence_is_a_result_with_step_pass_and_layer(write_config, tmp_path):
    run = _run(
        write_config,
        tmp_path,
        {
            "model.activation": "relu",
            "model.init.weight_scale": 10.0,
            "train.lr": 10.0,
            "train.steps": 50,
            "log.every": 1,
        },
    )
    assert run.status == "diverged"
    divergence = run.summary["divergence"]
    assert divergence == run.meta["divergence"]
    assert divergence["pass"] in ("forward", "backward")
    assert divergence["quantity"] in (
        "loss",
        "output",
        "pre-activation",
        "normalized",
        "activation",
        "delta",
        "weight gradient",
        "bias gradient",
        "gradient norm",
    )
    assert divergence["layer"] == "output" or 1 <= divergence["layer"] <= 6
    assert 0 < divergence["step"] < 50
    assert run.metrics["step"][-1] == divergence["step"]
    last = run.metrics
    assert not (math.isfinite(last["train_loss"][-1]) and math.isfinite(last["grad_norm"][-1]))
    json.loads((run.path / "summary.json").read_text())  # strict JSON despite inf/nan


def _gradient_turns(value, at_step, batch_size):
    """A ``get_loss`` whose training loss (the batches of ``batch_size``) gives, at step
    ``at_step``, the gradient ``value`` everywhere, or (``value`` None) an infinite loss."""
    from gradlab.engine import get_loss

    def make(name):
        loss_fn, steps = get_loss(name), []

        def loss(outputs, targets):
            result = loss_fn(outputs, targets)
            if outputs.shape[0] != batch_size:  # evaluation
                return result
            steps.append(None)
            if len(steps) - 1 != at_step:
                return result
            if value is None:
                return math.inf, result[1]
            return result[0], np.full_like(result[1], value)

        return loss

    return make


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (None, {"pass": "forward", "layer": "output", "quantity": "loss"}),
        (np.inf, {"pass": "backward", "layer": "output", "quantity": "weight gradient"}),
        # finite gradients whose global norm overflows (each weight gradient ~1e307)
        (3e306, {"pass": "backward", "layer": "unknown", "quantity": "gradient norm"}),
    ],
    ids=["loss", "gradient", "norm"],
)
@pytest.mark.parametrize("every", [1, 2])
def test_a_run_diverges_one_way_wherever_it_goes_non_finite(
    value, where, every, write_config, tmp_path, monkeypatch
):
    """Step 3 goes non-finite: the run ends there as diverged, with the place; the step's
    metrics row is written and, at a logged step whose backward ran, its layer statistics
    (before clipping, no update ratio)."""
    from gradlab import runner

    monkeypatch.setattr(runner, "get_loss", _gradient_turns(value, 3, batch_size=32))
    run = _run(write_config, tmp_path, {"log.every": every, "log.eval_every": 100})
    assert run.status == "diverged" and run.meta["step_reached"] == 3
    assert run.summary["divergence"] == run.meta["divergence"] == {"step": 3, **where}
    assert run.metrics["step"][-1] == 3
    logged = every == 1 and value is not None
    assert (run.layers["step"] == 3).sum() == (6 if logged else 0)
    assert run.summary["layers"]["final"]["step"] == (3 if logged else 2)
    if value is None:
        assert math.isinf(run.metrics["train_loss"][-1]) and np.isnan(run.metrics["grad_norm"][-1])
        return
    assert math.isfinite(run.metrics["train_loss"][-1])
    assert not math.isfinite(run.metrics["grad_norm"][-1])
    if logged:
        last = run.layers["step"] == 3
        assert np.isnan(run.layers["update_ratio"][last]).all()
        assert not (run.layers["weight_grad_norm"][last] < 1e300).any()  # huge, inf or nan


def test_logging_every_step_changes_no_number(write_config, tmp_path):
    """Measuring the layers at every step (a probe in every forward) leaves the training
    bit for bit what it is when they are measured every 4th step."""
    runs = [
        _run(
            write_config, tmp_path, {"log.every": every, "train.clip.mode": "norm"}, out=f"{every}"
        )
        for every in (1, 4)
    ]
    rows = [(run.path / "layers.csv").read_text().splitlines() for run in runs]
    common = [row for row in rows[0] if row.split(",")[0] in ("step", "0", "4", "8", "20")]
    assert common == [row for row in rows[1] if row.split(",")[0] in ("step", "0", "4", "8", "20")]
    metrics = [(run.path / "metrics.csv").read_text().splitlines() for run in runs]
    assert set(metrics[1]) <= set(metrics[0]) and len(metrics[1]) == 8  # header, 0, 4 .. 20
    assert runs[0].summary == runs[1].summary


def test_layers_csv_holds_what_a_plain_replay_of_the_run_measures(tmp_path):
    """Every logged row against the same training replayed without a probe (plain engine
    calls) and measured with numpy: gradient norms before clipping, ||W|| and the activations
    before the update, update_ratio = ||the clipped step|| / ||W before it||."""
    from gradlab import runner, seeds
    from gradlab.data import Batches, make_dataset
    from gradlab.engine import clip_gradients, get_loss, make_optimizer

    config = config_from_dict(
        {
            "data": {"n_train": 128, "n_test": 64, "input_dim": 8},
            "model": {"depth": 4, "width": 16, "norm": "layer"},
            "train": {
                "steps": 7,
                "batch_size": 32,
                "lr": 0.1,
                "clip": {"mode": "norm", "threshold": 0.05},
            },
            "log": {"every": 3, "eval_every": 100},
        }
    )
    run = run_config(config, out=tmp_path / "run")
    data_seed, init_seed, batch_seed = seeds.seed_streams(config)
    dataset = make_dataset(config, np.random.default_rng(data_seed))
    model = runner.build_model(config, np.random.default_rng(init_seed))
    batches = Batches(dataset.x_train, dataset.y_train, 32, np.random.default_rng(batch_seed))
    loss_fn, optimizer = get_loss(config.resolved_loss), make_optimizer("sgd", 0.1)
    grads = list(model.grads.values())
    expected = []
    for step in range(8):
        x, y = next(batches)
        model.backward(loss_fn(model.forward(x), y)[1])
        logged = step % 3 == 0 or step == 7
        if logged:
            outputs = [block.activation.output for block in model.blocks]
            row = {
                "weight_grad_norm": [
                    np.linalg.norm(model.grads[f"layer{i}.weight"]) for i in (1, 2, 3, 4)
                ],
                "bias_grad_norm": [
                    np.linalg.norm(model.grads[f"layer{i}.bias"]) for i in (1, 2, 3, 4)
                ],
                "delta_norm": [np.linalg.norm(delta) for delta in model.deltas()],
                "weight_norm": [
                    np.linalg.norm(model.params[f"layer{i}.weight"]) for i in (1, 2, 3, 4)
                ],
                "act_mean": [np.mean(output) for output in outputs],
                "act_std": [np.std(output) for output in outputs],
                "saturation": [np.mean((out < 0.01) | (out > 0.99)) for out in outputs],
                "update_ratio": [np.nan] * 4,
            }
        clip_gradients(grads, "norm", 0.05)
        if step < 7:
            optimizer.step(model.params, model.grads)
            if logged:
                row["update_ratio"] = [
                    np.linalg.norm(0.1 * model.grads[f"layer{i}.weight"]) / norm
                    for i, norm in zip((1, 2, 3, 4), row["weight_norm"], strict=True)
                ]
        if logged:
            expected.append(row)
    layers = run.layers
    assert list(np.unique(layers["step"])) == [0, 3, 6, 7]
    summed = ("act_mean", "act_std", "update_ratio")  # numpy sums these in another order
    for index, row in enumerate(expected):
        assert set(row) == set(STAT_NAMES)  # a new statistic needs its replay here too
        rows = slice(4 * index, 4 * index + 4)
        for name in STAT_NAMES:
            if name in summed:
                np.testing.assert_allclose(layers[name][rows], row[name], rtol=1e-14, err_msg=name)
            else:
                np.testing.assert_array_equal(layers[name][rows], row[name], err_msg=name)
    assert (run.metrics["clip_factor"] < 1).all()  # the clipped steps were measured


def test_existing_output_directory_needs_force(write_config, tmp_path):
    from gradlab.errors import GradlabError

    _run(write_config, tmp_path)
    with pytest.raises(GradlabError, match="--force"):
        _run(write_config, tmp_path)
    run = gradlab.run(write_config({"train.steps": 5}), out=tmp_path / "run", force=True)
    assert run.meta["step_reached"] == 5


def test_force_never_deletes_a_folder_that_is_not_a_run(write_config, tmp_path):
    from gradlab.errors import GradlabError

    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("keep me")
    with pytest.raises(GradlabError, match="not a gradlab run"):
        gradlab.run(write_config(), out=precious, force=True)
    assert (precious / "chapter1.tex").read_text() == "keep me"
    assert sorted(p.name for p in precious.iterdir()) == ["chapter1.tex"]


def test_python_api_overrides_and_default_location(write_config, in_tmp):
    run = gradlab.run(write_config(), train__steps=4, **{"model.depth": 5})
    assert run.path.resolve() == (in_tmp / "results" / "small").resolve()
    assert run.meta["step_reached"] == 4
    assert len(run.summary["layers"]["init"]["weight_grad_norm"]) == 5
    # layers.csv holds the exact float64 values (shortest round-trip repr)
    steps, norms = run.layer_matrix("weight_grad_norm")
    assert steps[0] == 0
    assert norms[0].tolist() == run.summary["layers"]["init"]["weight_grad_norm"]


def test_python_api_errors_name_the_keyword_overrides_and_the_dict(tmp_path):
    from gradlab.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        gradlab.run(dict(SMALL_MAPPING), out=tmp_path / "r", train__lrr=0.1)
    message = str(caught.value)
    assert message.startswith("train.lrr: unknown key in run() keyword overrides; did you mean")
    assert "--set" not in message
    with pytest.raises(ConfigError, match=r"^model\.depht: unknown key in the config dict"):
        gradlab.run({**SMALL_MAPPING, "model": {"depht": 3}}, out=tmp_path / "r")
    with pytest.raises(ConfigError, match=r"^model\.depht: unknown key in run\(\) keyword"):
        gradlab.run(config_from_dict(SMALL_MAPPING), out=tmp_path / "r", model__depht=3)
    assert not (tmp_path / "r").exists()


def test_config_object_runs_too(tmp_path):
    config = config_from_dict({"name": "obj", **SMALL_MAPPING})
    run = run_config(config, out=tmp_path / "obj")
    assert run.status == "completed" and run.name == "obj"


def _spawn_run(config_path, out, extra_env=None):
    env = {**os.environ, **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "gradlab", "run", str(config_path), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def _wait_for_rows(path, rows=3, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") > rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never got {rows} rows")


LONG_RUN = {"train.steps": 1_000_000, "log.every": 1, "log.eval_every": 1000}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_marks_the_run_interrupted(sig, write_config, tmp_path):
    process = _spawn_run(write_config(LONG_RUN), tmp_path / "run")
    _wait_for_rows(tmp_path / "run" / "metrics.csv")
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr.decode()
    run = read_run(tmp_path / "run")
    assert run.status == "interrupted" and run.meta["signal"] == signal.Signals(sig).name
    assert run.summary is not None and run.problems == []
    assert run.metrics["step"][-1] == run.meta["step_reached"]
    assert b"Traceback" not in stderr


def test_kill_9_leaves_readable_files_marked_running(write_config, tmp_path):
    process = _spawn_run(write_config(LONG_RUN), tmp_path / "run")
    _wait_for_rows(tmp_path / "run" / "layers.csv", rows=30)
    process.kill()
    process.communicate(timeout=30)  # reaps the process and closes its pipes
    run = read_run(tmp_path / "run")
    assert run.status == "running"
    assert any("incomplete" in problem for problem in run.problems)
    steps = run.metrics["step"]
    assert steps.size >= 3 and (np.diff(steps) == 1).all()
    # every logged step has all of its layer rows (rows are flushed per step, whole)
    _, counts = np.unique(run.layers["step"], return_counts=True)
    assert (counts[:-1] == 6).all() and counts[-1] <= 6
    assert yaml.safe_load((run.path / "config.yaml").read_text())["name"] == "small"


def test_step_0_is_measured_before_any_update(write_config, tmp_path):
    """Every column of row s (train and test loss alike) sees the parameters after s updates."""
    untrained = _run(write_config, tmp_path, {"train.steps": 0}, out="steps0")
    trained = _run(write_config, tmp_path, {"train.steps": 10, "log.eval_every": 1}, out="steps10")
    for column in ("train_loss", "test_loss", "train_eval_loss", "grad_norm"):
        assert trained.metrics[column][0] == untrained.metrics[column][0], column
    assert trained.metrics["test_loss"][1] != trained.metrics["test_loss"][0]


def test_a_weight_scale_whose_square_overflows_has_no_theory_and_no_traceback(
    write_config, tmp_path
):
    """sigma_w = 1e200 trains (and diverges or not) like any run; its theory is absent, with
    the reason, not a traceback from sigma_w^2."""
    run = _run(write_config, tmp_path, {"model.init.weight_scale": 1e200, "train.steps": 1})
    theory = run.summary["theory"]
    assert theory["applicable"] is False
    assert theory["factor"] is None and theory["regime"] == "unknown"
    assert "overflows" in theory["reason"]
