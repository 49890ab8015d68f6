"""Hidden layers of different widths (model.width as a list): config, engine, theory,
analysis, run files, report, summary and figures."""

import json
import math

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from gradcheck import check_model

import gradlab
from gradlab import analysis, theory_widths
from gradlab.cli import cli
from gradlab.config import config_from_dict, dump_config_yaml
from gradlab.engine import MLP, Probe, mse
from gradlab.engine.init import WEIGHT_INITS
from gradlab.engine.model import memory_footprint
from gradlab.errors import ConfigError, EngineError
from gradlab.initial_theory import theory_at_init
from gradlab.memory import estimate_memory
from gradlab.report import summarize
from gradlab.run_report import format_run_report

WIDTHS = [12, 12, 5, 12, 12, 7]  # a bottleneck at layer 3, a narrow last layer


def _model(norm="none", activation="tanh", init="normal", dtype="float64"):
    """A network of WIDTHS on 4 inputs and 3 outputs."""
    options = {"activation": activation, "norm": norm, "init": init, "dtype": dtype}
    return MLP(4, 3, len(WIDTHS), WIDTHS, bias_scale=0.2, rng=np.random.default_rng(5), **options)


# ---- config -------------------------------------------------------------------------


def _model_config(width, depth=6):
    return config_from_dict({"model": {"depth": depth, "width": width}}).model


def test_a_list_gives_each_hidden_layer_its_width_and_an_integer_keeps_its_meaning():
    assert _model_config(WIDTHS).widths == tuple(WIDTHS)
    assert _model_config(9).widths == (9,) * 6
    assert _model_config(9).width == 9
    config = config_from_dict({"model": {"depth": 6, "width": WIDTHS}})
    assert config_from_dict(yaml.safe_load(dump_config_yaml(config))) == config
    overridden = config_from_dict({"model": {"depth": 3}}, ["model.width=[8, 2, 8]"])
    assert overridden.model.widths == (8, 2, 8)


@pytest.mark.parametrize(
    ("width", "fragment"),
    [
        ([8, 8, 8], "a list needs one width per hidden layer (model.depth = 6), got 3"),
        ([], "got 0 entries"),
        ([8, 8, 0, 8, 8, 8], "entry 3 must be an integer >= 1, got 0"),
        ([8, 8, 2.5, 8, 8, 8], "entry 3 must be an integer >= 1, got 2.5"),
        ([8, True, 8, 8, 8, 8], "entry 2 must be an integer >= 1, got true"),
        ([8, "wide", 8, 8, 8, 8], "entry 2 must be an integer >= 1, got 'wide'"),
        ([8, [8], 8, 8, 8, 8], "entry 2 must be an integer >= 1, got a list"),
        (0, "must be >= 1, got 0"),
        (8.5, "must be an integer >= 1 or a list of integers >= 1 (one per hidden layer)"),
        ({"a": 1}, "must be an integer >= 1 or a list of integers >= 1"),
    ],
)
def test_bad_widths_name_the_key_and_what_is_allowed(width, fragment):
    with pytest.raises(ConfigError) as error:
        _model_config(width)
    message = str(error.value)
    assert message.startswith("model.width: ") and fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize("command", ["run", "config"])
@pytest.mark.parametrize(
    "text", ["[8, 8, 8]", "[8, 8, 0, 8, 8, 8]", "[8, 8, 2.5, 8, 8, 8]", "[8, x, 8, 8, 8, 8]"]
)
def test_bad_widths_are_one_line_exit_2_and_write_nothing(command, text, in_tmp):
    path = in_tmp / "bad.yaml"
    path.write_text(f"model:\n  depth: 6\n  width: {text}\n")
    result = CliRunner().invoke(cli, [command, str(path)])
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message and "model.width" in message, message
    assert sorted(p.name for p in in_tmp.iterdir()) == ["bad.yaml"]


def test_a_bad_width_from_set_is_exit_2(write_config, in_tmp):
    result = CliRunner().invoke(cli, ["run", str(write_config()), "--set", "model.width=[4, 4]"])
    assert result.exit_code == 2 and "model.width" in result.output
    assert "\n" not in result.output.strip()
    assert not (in_tmp / "results").exists()


# ---- engine -------------------------------------------------------------------------


@pytest.mark.parametrize("init", sorted(WEIGHT_INITS))
def test_every_init_scheme_builds_each_layer_at_its_shape(init):
    model = _model(init=init)
    fan_ins = [4, *WIDTHS[:-1]]
    for block, fan_in, units in zip(model.blocks, fan_ins, WIDTHS, strict=True):
        assert block.linear.params["weight"].shape == (fan_in, units)
        assert block.linear.params["bias"].shape == (units,)
    assert model.output.params["weight"].shape == (WIDTHS[-1], 3)
    assert model.widths == tuple(WIDTHS) and model.width is None
    if init == "orthogonal":  # rectangular layers: orthonormal rows or columns
        for block in model.blocks:
            weight = block.linear.params["weight"]
            small = min(weight.shape)
            gram = weight.T @ weight if weight.shape[0] >= weight.shape[1] else weight @ weight.T
            np.testing.assert_allclose(gram, np.eye(small), atol=1e-12)


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradients_of_a_network_of_different_widths(norm, activation):
    rng = np.random.default_rng(11)
    model = _model(norm=norm, activation=activation)
    x = rng.normal(size=(9, 4))
    targets = rng.normal(size=(9, 3))
    check_model(model, mse, x, targets, rng)
    if norm != "none":
        assert model.blocks[2].norm.params["gamma"].shape == (5,)


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_predict_is_the_eval_forward_bit_for_bit_with_different_widths(norm, dtype):
    model = _model(norm=norm, dtype=dtype)
    x = np.random.default_rng(3).normal(size=(17, 4))
    model.forward(x, train=True)  # BatchNorm's running statistics move
    expected = model.forward(x, train=False)
    np.testing.assert_array_equal(model.predict(x).view(np.uint8), expected.view(np.uint8))


def test_probe_measures_each_layer_at_its_width():
    model = _model(norm="batch")
    probe = Probe(model)
    probe.start(layer_stats=True)
    x = np.random.default_rng(4).normal(size=(10, 4))
    outputs = model.forward(x, probe=probe)
    model.backward(outputs, probe=probe)
    stats = probe.layer_stats()
    deltas = [np.linalg.norm(delta) for delta in model.deltas()]
    np.testing.assert_allclose(stats["delta_norm"], deltas, rtol=1e-13)
    assert [delta.shape[1] for delta in model.deltas()] == WIDTHS


@pytest.mark.parametrize(
    "width", [[3, 3, 3], [3, 0, 3], [3, 3], [3, 2.0, 3]], ids=["ok", "zero", "short", "float"]
)
def test_the_engine_refuses_bad_widths(width):
    if width == [3, 3, 3]:
        assert MLP(2, 1, depth=3, width=width).width == 3
        return
    with pytest.raises(EngineError, match="width"):
        MLP(2, 1, depth=3, width=width)


@pytest.mark.parametrize(("activation", "norm"), [("tanh", "none"), ("relu", "batch")])
def test_footprint_counts_the_arrays_of_layers_of_different_widths(activation, norm):
    batch = 16
    model = _model(activation=activation, norm=norm)
    probe = Probe(model)
    probe.start(layer_stats=True)
    outputs = model.forward(np.random.default_rng(2).normal(size=(batch, 4)), probe=probe)
    model.backward(outputs, probe=probe)
    probe.layer_stats()
    footprint = memory_footprint(4, 3, len(WIDTHS), WIDTHS, activation, norm, batch=batch)
    arrays = [array for layer in model.layers for array in layer._scratch.values()]
    arrays += list(model._input_grads.values())
    per_sample = [a for a in arrays if a.ndim == 2 and a.shape[0] == batch and a.shape[1] > 1]
    assert sum(array.nbytes for array in per_sample) == footprint["activations"]
    parameters = sum(value.nbytes for value in model.params.values())
    assert footprint["parameters"] == 2 * parameters
    statistics = sum(a.nbytes for a in [*probe._ones.values(), *probe._centred.values()])
    assert 0 < statistics <= footprint["statistics"]


def test_an_integer_width_and_a_list_of_it_need_the_same_memory():
    assert memory_footprint(4, 3, 5, 9, "relu", "layer") == memory_footprint(
        4, 3, 5, [9] * 5, "relu", "layer"
    )
    narrow = config_from_dict({"model": {"depth": 6, "width": [64, 64, 8, 64, 64, 64]}})
    wide = config_from_dict({"model": {"depth": 6, "width": 64}})
    assert estimate_memory(narrow) < estimate_memory(wide)


# ---- theory and analysis ------------------------------------------------------------


def test_width_factors():
    factors = theory_widths.width_factors([256, 64, 256, 128])
    assert factors["delta_norm"] == [1.0] * 4
    assert factors["delta_rms"] == pytest.approx([0.5**0.5, 2**0.5, 0.5**0.5, 1.0])
    assert factors["weight_grad_norm"] == [None, 1.0, 0.5, 1.0]  # fan-ins 256, 64, 256


def test_mean_field_width_factors_against_a_simulation():
    """|delta_l| (summed over units) passes a bottleneck unchanged; per unit, delta steps by
    sqrt(N_{l+1} / N_l); |dL/dW_l| steps by the square root of its fan-in ratio (relu at the
    edge of chaos, sigma_w = sqrt 2, chi_1 = 1; geometric mean over 6 networks, independent
    per-sample output gradients)."""
    widths = [256] * 3 + [64] * 3 + [256] * 3
    deltas, weights = [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        model = MLP(32, 1, 9, widths, activation="relu", weight_scale=math.sqrt(2), rng=rng)
        outputs = model.forward(rng.normal(size=(64, 32)))
        model.backward(rng.normal(size=outputs.shape))
        deltas.append([np.linalg.norm(delta) for delta in model.deltas()])
        weights.append([np.linalg.norm(model.grads[name]) for name in model.hidden_weight_names()])
    deltas, weights = np.exp(np.mean(np.log(deltas), axis=0)), np.exp(np.mean(np.log(weights), 0))
    factors = theory_widths.width_factors(widths)
    np.testing.assert_allclose(deltas / deltas[-1], factors["delta_norm"], rtol=0.05)
    rms = deltas / np.sqrt(widths)
    np.testing.assert_allclose(rms / rms[-1], factors["delta_rms"], rtol=0.05)
    # what a run reports: the steps of the grouped fits, against the theory's
    steps = analysis.factor_summary(deltas, weights, 0.0, width=widths)["width_steps"]
    assert [(s["width"], s["theory"]) for s in steps["delta_norm"]] == [(256, 1.0), (64, 1.0)]
    assert steps["delta_norm"][1]["step"] == pytest.approx(1.0, abs=0.03)
    assert [(s["fan_in"], s["theory"]) for s in steps["weight_grad_norm"]][:2] == [
        (256, 1.0),
        (64, 0.5),
    ]
    assert steps["weight_grad_norm"][1]["step"] == pytest.approx(0.5, rel=0.15)


def test_grouped_fit_measures_m_within_layers_of_equal_width():
    widths = [32] * 5 + [8] * 10
    layers = np.arange(1, 16)
    offsets = np.where(np.array(widths) == 8, math.log(3.0), 0.0)
    norms = np.exp(math.log(0.8) * (15 - layers) + offsets)  # M^(L-l), x3 at width 8
    plain = analysis.fit_factor(norms)
    grouped = analysis.fit_factor(norms, 0.15, widths)
    assert plain.factor < 0.75  # the step bends a single line
    assert grouped.factor == pytest.approx(0.8, rel=1e-12) and grouped.r2 == 1.0
    assert [group[0] for group in grouped.intercepts] == [8, 32]  # the larger group first
    assert grouped.intercepts[1][1] - grouped.intercepts[0][1] == pytest.approx(-math.log(3.0))
    fan_ins = np.array([16, *widths[:-1]])
    weight_norms = np.exp(math.log(0.8) * (15 - layers) + 0.5 * np.log(fan_ins))
    summary = analysis.factor_summary(norms, weight_norms, width=widths)
    assert summary["delta"] == pytest.approx(0.8, rel=1e-12)
    assert summary["weight"] == pytest.approx(0.8, rel=1e-12)
    steps = summary["width_steps"]["delta_norm"]
    assert [(step["width"], step["layers"]) for step in steps] == [
        (8, list(range(6, 14))),
        (32, [3, 4, 5]),
    ]
    assert steps[1]["step"] == pytest.approx(1 / 3) and steps[1]["theory"] == 1.0
    weight_steps = summary["width_steps"]["weight_grad_norm"]
    assert {step["fan_in"]: step["theory"] for step in weight_steps} == {8: 1.0, 32: 2.0}
    assert summary["sentence"].endswith(
        "M from layers of equal width; narrowest width 8 < 32: mean-field theory assumes "
        "wide layers"
    )
    lines = analysis.describe_width_steps(summary["width_steps"])
    assert lines == [
        "|delta| at init, steps from the layers of width 8: width 32 x0.333 (theory x1)",
        "|dL/dW| at init, steps from the layers of fan-in 8: fan-in 32 x2 (theory x2)",
    ]


def test_without_two_layers_of_one_width_there_is_no_m():
    fit = analysis.fit_factor([1.0, 2.0, 3.0, 4.0], 0.0, [1, 2, 3, 4])
    assert math.isnan(fit.factor) and "have one width" in fit.reason


def test_a_list_of_one_width_is_the_integer_width_exactly():
    norms = np.exp(np.random.default_rng(0).normal(size=12)) * 0.7 ** np.arange(12)
    assert analysis.factor_summary(norms, norms[::-1], width=[16] * 12) == (
        analysis.factor_summary(norms, norms[::-1], width=16)
    )


# ---- runs, report, summary, figures -------------------------------------------------


@pytest.fixture(scope="module")
def bottleneck(tmp_path_factory):
    config = {
        "name": "bottleneck",
        "data": {"n_train": 128, "n_test": 64, "input_dim": 8},
        "model": {"depth": 6, "width": [16, 16, 4, 16, 16, 16], "activation": "tanh"},
        "train": {"steps": 10, "batch_size": 32},
        "log": {"every": 5, "eval_every": 5},
    }
    return gradlab.run(config, out=tmp_path_factory.mktemp("runs") / "bottleneck")


def test_a_run_records_m_the_width_steps_and_the_theory(bottleneck):
    summary = bottleneck.summary
    assert bottleneck.status == "completed"
    factor = summary["gradient_factor"]["init"]
    assert factor["delta"] is not None
    assert [step["width"] for step in factor["width_steps"]["delta_norm"]] == [16, 4]
    assert summary["theory"]["applicable"] is True
    assert summary["theory"]["width_factors"] == theory_widths.width_factors(
        [16, 16, 4, 16, 16, 16]
    )
    assert "narrowest width 4 < 32" in factor["caveat"]
    assert yaml.safe_load((bottleneck.path / "config.yaml").read_text())["model"]["width"] == [
        16,
        16,
        4,
        16,
        16,
        16,
    ]
    json.loads((bottleneck.path / "summary.json").read_text())  # plain JSON


def test_an_integer_width_run_records_nothing_new(tmp_path, small_config):
    run = gradlab.run(small_config, out=tmp_path / "small")
    assert "width_steps" not in run.summary["gradient_factor"]["init"]
    assert "width_factors" not in run.summary["theory"]


@pytest.mark.parametrize("scheme", ["xavier", "orthogonal"])
def test_a_fan_out_init_scheme_with_different_widths_has_no_theory(scheme):
    config = config_from_dict(
        {"model": {"depth": 3, "width": [8, 4, 8], "init": {"scheme": scheme}}}
    )
    prediction = theory_at_init(config)
    assert prediction["applicable"] is False and prediction["factor"] is None
    assert scheme in prediction["reason"] and "fan_out" in prediction["reason"]
    # no number from a wrong sigma_w: no depth scales, no critical weight scale
    assert prediction["critical_weight_scale"] is None and prediction["width_factors"] is None
    for key in ("xi_grad", "xi_q", "c_star", "xi_c", "chi_c"):
        assert prediction[key] is None and prediction["notes"][key] == prediction["reason"]


def test_a_fan_out_init_scheme_gets_no_theory_for_its_width_steps_either(tmp_path):
    """The run report and summary.json measure the steps between widths, and show no theory
    for them (the theory of the steps assumes sigma_w is the same in every layer)."""
    config = {
        "data": {"n_train": 64, "n_test": 32, "input_dim": 8},
        "model": {"depth": 4, "width": [16, 8, 16, 8], "init": {"scheme": "xavier"}},
        "train": {"steps": 2, "batch_size": 32},
    }
    run = gradlab.run(config, out=tmp_path / "xavier")
    steps = run.summary["gradient_factor"]["init"]["width_steps"]
    groups = steps["delta_norm"] + steps["weight_grad_norm"]
    assert len(groups) == 5 and all(group["step"] > 0 for group in groups)
    assert all(group["theory"] is None for group in groups)
    text = format_run_report(run)
    assert "width 8 x" in text and "(theory x" not in text
    # the same with the normal scheme: the theory of the steps is there
    normal = gradlab.run({**config, "model": {**config["model"], "init": {}}}, out=tmp_path / "n")
    delta_steps = normal.summary["gradient_factor"]["init"]["width_steps"]["delta_norm"]
    assert delta_steps[1]["theory"] == 1.0


def test_the_run_report_shows_each_layers_width_and_the_steps(bottleneck):
    report = format_run_report(bottleneck)
    lines = report.splitlines()
    assert lines[0].split() == ["layer", "width", "|dL/dW|", "init", "|dL/dW|", "step", "10"]
    assert lines[3].split()[:2] == ["3", "4"]
    assert any(
        line.startswith("|dL/dW| at init, steps from the layers of fan-in 16") for line in lines
    )


def test_summary_shows_the_widths_as_one_token(bottleneck, tmp_path, small_config):
    other = gradlab.run(small_config, out=tmp_path / "small")
    table = summarize([bottleneck.path, other.path])
    assert "[16,16,4,16,16,16]" in table
    csv = summarize([bottleneck.path, other.path], fmt="csv")
    assert "[16%2C16%2C4%2C16%2C16%2C16]" in csv


def test_figures_mark_the_width_changes(bottleneck):
    from gradlab.figures.run import gradient_by_layer, layer_heatmap

    figure = gradient_by_layer(bottleneck)
    assert figure.gradlab_shown["width_changes"] == [2.5, 3.5]
    assert figure.gradlab_shown["M"] == bottleneck.summary["gradient_factor"]["init"]["delta"]
    (top,) = figure.axes[0].child_axes  # the widths, above the layers
    assert [label.get_text() for label in top.get_xticklabels()] == ["N=16", "N=4", "N=16"]
    heatmap = layer_heatmap(bottleneck, "weight_grad_norm")
    assert heatmap.gradlab_shown["width_changes"] == [2.5, 3.5]


def test_a_run_without_summary_json_gets_the_same_m_and_steps(bottleneck, tmp_path):
    """A killed run: the report and the figures fit with the function that writes summary.json."""
    import shutil

    from gradlab.figures.common import factor_of
    from gradlab.report import summary_rows
    from gradlab.results import read_run

    copy = tmp_path / "killed"
    shutil.copytree(bottleneck.path, copy, ignore=shutil.ignore_patterns("plots"))
    (copy / "summary.json").unlink()
    recorded = bottleneck.summary["gradient_factor"]["init"]
    (row,) = summary_rows([copy]).rows
    assert row["M_init"] == recorded["delta"]
    assert row["M_theory"] == bottleneck.summary["theory"]["factor"]
    assert factor_of(read_run(copy))["width_steps"] == recorded["width_steps"]


def test_batchnorm_keeps_its_theory_with_a_fan_out_scheme():
    """BatchNorm's factor does not depend on sigma_w, so xavier's changing scale does not matter."""
    config = config_from_dict(
        {"model": {"depth": 3, "width": [8, 4, 8], "norm": "batch", "init": {"scheme": "xavier"}}}
    )
    prediction = theory_at_init(config)
    assert prediction["applicable"] is True and prediction["factor"] > 1
    assert prediction["width_factors"] == theory_widths.width_factors([8, 4, 8])
