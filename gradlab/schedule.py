"""Learning-rate schedules: the lr of every step, a pure function of the step (no state, so
a resumed run needs nothing saved for it). Standard library only: config checking uses it.

PyTorch's schedulers (``torch.optim.lr_scheduler``) in closed form, with the warmup in front
as ``SequentialLR([warmup, main], milestones=[warmup_steps])`` chains them. With W =
``warmup_steps``, e = step - W the steps since the warmup ended and T = steps - W:

- warmup, step < W: lr * (warmup_start + (1 - warmup_start) * step / W), PyTorch's
  ``LinearLR(start_factor=warmup_start, end_factor=1, total_iters=W)`` (PyTorch needs
  start_factor > 0; gradlab also takes 0, the first update then being zero);
- constant: lr;
- step: lr * gamma ** (e // step_every), ``StepLR(step_size=step_every, gamma=gamma)``;
- cosine: final_lr + (lr - final_lr) (1 + cos(pi e / T)) / 2,
  ``CosineAnnealingLR(T_max=T, eta_min=final_lr)``;
- linear: lr (1 - e / T) + final_lr e / T, ``LinearLR(start_factor=1,
  end_factor=final_lr / lr, total_iters=T)``.

Step s updates with lr(s) (PyTorch: ``scheduler.step()`` once after every optimizer step).
gradlab's last step, s = steps, makes no update; its logged lr is lr(steps), which for
cosine and linear is ``final_lr``: the value PyTorch's scheduler holds after T calls.
"""

import math

from gradlab import vocabulary
from gradlab.config_checks import fail

KINDS = vocabulary.SCHEDULES
# the keys that only some kinds read: each kind's own keys take these defaults when unset
# (null), and a key set for a kind that does not read it is an error
OWN_KEYS = {"step_every": ("step",), "gamma": ("step",), "final_lr": ("cosine", "linear")}
DEFAULTS = {"step_every": 1000, "gamma": 0.1, "final_lr": 0.0}
_PATH = "train.schedule"


def resolve_keys(kind: str, values: dict) -> dict:
    """The kind-specific keys with the kind's defaults filled in; raises the one-line
    ConfigError for a key set (not null) that ``kind`` does not read."""
    resolved = {}
    for key, kinds in OWN_KEYS.items():
        value = values[key]
        if kind in kinds:
            resolved[key] = DEFAULTS[key] if value is None else value
        elif value is not None:
            users = " and ".join(f"'{name}'" for name in kinds)
            raise fail(
                f"{_PATH}.{key}",
                f"does not apply to kind '{kind}' (only to {users}); remove it or set {_PATH}.kind",
            )
        else:
            resolved[key] = None
    return resolved


def check_against_steps(schedule, steps: int) -> None:
    """A decay to ``final_lr`` at the last step needs the warmup to end by then."""
    if schedule.kind in OWN_KEYS["final_lr"] and schedule.warmup_steps > steps:
        raise fail(
            f"{_PATH}.warmup_steps",
            f"must be <= train.steps ({steps}) for kind '{schedule.kind}', got "
            f"{schedule.warmup_steps}: the decay runs from the end of the warmup to the last step",
        )


def learning_rate(schedule, lr: float, steps: int, step: int) -> float:
    """The lr of ``step`` under ``schedule`` (a ``ScheduleConfig``) for a run of ``steps``
    steps with base learning rate ``lr``. A constant schedule returns ``lr`` itself."""
    warmup = schedule.warmup_steps
    if step < warmup:
        start = schedule.warmup_start
        return lr * (start + (1.0 - start) * step / warmup)
    since = step - warmup
    kind = schedule.kind
    if kind == "constant":
        return lr
    if kind == "step":
        return lr * schedule.gamma ** (since // schedule.step_every)
    length = steps - warmup
    fraction = min(since / length, 1.0) if length > 0 else 1.0
    if kind == "cosine":
        return (
            schedule.final_lr + (lr - schedule.final_lr) * (1.0 + math.cos(math.pi * fraction)) / 2
        )
    if kind == "linear":
        return lr * (1.0 - fraction) + schedule.final_lr * fraction
    raise ValueError(f"unknown schedule kind {kind!r}; one of {', '.join(KINDS)}")
