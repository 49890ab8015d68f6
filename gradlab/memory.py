"""How much memory a run needs, estimated from its config before anything is built, and the
warning ``gradlab run`` prints when that is more than half of this machine's."""

import os

import numpy as np

from gradlab.config import Config
from gradlab.data import TEACHER_WIDTH
from gradlab.engine.model import memory_footprint

_BASE_BYTES = 64 * 2**20  # Python with numpy and gradlab, a tiny run: 65-70 MiB measured
_EVAL_TRAIN_SAMPLES = 1024  # ``_Training.evaluate`` measures the loss on this many
_OPTIMIZER_COPIES = {"sgd": 1, "momentum": 2, "nesterov": 2, "adam": 3}  # + its ``updates``


def estimate_memory(config: Config) -> int:
    """Peak resident bytes a run of ``config`` needs, roughly (measured: within 10% for deep
    or wide models, up to 1.5x high where the data dominate): the interpreter, then the
    larger of making the data (the teacher's temporaries) and training (data, parameters,
    gradients, optimizer state, the arrays backprop keeps, evaluation's two arrays; see
    ``memory_footprint``)."""
    data, model = config.data, config.model
    itemsize = np.dtype(config.dtype).itemsize
    samples = data.n_train + data.n_test
    outputs = config.output_dim
    # z, the inputs and their copy in ``dtype``; or z and the teacher's hidden layer, twice
    widest = max(3 * data.input_dim, data.input_dim + 2 * TEACHER_WIDTH)
    making_data = samples * (widest + 4 * outputs) * 8
    copies = 2 + _OPTIMIZER_COPIES[config.train.optimizer] + (config.train.weight_decay > 0)
    residual = model.residual
    footprint = memory_footprint(
        data.input_dim,
        outputs,
        model.depth,
        model.widths,
        model.activation,
        model.norm,
        config.dtype,
        batch=config.resolved_batch_size,
        eval_batch=max(data.n_test, min(data.n_train, _EVAL_TRAIN_SAMPLES)),
        parameter_copies=copies,
        dropout=model.dropout,
        branch=residual.branch if residual.enabled else None,
    )
    training = samples * (data.input_dim + outputs) * itemsize + sum(footprint.values())
    return _BASE_BYTES + max(making_data, training)


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def memory_warning(config: Config, machine_bytes: int | None = None) -> str | None:
    """A one-line warning when the run's estimated memory exceeds half of the machine's
    (``machine_bytes``, default this machine's), else None."""
    machine_bytes = machine_memory_bytes() if machine_bytes is None else machine_bytes
    estimate = estimate_memory(config)
    if machine_bytes is None or estimate <= machine_bytes / 2:
        return None
    return (
        f"warning: this run needs about {_gigabytes(estimate)} of memory (estimate), more "
        f"than half of this machine's {_gigabytes(machine_bytes)}"
    )


def _gigabytes(size: int) -> str:
    return f"{size / 1e9:.3g} GB"
