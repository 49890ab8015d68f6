"""The residual networks' mean-field recursion (gradlab.theory_residual) against simulated
networks of width 256 at initialization, and where it gives no number."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from gradlab import theory
from gradlab.cli import cli
from gradlab.engine import ResidualMLP
from gradlab.engine.norms import l2_norm
from gradlab.theory_residual import predict_residual

WIDTH = 256


def simulated_log_profile(activation, depth, seeds=4, **kwargs):
    """ln |dL/dx^l|, l = 0..depth, averaged over ``seeds`` networks (inputs of mean square 1,
    a random cotangent at the outputs)."""
    profiles = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        model = ResidualMLP(
            input_dim=WIDTH,
            output_dim=WIDTH,
            depth=depth,
            width=WIDTH,
            activation=activation,
            rng=rng,
            **kwargs,
        )
        model.forward(rng.normal(size=(64, WIDTH)))
        model.backward(rng.normal(size=(64, WIDTH)))
        profiles.append(np.log([l2_norm(delta) for delta in model.stream_deltas()]))
    return np.mean(profiles, axis=0)


def test_relu_per_block_factor_is_sqrt_of_1_plus_half_sv2_sw2():
    prediction = predict_residual("relu", 1.0, 0.0, 40, branch_scale=1.0)
    assert prediction.factors == pytest.approx([math.sqrt(1.5)] * 40, rel=1e-12)
    profile = simulated_log_profile("relu", 40, weight_scale=1.0, branch_scale=1.0)
    measured = math.exp((profile[0] - profile[-1]) / 40)  # geometric mean per block
    assert measured == pytest.approx(math.sqrt(1.5), rel=0.03)


def test_tanh_ratio_across_50_blocks():
    prediction = predict_residual("tanh", 1.0, 0.0, 50, branch_scale=1.0)
    profile = simulated_log_profile("tanh", 50, branch_scale=1.0)
    assert math.exp(profile[0] - profile[-1]) == pytest.approx(prediction.ratio, rel=0.03)
    # the per-block factor falls towards 1 (q grows): sub-exponential growth
    first, last = prediction.quarter_factors()
    assert first > last > 1


def test_tanh_total_grows_like_exp_sqrt_depth():
    """ln(ratio) / sqrt(L) settles to a constant, while ln(ratio) / L falls to 0."""
    logs = {
        depth: math.log(predict_residual("tanh", 1.0, 0.0, depth).ratio)
        for depth in (100, 400, 1600)
    }
    per_root = [logs[depth] / math.sqrt(depth) for depth in logs]
    assert per_root[2] == pytest.approx(per_root[1], rel=0.01)
    assert logs[1600] / 1600 < 0.3 * logs[100] / 100


def test_small_branch_scale_keeps_200_tanh_blocks_near_one_and_sv_1_does_not():
    assert predict_residual("tanh", 1.0, 0.0, 200, branch_scale=1.0).ratio > 1000
    assert predict_residual("tanh", 1.0, 0.0, 200, branch_scale=0.1).ratio < 10


def test_pre_layernorm_recursion_is_within_5_percent():
    prediction = predict_residual("relu", 1.0, 0.0, 30, norm="layer", norm_position="pre")
    profile = simulated_log_profile("relu", 30, seeds=2, norm="layer")
    assert math.exp(profile[0] - profile[-1]) == pytest.approx(prediction.ratio, rel=0.05)


def test_large_q_moments_stay_accurate():
    """A tanh stream whose q reaches the thousands: E[tanh'(sqrt(q) z)^2] ~ c / sqrt(q)."""
    prediction = predict_residual("tanh", 3.0, 0.0, 300)
    q = prediction.q[-1]
    assert q > 2000
    chi = prediction.factors[-1] ** 2
    # E[tanh'(u)^2] -> (integral of tanh'^2 = 4/3) / sqrt(2 pi q) as q grows
    assert (chi - 1) / 9 == pytest.approx(4 / 3 / math.sqrt(2 * math.pi * q), rel=0.01)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(norm="batch"), "BatchNorm"),
        (dict(norm="layer", norm_position="post"), "post-norm"),
        (dict(branch="reduced", activation="relu"), "reduced branch with relu"),
    ],
)
def test_no_number_where_the_recursion_fails(kwargs, words):
    activation = kwargs.pop("activation", "tanh")
    prediction = predict_residual(activation, 1.0, 0.0, 10, **kwargs)
    assert prediction.factors is None and prediction.ratio is None
    assert words in prediction.reason and prediction.reason.endswith("measurement only")
    assert prediction.quarter_factors() == (None, None)


def test_reduced_tanh_branch_has_a_theory():
    prediction = predict_residual("tanh", 1.0, 0.0, 10, branch="reduced", branch_scale=0.1)
    assert prediction.ratio == pytest.approx(predict_residual("tanh", 1.0, 0.0, 10).ratio)


def test_theory_command_residual_text_and_json():
    args = ["theory", "--activation", "tanh", "--weight-scale", "1", "--residual", "full"]
    args += ["--branch-scale", "0.1", "--depth", "200"]
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    prediction = predict_residual("tanh", 1.0, 0.0, 200, branch_scale=0.1)
    assert f"predicted ratio        {prediction.ratio:.6g}" in text.output
    first = CliRunner().invoke(cli, [*args, "--format", "json"])
    data = json.loads(first.output)
    assert data["ratio"] == prediction.ratio
    assert data["factor_first_block"] == prediction.factors[0]
    assert data["factor_last_block"] == prediction.factors[-1]
    none = CliRunner().invoke(cli, [*args, "--norm", "batch"])
    assert none.exit_code == 0 and "none (no theory for BatchNorm" in none.output


def test_theory_command_json_of_a_plain_network_is_the_prediction():
    result = CliRunner().invoke(cli, ["theory", "--weight-scale", "4", "--format", "json"])
    data = json.loads(result.output)
    assert data["M"] == theory.predict("sigmoid", 4.0).factor  # "M": the issue-17 key
    assert data["regime"] == "vanishing"


def test_theory_command_residual_needs_a_depth():
    result = CliRunner().invoke(cli, ["theory", "--weight-scale", "1", "--residual", "full"])
    assert result.exit_code == 2 and "--depth" in result.output


@pytest.mark.parametrize("extra", [["--critical-line"], ["--dropout", "0.1"]])
def test_theory_command_residual_goes_with_neither_critical_line_nor_dropout(extra):
    args = ["theory", "--weight-scale", "1", "--residual", "full", "--depth", "10", *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert "--residual goes with neither --critical-line nor --dropout" in result.output
