"""Learning-rate schedules: PyTorch's schedulers' values, the config rules, the lr column."""

import math

import numpy as np
import pytest
from click.testing import CliRunner

import gradlab
from gradlab import vocabulary
from gradlab.cli import cli
from gradlab.config import ScheduleConfig, config_from_dict, dump_config_yaml
from gradlab.errors import ConfigError
from gradlab.schedule import learning_rate

# PyTorch's values, worked out by hand from its documentation (torch.optim.lr_scheduler):
# (schedule, lr, steps, the lr of steps 0, 1, 2, ...)
BY_HAND = [
    # LinearLR(start_factor=0.5, total_iters=4) on lr 0.05: the docstring's own example
    (
        {"warmup_steps": 4, "warmup_start": 0.5},
        0.05,
        6,
        [0.025, 0.03125, 0.0375, 0.04375, 0.05, 0.05, 0.05],
    ),
    # StepLR(step_size=3, gamma=0.1) on lr 0.05 (the docstring's example has step_size 30)
    ({"kind": "step", "step_every": 3}, 0.05, 7, [0.05] * 3 + [0.005] * 3 + [0.0005] * 2),
    # CosineAnnealingLR(T_max=4, eta_min=0.01) on lr 0.1: 0.01 + 0.09 (1 + cos(pi e / 4)) / 2
    (
        {"kind": "cosine", "final_lr": 0.01},
        0.1,
        4,
        [
            0.1,
            0.01 + 0.045 * (1 + math.sqrt(0.5)),
            0.055,
            0.01 + 0.045 * (1 - math.sqrt(0.5)),
            0.01,
        ],
    ),
    # LinearLR(start_factor=1, end_factor=0, total_iters=4) on lr 0.1
    ({"kind": "linear"}, 0.1, 4, [0.1, 0.075, 0.05, 0.025, 0.0]),
    # SequentialLR([LinearLR(start_factor=0.5, total_iters=2), StepLR(2, gamma=0.5)], [2])
    (
        {"kind": "step", "warmup_steps": 2, "warmup_start": 0.5, "step_every": 2, "gamma": 0.5},
        1.0,
        7,
        [0.5, 0.75, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25],
    ),
    # SequentialLR([LinearLR(start_factor=0.25, total_iters=2), CosineAnnealingLR(T_max=2)], [2])
    (
        {"kind": "cosine", "warmup_steps": 2, "warmup_start": 0.25},
        0.2,
        4,
        [0.05, 0.125, 0.2, 0.1, 0],
    ),
]


def lrs(schedule, lr, steps):
    config = ScheduleConfig(**schedule)
    return [learning_rate(config, lr, steps, step) for step in range(steps + 1)]


@pytest.mark.parametrize(("schedule", "lr", "steps", "expected"), BY_HAND)
def test_schedules_give_pytorchs_values(schedule, lr, steps, expected):
    assert lrs(schedule, lr, steps)[: len(expected)] == pytest.approx(
        expected, rel=1e-14, abs=1e-17
    )


def _torch_lrs(schedule: ScheduleConfig, lr: float, steps: int) -> list[float]:
    """The lr of each step from PyTorch's schedulers, chained as docs/config.md says."""
    torch = pytest.importorskip("torch")
    from torch.optim import lr_scheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    warmup, decay = schedule.warmup_steps, steps - schedule.warmup_steps
    main = {
        "constant": lambda: lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0),
        "step": lambda: lr_scheduler.StepLR(optimizer, schedule.step_every, schedule.gamma),
        "cosine": lambda: lr_scheduler.CosineAnnealingLR(optimizer, decay, schedule.final_lr),
        "linear": lambda: lr_scheduler.LinearLR(optimizer, 1.0, schedule.final_lr / lr, decay),
    }[schedule.kind]()
    if warmup:
        start = lr_scheduler.LinearLR(optimizer, schedule.warmup_start, 1.0, warmup)
        main = lr_scheduler.SequentialLR(optimizer, [start, main], milestones=[warmup])
    values = []
    for _ in range(steps + 1):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        main.step()
    return values


@pytest.mark.parametrize(
    "schedule",
    [
        {"kind": "constant", "warmup_steps": 5, "warmup_start": 0.1},
        {"kind": "step", "warmup_steps": 3, "warmup_start": 0.2, "step_every": 4, "gamma": 0.3},
        {"kind": "cosine", "warmup_steps": 4, "warmup_start": 0.5, "final_lr": 0.001},
        {"kind": "linear", "warmup_steps": 2, "warmup_start": 0.3, "final_lr": 0.02},
    ],
)
def test_schedules_match_torch_where_it_is_installed(schedule):
    config = ScheduleConfig(**schedule)
    expected = _torch_lrs(config, 0.1, 20)
    assert lrs(schedule, 0.1, 20) == pytest.approx(expected, rel=1e-12)


def test_every_kind_of_the_vocabulary_is_a_schedule():
    for kind in vocabulary.SCHEDULES:
        values = lrs({"kind": kind}, 0.1, 10)
        assert values[0] == 0.1 and all(0 <= value <= 0.1 for value in values)


def test_a_constant_schedule_is_the_lr_itself():
    """Runs without a schedule keep their files byte for byte: the lr is not recomputed."""
    assert lrs({}, 0.123456789, 5) == [0.123456789] * 6


def test_kind_specific_keys_take_their_defaults_or_are_null():
    step = ScheduleConfig(kind="step")
    assert (step.step_every, step.gamma, step.final_lr) == (1000, 0.1, None)
    cosine = ScheduleConfig(kind="cosine")
    assert (cosine.step_every, cosine.gamma, cosine.final_lr) == (None, None, 0.0)
    constant = ScheduleConfig()
    assert (constant.step_every, constant.gamma, constant.final_lr) == (None, None, None)
    config = config_from_dict({"train": {"schedule": {"kind": "step", "gamma": 0.5}}})
    assert config_from_dict(yaml_load(dump_config_yaml(config))) == config


def yaml_load(text):
    import yaml

    return yaml.safe_load(text)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (
            {"kind": "cosine", "gamma": 0.5},
            "train.schedule.gamma: does not apply to kind 'cosine' (only to 'step'); remove "
            "it or set train.schedule.kind",
        ),
        (
            {"step_every": 10},
            "train.schedule.step_every: does not apply to kind 'constant' (only to 'step'); "
            "remove it or set train.schedule.kind",
        ),
        (
            {"kind": "step", "final_lr": 0.0},
            "train.schedule.final_lr: does not apply to kind 'step' (only to 'cosine' and "
            "'linear'); remove it or set train.schedule.kind",
        ),
        (
            {"kind": "linear", "warmup_steps": 30},
            "train.schedule.warmup_steps: must be <= train.steps (20) for kind 'linear', got 30:"
            " the decay runs from the end of the warmup to the last step",
        ),
        ({"kind": "cosin"}, "did you mean 'cosine'?"),
        ({"warmup_start": 1.5}, "train.schedule.warmup_start: must be in [0, 1], got 1.5"),
        ({"kind": "step", "gamma": 0}, "train.schedule.gamma: must be > 0, got 0"),
        ({"kind": "step", "step_every": 0}, "train.schedule.step_every: must be >= 1, got 0"),
    ],
)
def test_bad_schedules_are_one_line_errors(schedule, message, write_config, tmp_path):
    with pytest.raises(ConfigError) as error:
        config_from_dict({"train": {"steps": 20, "schedule": schedule}})
    assert message in str(error.value)
    result = CliRunner().invoke(
        cli, ["run", str(write_config({"train.schedule": schedule})), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and message in result.output
    assert not (tmp_path / "r").exists()  # nothing written


def test_metrics_lr_column_holds_the_scheduled_values(write_config, tmp_path):
    schedule = {"kind": "cosine", "warmup_steps": 5, "warmup_start": 0.2, "final_lr": 0.01}
    run = gradlab.run(write_config({"train.schedule": schedule}), out=tmp_path / "run")
    expected = lrs(schedule, 0.1, 20)
    steps = run.metrics["step"].astype(int)
    np.testing.assert_array_equal(run.metrics["lr"], [expected[step] for step in steps])
    assert run.metrics["lr"][-1] == 0.01  # the last step: final_lr


def test_the_optimizer_steps_with_the_scheduled_lr(write_config, tmp_path):
    """Plain SGD moves W_l by lr * |g_l|: the logged update ratio follows the schedule (a
    warmup from 0 makes no update at step 0)."""
    schedule = {"kind": "step", "step_every": 5, "gamma": 0.5, "warmup_steps": 5}
    run = gradlab.run(
        write_config({"train.schedule": schedule, "log.every": 1}), out=tmp_path / "run"
    )
    ratios = run.layers["update_ratio"].reshape(-1, 6)  # steps x layers
    assert (ratios[0] == 0).all()  # lr 0 at step 0
    grad_norms = run.layers["weight_grad_norm"].reshape(-1, 6)
    weight_norms = run.layers["weight_norm"].reshape(-1, 6)
    lr = np.array(lrs(schedule, 0.1, 20))[:20, None]
    np.testing.assert_allclose(ratios[:20], lr * grad_norms[:20] / weight_norms[:20], rtol=1e-12)
