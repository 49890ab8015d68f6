"""Residual networks: exact gradients of every block combination, eval predictions, the
recorded files (layers.csv, summary.json's gradient_profile), config errors, and the plain
network's files left as they were."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from gradcheck import check_model

import gradlab
from gradlab import analysis, vocabulary
from gradlab.cli import cli
from gradlab.config import config_from_dict, dump_config_yaml
from gradlab.engine import MLP, Probe, ResidualMLP, mse
from gradlab.engine.norms import l2_norm
from gradlab.errors import ConfigError, EngineError
from gradlab.results import LAYER_COLUMNS, RESIDUAL_LAYER_COLUMNS

BATCH = 7
RESIDUAL = {"model.residual.enabled": True}


def _model(branch="full", norm_position="pre", norm="none", activation="tanh", depth=3, **kw):
    return ResidualMLP(
        input_dim=4,
        output_dim=2,
        depth=depth,
        width=6,
        activation=activation,
        norm=norm,
        weight_scale=1.5,
        bias_scale=0.3,
        rng=np.random.default_rng(kw.pop("seed", 0)),
        branch=branch,
        branch_scale=0.8,
        norm_position=norm_position,
        **kw,
    )


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("norm", vocabulary.NORMS)
@pytest.mark.parametrize("norm_position", vocabulary.NORM_POSITIONS)
@pytest.mark.parametrize("branch", vocabulary.RESIDUAL_BRANCHES)
def test_gradients_of_every_block_combination(branch, norm_position, norm, activation):
    rng = np.random.default_rng(1)
    model = _model(branch, norm_position, norm, activation)
    x, y = rng.normal(size=(BATCH, 4)), rng.normal(size=(BATCH, 2))
    check_model(model, mse, x, y, rng)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("norm_position", vocabulary.NORM_POSITIONS)
@pytest.mark.parametrize("branch", vocabulary.RESIDUAL_BRANCHES)
def test_gradients_in_eval_mode_with_batchnorm(branch, norm_position, activation):
    rng = np.random.default_rng(2)
    model = _model(branch, norm_position, "batch", activation)
    x = rng.normal(size=(BATCH, 4))
    for _ in range(3):  # move the running statistics away from (0, 1)
        model.forward(x + rng.normal(size=x.shape), train=True)
    check_model(model, mse, x, rng.normal(size=(BATCH, 2)), rng, train=False)


@pytest.mark.parametrize("norm", vocabulary.NORMS)
@pytest.mark.parametrize("norm_position", vocabulary.NORM_POSITIONS)
@pytest.mark.parametrize("branch", vocabulary.RESIDUAL_BRANCHES)
def test_predict_is_the_eval_forward_bit_for_bit_and_keeps_the_caches(branch, norm_position, norm):
    rng = np.random.default_rng(3)
    model = _model(branch, norm_position, norm, "sigmoid")
    x = rng.normal(size=(BATCH, 4))
    model.forward(x + 1.0, train=True)
    hidden = [block.output.copy() for block in model.blocks]
    predicted = model.predict(x)
    assert [np.array_equal(a, b.output) for a, b in zip(hidden, model.blocks, strict=True)] == [
        True
    ] * 3
    np.testing.assert_array_equal(predicted, model.forward(x, train=False))


def test_blocks_compute_what_the_issue_writes():
    """x^l = x^{l-1} + act(norm(x^{l-1}) W + b) V (pre) and norm(x^{l-1} + act(x W + b)) (post,
    reduced), from the named parameters."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(BATCH, 4))

    def layer_norm(v):
        centred = v - v.mean(axis=1, keepdims=True)
        return centred / np.sqrt(centred.var(axis=1, keepdims=True) + 1e-5)

    for branch, position in (("full", "pre"), ("reduced", "post")):
        model = _model(branch, position, "layer")
        p = model.params
        stream = x @ p["input.weight"] + p["input.bias"]
        for index in range(1, 4):
            u = layer_norm(stream) if position == "pre" else stream
            out = np.tanh(u @ p[f"block{index}.weight"] + p[f"block{index}.bias"])
            if branch == "full":
                out = out @ p[f"block{index}.branch.weight"]
            stream = stream + out if position == "pre" else layer_norm(stream + out)
        expected = stream @ p["output.weight"] + p["output.bias"]
        np.testing.assert_allclose(model.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_parameter_names_and_branch_init():
    model = ResidualMLP(
        input_dim=5,
        output_dim=1,
        depth=2,
        width=400,
        norm="layer",
        branch_scale=0.5,
        init="he",
        rng=np.random.default_rng(0),
    )
    assert list(model.params) == [
        "input.weight", "input.bias",
        "block1.weight", "block1.bias", "block1.norm.gamma", "block1.norm.beta",
        "block1.branch.weight",
        "block2.weight", "block2.bias", "block2.norm.gamma", "block2.norm.beta",
        "block2.branch.weight",
        "output.weight", "output.bias",
    ]  # fmt: skip
    # V ~ N(0, sigma_v^2 / width) whatever the init scheme
    assert np.std(model.params["block1.branch.weight"]) == pytest.approx(0.5 / 20, rel=0.01)
    assert model.hidden_weight_names() == ["block1.weight", "block2.weight"]
    reduced = _model("reduced")
    assert not any("branch" in name for name in reduced.params)


def test_engine_refuses_bad_residual_arguments():
    with pytest.raises(EngineError, match="branch"):
        _model("half")
    with pytest.raises(EngineError, match="norm_position"):
        _model(norm_position="middle")
    with pytest.raises(EngineError, match="branch_scale"):
        ResidualMLP(input_dim=2, output_dim=1, depth=1, width=2, branch_scale=0.0)


def test_probe_measures_stream_and_branch_deltas():
    rng = np.random.default_rng(5)
    model = _model(norm="batch")
    probe = Probe(model)
    probe.start(layer_stats=True)
    x, y = rng.normal(size=(BATCH, 4)), rng.normal(size=(BATCH, 2))
    _, dlogits = mse(model.forward(x, probe=probe), y)
    model.backward(dlogits, probe=probe)
    stats = probe.layer_stats()
    assert tuple(stats) == RESIDUAL_LAYER_COLUMNS[2:]
    streams = [l2_norm(delta) for delta in model.stream_deltas()]
    assert probe.input_delta_norm == streams[0]
    np.testing.assert_array_equal(stats["delta_norm"], streams[1:])
    branch = [l2_norm(block.linear.delta) for block in model.blocks]
    np.testing.assert_array_equal(stats["branch_delta_norm"], branch)
    # every gradient's norm is taken (clipping needs them): input, blocks, branches, output
    expected = [l2_norm(grad) for grad in model.grads.values()]
    np.testing.assert_array_equal(probe.grad_norms, expected)
    # the last block's stream gradient is what the output layer passes back
    np.testing.assert_array_equal(model.blocks[-1].delta, dlogits @ model.params["output.weight"].T)


def test_divergence_is_located_in_a_residual_network():
    model = _model()
    probe = Probe(model)
    x = np.ones((BATCH, 4))
    model.params["block2.branch.weight"][0, 0] = np.inf
    with np.errstate(all="ignore"):
        model.forward(x, probe=probe)
    assert probe.locate_nonfinite() == {"pass": "forward", "layer": 2, "quantity": "stream"}


# --- runs -------------------------------------------------------------------------------


def _run(write_config, tmp_path, changes=None, out="run"):
    return gradlab.run(write_config({**RESIDUAL, **(changes or {})}), out=tmp_path / out)


def test_residual_run_records_stream_and_branch_deltas_and_the_profile(write_config, tmp_path):
    run = _run(write_config, tmp_path, {"model.activation": "tanh", "train.lr": 0.01})
    header = (run.path / "layers.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == RESIDUAL_LAYER_COLUMNS
    assert RESIDUAL_LAYER_COLUMNS[-1] == "branch_delta_norm"
    assert np.all(run.layers["branch_delta_norm"] > 0)
    summary = run.summary
    assert summary["theory"]["applicable"] is False and summary["theory"]["factor"] is None
    assert "constant-M" in summary["gradient_factor"]["init"]["basis"]
    init, final = summary["gradient_profile"]["init"], summary["gradient_profile"]["final"]
    keys = {
        "ratio", "theory_ratio", "factor_first_quarter", "factor_last_quarter",
        "theory_factor_first_quarter", "theory_factor_last_quarter",
    }  # fmt: skip
    assert keys <= set(init) and keys <= set(final)
    # the measured numbers are the layers.csv ones: ratio = |g^0| / |g^depth|
    _, deltas = run.layer_matrix("delta_norm")
    depth = deltas.shape[1]
    k = analysis.quarter_blocks(depth)
    g0 = init["ratio"] * deltas[0, -1]
    assert init["factor_last_quarter"] == pytest.approx(
        (deltas[0, depth - k - 1] / deltas[0, -1]) ** (1 / k), rel=1e-12
    )
    assert init["factor_first_quarter"] == pytest.approx((g0 / deltas[0, k - 1]) ** (1 / k))
    assert init["theory_ratio"] > 1 and init["theory_note"] is None
    assert final["theory_ratio"] is None and "initialization" in final["theory_note"]
    assert init["sentence"].startswith("the gradient grows x")


def test_residual_run_report_prints_the_profile_verdict(write_config, tmp_path):
    config = write_config({**RESIDUAL, "model.activation": "tanh", "train.steps": 0})
    result = CliRunner().invoke(cli, ["run", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    sentence = summary["gradient_profile"]["init"]["sentence"]
    assert f"at init: {sentence}\n" in result.output
    assert "at init (constant-M fit): " in result.output
    assert "across 6 blocks (theory x" in sentence


def test_no_theory_is_null_with_a_reason(write_config, tmp_path):
    run = _run(
        write_config,
        tmp_path,
        {"model.norm": "layer", "model.residual.norm_position": "post", "train.steps": 0},
    )
    init = run.summary["gradient_profile"]["init"]
    assert init["theory_ratio"] is None and init["theory_factor_first_quarter"] is None
    assert "post-norm" in init["theory_note"] and init["ratio"] > 0
    assert "(no theory)" in init["sentence"]


@pytest.mark.parametrize("branch", vocabulary.RESIDUAL_BRANCHES)
def test_residual_runs_are_deterministic(write_config, tmp_path, branch):
    changes = {"model.residual.branch": branch, "model.norm": "batch", "train.lr": 0.01}
    a = _run(write_config, tmp_path, changes, out="a")
    b = _run(write_config, tmp_path, changes, out="b")
    for name in ("metrics.csv", "layers.csv", "summary.json", "config.yaml"):
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name


def test_plain_runs_keep_their_files(write_config, tmp_path):
    """No residual section in config.yaml, no branch column in layers.csv; the residual keys
    set but disabled are kept in config.yaml and change nothing else."""
    plain = gradlab.run(write_config(), out=tmp_path / "plain")
    assert "residual" not in (plain.path / "config.yaml").read_text()
    header = (plain.path / "layers.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == LAYER_COLUMNS
    assert "gradient_profile" not in plain.summary
    assert np.isnan(plain.layers["branch_delta_norm"]).all()
    ignored = gradlab.run(
        write_config({"model.residual.norm_position": "post"}), out=tmp_path / "ignored"
    )
    assert "norm_position: post" in (ignored.path / "config.yaml").read_text()
    for name in ("metrics.csv", "layers.csv", "summary.json"):
        assert (plain.path / name).read_bytes() == (ignored.path / name).read_bytes(), name


def test_plain_model_is_the_same_network_as_before():
    """The plain MLP draws its parameters in the same order (the refactor into blocks)."""
    model = MLP(input_dim=3, output_dim=1, depth=2, width=4, rng=np.random.default_rng(7))
    rng = np.random.default_rng(7)
    first = rng.normal(0.0, 1 / np.sqrt(3), size=(3, 4))
    np.testing.assert_array_equal(model.params["layer1.weight"], first)
    assert not model.residual and model.input_layer is None


def test_dumped_residual_config_loads_back():
    config = config_from_dict({"model": {"residual": {"enabled": True, "branch": "reduced"}}})
    assert config_from_dict(yaml.safe_load(dump_config_yaml(config))) == config
    assert config_from_dict(yaml.safe_load(dump_config_yaml(config_from_dict({})))) == (
        config_from_dict({})
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"model.residual.branch": "fulll"},
            "model.residual.branch: 'fulll' is not one of full, reduced; did you mean 'full'?",
        ),
        ({"model.residual.branch_scale": 0}, "model.residual.branch_scale: must be > 0, got 0"),
        ({"model.residual.branch_scale": -1.5}, "model.residual.branch_scale: must be > 0"),
        (
            {"model.residual.norm_position": "after"},
            "model.residual.norm_position: 'after' is not one of pre, post",
        ),
        ({"model.residual.enabled": "yes"}, "model.residual.enabled: must be true or false"),
        ({**RESIDUAL, "model.depth": 0}, "model.depth: must be >= 1, got 0"),
        ({"model.residual.enabeld": True}, "did you mean 'enabled'?"),
    ],
)
def test_bad_residual_config_is_one_line_naming_the_key(write_config, tmp_path, changes, message):
    config = write_config(changes)
    result = CliRunner().invoke(cli, ["run", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError):
        gradlab.config.load_config(config)


def test_sweep_over_residual_keys(tmp_path, write_config):
    base = write_config({**RESIDUAL, "train.steps": 0})
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"name": "res", "base": str(base), "grid": {"model.residual.branch_scale": [0.2, 1.0]}}
        )
    )
    result = CliRunner().invoke(cli, ["sweep", str(spec), "--out", str(tmp_path / "s"), "-j", "1"])
    assert result.exit_code == 0, result.output
    ratios = sorted(
        json.loads(path.read_text())["gradient_profile"]["init"]["theory_ratio"]
        for path in (tmp_path / "s").rglob("summary.json")
    )
    assert len(ratios) == 2 and ratios[0] < ratios[1]
    # run again: both points are found done (config.yaml holds the residual section)
    again = CliRunner().invoke(cli, ["sweep", str(spec), "--out", str(tmp_path / "s"), "-j", "1"])
    assert again.exit_code == 0 and "0 ran (2 skipped)" in again.output, again.output


def test_figures_draw_the_theory_profile_and_compare_plain_with_residual(write_config, tmp_path):
    from gradlab import plots

    changes = {"model.activation": "tanh", "model.depth": 12, "train.steps": 0}
    residual = _run(write_config, tmp_path, changes, out="residual")
    plain = gradlab.run(write_config(changes), out=tmp_path / "plain")
    figure = plots.gradient_by_layer(residual)
    profile = residual.summary["gradient_profile"]["init"]
    assert figure.gradlab_shown["theory_ratio"] == profile["theory_ratio"]
    assert profile["sentence"] in figure.get_suptitle()
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    theory = next(line for label, line in lines.items() if label.startswith("theory profile"))
    values = np.log(theory.get_ydata())
    assert values[0] - values[-1] == pytest.approx(np.log(profile["theory_ratio"]) - np.log(
        profile["theory_factors"][0]), rel=1e-9)  # fmt: skip
    assert np.ptp(np.diff(values)) > 1e-3  # a curve, not the straight line of a constant M
    assert any(label.startswith("constant-M fit") for label in lines)
    compared = plots.compare_gradient_by_layer([plain, residual])
    assert len(compared.gradlab_shown["factors"]) == 2


@pytest.mark.parametrize(
    ("branch", "activation", "norm", "dtype"),
    [
        ("full", "sigmoid", "none", "float64"),
        ("reduced", "tanh", "layer", "float32"),
        ("full", "relu", "batch", "float64"),
        ("reduced", "linear", "none", "float32"),
    ],
)
def test_footprint_counts_the_arrays_training_keeps(branch, activation, norm, dtype):
    from gradlab.engine.model import memory_footprint

    batch, depth = 16, 5
    model = ResidualMLP(
        input_dim=6, output_dim=3, depth=depth, width=9, activation=activation, norm=norm,
        dtype=dtype, branch=branch, rng=np.random.default_rng(0),
    )  # fmt: skip
    probe = Probe(model)
    probe.start(layer_stats=True)
    rng = np.random.default_rng(1)
    _, dlogits = mse(model.forward(rng.normal(size=(batch, 6)), probe=probe), np.zeros((batch, 3)))
    model.backward(dlogits, probe=probe)
    model.predict(rng.normal(size=(40, 6)))  # evaluation adds nothing to count
    footprint = memory_footprint(
        6, 3, depth, 9, activation, norm, dtype, batch=batch, branch=branch
    )
    held = [array for layer in model.layers for array in layer._scratch.values()]
    held += [array for block in model.blocks for array in block._scratch.values()]
    per_sample = [a for a in held if a.ndim == 2 and a.shape[0] == batch and a.shape[1] > 1]
    masks = [a for a in per_sample if a.dtype == bool]
    assert sum(a.nbytes for a in per_sample) == footprint["activations"], len(masks)
    parameters = sum(value.nbytes for value in model.params.values())
    assert footprint["parameters"] == 2 * parameters


@pytest.mark.parametrize(
    "model, key, words",
    [
        ({"depth": 3, "width": [8, 4, 8]}, "model.width", "a residual network needs one width"),
        ({"depth": 3, "dropout": 0.1}, "model.dropout", "not supported in residual blocks"),
    ],
)
def test_residual_refuses_varying_widths_and_dropout(model, key, words):
    """Issues 17 and 18 arrived beside residual blocks: one line naming the key, not a
    traceback from the engine."""
    with pytest.raises(ConfigError) as error:
        config_from_dict({"model": {**model, "residual": {"enabled": True}}})
    assert str(error.value).startswith(key) and words in str(error.value)


def test_residual_refuses_the_jacobian_spectrum():
    with pytest.raises(ConfigError) as error:
        config_from_dict(
            {"model": {"residual": {"enabled": True}}, "analysis": {"spectrum": {"enabled": True}}}
        )
    assert str(error.value).startswith("analysis.spectrum.enabled")
    assert "residual" in str(error.value)
