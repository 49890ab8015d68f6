"""The Jacobian spectrum of a run: config, spectrum.csv, summary.json, theory, CLI lines."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import gradlab
from gradlab import theory_spectrum
from gradlab.cli import cli
from gradlab.config import config_from_dict
from gradlab.engine import MLP
from gradlab.engine.jacobian import jacobian_spectrum
from gradlab.errors import ConfigError
from gradlab.results import SPECTRUM_COLUMNS

SPECTRUM = {"analysis.spectrum.enabled": True, "analysis.spectrum.samples": 3}
SUMMARY_KEYS = {"mean_sq", "var_sq", "max", "min", "frac_within_2x", "layers", "theory"}


def _run(write_config, tmp_path, changes=None, out="run"):
    return gradlab.run(write_config({**SPECTRUM, **(changes or {})}), out=tmp_path / out)


def test_spectrum_csv_and_summary_at_init_and_end(write_config, tmp_path):
    run = _run(write_config, tmp_path, {"analysis.spectrum.at": "init_and_end"})
    table = run.spectrum
    assert (run.path / "spectrum.csv").read_text().splitlines()[0] == ",".join(SPECTRUM_COLUMNS)
    width = run.config["model"]["width"]
    assert len(table["step"]) == 2 * 3 * width  # two steps, 3 samples, width values each
    np.testing.assert_array_equal(np.unique(table["step"]), [0, 20])
    np.testing.assert_array_equal(table["rank"][:width], np.arange(1, width + 1))
    blocks = run.summary["spectrum"]
    assert set(blocks) == {"init", "final"}
    for label, step in (("init", 0), ("final", 20)):
        block = blocks[label]
        assert SUMMARY_KEYS <= set(block) and block["step"] == step
        values = table["singular_value"][table["step"] == step]
        assert block["mean_sq"] == pytest.approx(np.mean(values**2), rel=1e-12)
        assert block["var_sq"] == pytest.approx(np.var(values**2), rel=1e-12)
        assert block["max"] == values.max() and block["min"] == values.min()
        assert block["layers"] == run.config["model"]["depth"] - 1
        inside = np.mean((values >= 0.5) & (values <= 2))
        assert block["frac_within_2x"] == pytest.approx(inside)
    assert blocks["init"]["theory"]["mean_sq"] > 0
    assert blocks["final"]["theory"]["mean_sq"] is None
    assert "initialization" in blocks["final"]["theory"]["reason"]


def test_measuring_the_spectrum_leaves_the_run_unchanged(write_config, tmp_path):
    plain = gradlab.run(write_config(), out=tmp_path / "plain")
    measured = _run(write_config, tmp_path, {"analysis.spectrum.at": "init_and_end"})
    for name in ("metrics.csv", "layers.csv"):
        assert (plain.path / name).read_bytes() == (measured.path / name).read_bytes()
    without = {key: value for key, value in measured.summary.items() if key != "spectrum"}
    assert without == {**plain.summary, "name": measured.summary["name"]}
    assert not (plain.path / "spectrum.csv").exists() and "spectrum" not in plain.summary


def test_same_config_same_spectrum_bytes(write_config, tmp_path):
    first, second = (_run(write_config, tmp_path, out=out) for out in ("a", "b"))
    for name in ("spectrum.csv", "summary.json"):
        assert (first.path / name).read_bytes() == (second.path / name).read_bytes()


def test_steps_zero_with_init_and_end_measures_once(write_config, tmp_path):
    run = _run(write_config, tmp_path, {"train.steps": 0, "analysis.spectrum.at": "init_and_end"})
    assert run.summary["spectrum"]["final"]["mean_sq"] == run.summary["spectrum"]["init"]["mean_sq"]
    assert len(run.spectrum["step"]) == 3 * run.config["model"]["width"]


def test_float32_run_reports_values_below_the_float32_range_without_zeros(write_config, tmp_path):
    changes = {
        "dtype": "float32",
        "train.steps": 0,
        "model.depth": 41,
        "model.activation": "linear",
        "model.init.scheme": "orthogonal",
        "model.init.weight_scale": 0.1,
    }
    run = _run(write_config, tmp_path, changes)
    block = run.summary["spectrum"]["init"]
    assert 0 < block["min"] <= block["max"] < np.finfo(np.float32).tiny
    assert "note" not in block and block["unresolved"] == 0
    assert (run.spectrum["singular_value"] > 0).all()


def test_values_beyond_float64_are_noted(write_config, tmp_path):
    changes = {
        "train.steps": 0,
        "model.depth": 130,
        "model.activation": "linear",
        "model.init.scheme": "orthogonal",
        "model.init.weight_scale": 1e-3,
    }
    block = _run(write_config, tmp_path, changes).summary["spectrum"]["init"]
    assert "beyond the float64 range" in block["note"]


def test_relu_spectrum_reports_the_unresolved_zeros(write_config, tmp_path):
    changes = {"train.steps": 0, "model.activation": "relu", "model.init.scheme": "he"}
    run = _run(write_config, tmp_path, changes)
    block = run.summary["spectrum"]["init"]
    assert block["min"] is None and 0.2 < block["unresolved"] < 0.8
    assert block["resolution"] == pytest.approx(16 * 2.0**-52 * block["max"], rel=0.5)


@pytest.mark.parametrize("norm", ["batch"])
def test_batchnorm_is_refused_in_one_line_naming_both_keys(norm, small_config):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(small_config, ["analysis.spectrum.enabled=true", f"model.norm={norm}"])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("analysis.spectrum.enabled:") and "model.norm" in message


def test_config_errors_of_the_spectrum_section(small_config, write_config):
    with pytest.raises(ConfigError, match=r"analysis.spectrum.at: 'end' is not one of init, "):
        config_from_dict(small_config, ["analysis.spectrum.at=end"])
    with pytest.raises(ConfigError, match=r"samples: must be <= data.n_train \(128\), got 500"):
        config_from_dict(small_config, ["analysis.spectrum.samples=500"])
    with pytest.raises(ConfigError, match="did you mean 'samples'"):
        config_from_dict(small_config, ["analysis.spectrum.sample=2"])
    result = CliRunner().invoke(
        cli, ["run", str(write_config({"model.norm": "batch", **SPECTRUM})), "--quiet"]
    )
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1


def test_layernorm_runs_without_theory(write_config, tmp_path):
    run = _run(write_config, tmp_path, {"train.steps": 0, "model.norm": "layer"})
    theory = run.summary["spectrum"]["init"]["theory"]
    assert theory["mean_sq"] is None and theory["var_sq"] is None
    assert "model.norm layer" in theory["reason"]
    assert run.summary["spectrum"]["init"]["mean_sq"] > 0


def test_run_prints_one_spectrum_line(write_config, tmp_path):
    path = write_config(SPECTRUM)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Jacobian spectrum")]
    assert len(lines) == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())["spectrum"]["init"]
    assert f"mean s^2 {summary['mean_sq']:.4g}" in lines[0]
    assert f"var s^2 {summary['var_sq']:.4g}" in lines[0]
    assert f"s_max/s_min {summary['max'] / summary['min']:.4g}" in lines[0]


# ---- theory ------------------------------------------------------------------------------


def test_relu_moments_and_variance_per_layer():
    assert theory_spectrum.derivative_moments("relu", 3.0) == pytest.approx((0.5, 0.5))
    at = theory_spectrum.at_criticality("relu")
    assert at["gaussian"] == pytest.approx(2.0) and at["orthogonal"] == pytest.approx(1.0)
    prediction = theory_spectrum.predict_spectrum("relu", 2**0.5, init="he", layers=10)
    assert prediction["mean_sq"] == pytest.approx(1.0) and prediction["var_sq"] == pytest.approx(20)


def test_tanh_near_zero_bias_approaches_isometry_with_orthogonal_weights():
    # sigma_b = 0, sigma_w = 1: q* = 0, mu_1 = mu_2 = 1: orthogonal weights give Var = 0
    isometry = theory_spectrum.predict_spectrum("tanh", 1.0, init="orthogonal", layers=100)
    gaussian = theory_spectrum.predict_spectrum("tanh", 1.0, init="normal", layers=100)
    assert isometry["mean_sq"] == 1.0 and isometry["var_sq"] == 0.0
    assert gaussian["var_sq"] == pytest.approx(100.0)
    small_bias = theory_spectrum.at_criticality("tanh", 0.05)  # sigma_b^2 = 0.0025
    assert small_bias["weight_scale"] == pytest.approx(1.12254, rel=1e-5)
    assert 0 < small_bias["orthogonal"] < 0.1 < 1 < small_bias["gaussian"]
    assert small_bias["gaussian"] - small_bias["orthogonal"] == pytest.approx(1.0)


def test_mu_moments_match_sampling():
    rng = np.random.default_rng(0)
    u = rng.normal(scale=0.7, size=2_000_000)
    slopes = 1 - np.tanh(u) ** 2
    mu_1, mu_2 = theory_spectrum.derivative_moments("tanh", 0.49)
    assert mu_1 == pytest.approx(np.mean(slopes**2), rel=2e-3)
    assert mu_2 == pytest.approx(np.mean(slopes**4), rel=2e-3)


def test_no_variance_off_criticality_and_no_theory_with_layernorm():
    off = theory_spectrum.predict_spectrum("tanh", 1.5, 0.0, init="normal", layers=20)
    assert off["mean_sq"] > 1 and off["var_sq"] is None and "off criticality" in off["reason"]
    layer = theory_spectrum.predict_spectrum("tanh", 1.0, init="normal", layers=5, norm="layer")
    assert layer["mean_sq"] is None and layer["var_sq"] is None


def test_theory_command_prints_the_spectrum_at_criticality():
    result = CliRunner().invoke(cli, ["theory", "--activation", "relu", "--weight-scale", "1"])
    assert result.exit_code == 0, result.output
    assert "mu_1 = E[phi'^2]       0.5 " in result.output
    assert "mu_2 = E[phi'^4]       0.5\n" in result.output
    assert "Var[s^2] per layer     gaussian 2, orthogonal 1 " in result.output
    normed = CliRunner().invoke(cli, ["theory", "--weight-scale", "1", "--norm", "layer"])
    assert "Jacobian spectrum      none (no theory with --norm layer)" in normed.output


def _relu_variances(init, layers, width, seeds, samples):
    """Var[lambda] of each sample's J, (seeds, samples): relu at criticality, biases 0."""
    scale = 1.0 if init == "he" else math.sqrt(2.0)
    variances = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        model = MLP(8, 1, layers + 1, width, "relu", init=init, weight_scale=scale, rng=rng)
        values = jacobian_spectrum(model, rng.normal(size=(samples, 8))).singular_values
        variances.append(np.var(values**2, axis=1))
    return np.asarray(variances)


@pytest.mark.parametrize(("init", "per_layer"), [("he", 2.0), ("orthogonal", 1.0)])
def test_relu_variance_of_lambda_is_about_2l_gaussian_and_l_orthogonal(init, per_layer):
    """Free probability: Var[lambda] = L (mu_2 / mu_1^2 - 1 - s_1), 2L and L for relu. Width
    128, L = 8, 12 networks x 4 samples. The samples of one network share its weights, so
    the sampling error is that of the 12 per-network means (measured: about 1.7 for the
    Gaussian 16, 1.0 for the orthogonal 8); the mean lies within 3 of them."""
    layers = 8
    per_network = _relu_variances(init, layers, width=128, seeds=12, samples=4).mean(axis=1)
    error = per_network.std(ddof=1) / math.sqrt(per_network.size)
    assert abs(per_network.mean() - per_layer * layers) <= 3 * error
    assert error < 0.15 * per_layer * layers  # the check has teeth: 2L and L lie apart
