"""A run's two numpy files, ``params.npz`` and ``checkpoint.npz``: their format, and resuming.

Both are npz archives (``numpy.load(path)`` reads them, no pickle) written atomically and
byte for byte the same for the same run: every member is stored with the zip's fixed
date, where ``numpy.savez`` would stamp the time of writing.

``params.npz``, written at the end of every run: the final parameters, one array per name
of ``MLP.params`` (``layer1.weight`` (fan_in, fan_out), ``layer1.bias``,
``layer1.norm.gamma``, ``layer1.norm.beta``, ..., ``output.weight``, ``output.bias``) in the
run's dtype. ``MLP.load_params(numpy.load(path))`` puts them into a model of the same shape.

``checkpoint.npz``, written with ``train.checkpoint_every: N`` at the end of every N-th
step and at the run's last step (completed or interrupted), replacing the previous one:
the state at the end of step ``step`` (its update made and its rows logged), all a resumed
run needs to write the same files as an uninterrupted one:

    params/<name>            MLP.params
    buffers/<name>           MLP.buffers: BatchNorm's running_mean and running_var
    optimizer/<key>          Optimizer.state_dict(): momentum buffers, Adam's moments and step
    batches/order            this epoch's order of the training examples (if drawn yet)
    first_stats/<column>     the layer statistics of step 0 and of the last logged step,
    last_stats/<column>      for summary.json
    state                    JSON text: format, step, config_sha256 (of the resolved
                             config.yaml), batches_position, last_logged_step, the final
                             losses so far, and generators: the bit_generator state of every
                             random generator the run draws from while training
"""

import hashlib
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradlab.atomic import atomic_writer
from gradlab.config import Config, config_from_dict, config_to_dict, dump_config_yaml
from gradlab.config_checks import first_difference
from gradlab.errors import GradlabError
from gradlab.results import CHECKPOINT_FILE, DONE_STATUSES, PARAMS_FILE, read_run

FORMAT = "gradlab-checkpoint-1"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold: no time of writing


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``numpy.savez`` without timestamps, atomically: the same arrays give the same bytes."""
    with atomic_writer(path, binary=True) as handle, zipfile.ZipFile(handle, "w") as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def save_params(run_dir: Path, model) -> None:
    write_npz(Path(run_dir) / PARAMS_FILE, model.params)


def config_hash(config: Config) -> str:
    """sha256 of the resolved config as config.yaml holds it."""
    return hashlib.sha256(dump_config_yaml(config).encode("utf-8")).hexdigest()


def save_checkpoint(run_dir: Path, training, step: int) -> None:
    """The state of ``training`` (a runner ``_Training``) at the end of ``step``."""
    arrays = {f"params/{name}": value for name, value in training.model.params.items()}
    arrays.update({f"buffers/{name}": value for name, value in training.model.buffers.items()})
    optimizer = training.optimizer.state_dict()
    arrays.update({f"optimizer/{key}": value for key, value in optimizer.items()})
    if training.batches.order is not None:
        arrays["batches/order"] = training.batches.order
    for which in ("first_stats", "last_stats"):
        stats = getattr(training, which)
        arrays.update({f"{which}/{name}": value for name, value in (stats or {}).items()})
    state = {
        "format": FORMAT,
        "step": step,
        "config_sha256": config_hash(training.config),
        "batches_position": training.batches.position,
        "last_logged_step": training.last_logged_step,
        "final": {key: _json_number(value) for key, value in training.final.items()},
        "stream_input_norms": {  # residual networks: |dL/dx^0| at the first and last logged step
            key: _json_number(value) for key, value in training.stream_input_norms.items()
        },
        "spectrum": training.spectrum.measured if training.spectrum is not None else {},
        "generators": {
            name: generator.bit_generator.state for name, generator in training.generators.items()
        },
    }
    arrays["state"] = np.array(json.dumps(state))
    write_npz(Path(run_dir) / CHECKPOINT_FILE, arrays)


def _json_number(value) -> float | str:
    """A float as JSON keeps it exactly (repr), nan and inf as text."""
    value = float(value)
    return value if math.isfinite(value) else repr(value)


@dataclass
class Checkpoint:
    """A checkpoint.npz read back: its JSON ``state`` and its arrays by group."""

    state: dict
    groups: dict[str, dict[str, np.ndarray]]

    @property
    def step(self) -> int:
        return self.state["step"]

    def group(self, name: str) -> dict[str, np.ndarray]:
        return self.groups.get(name, {})


def load_checkpoint(run_dir: Path) -> Checkpoint:
    path = Path(run_dir) / CHECKPOINT_FILE
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        state = json.loads(str(arrays.pop("state")))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise GradlabError(f"cannot resume: {path} unreadable ({error})") from None
    if state.get("format") != FORMAT:
        raise GradlabError(f"cannot resume: {path} is not a {FORMAT} file")
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        groups.setdefault(group, {})[name] = value
    return Checkpoint(state, groups)


def restore(training, saved: Checkpoint) -> None:
    """Put ``saved`` into a freshly built ``training``: it goes on with step ``saved.step + 1``."""
    model = training.model
    model.load_params(saved.group("params"))
    for name, value in saved.group("buffers").items():
        model.buffers[name][...] = value
    training.optimizer.load_state_dict(saved.group("optimizer"))
    state = saved.state
    training.batches.order = saved.group("batches").get("order")
    training.batches.position = state["batches_position"]
    for name, generator in training.generators.items():
        generator.bit_generator.state = state["generators"][name]
    training.first_stats = saved.group("first_stats") or None
    training.last_stats = saved.group("last_stats") or None
    training.last_logged_step = state["last_logged_step"]
    training.final = {key: float(value) for key, value in state["final"].items()}
    norms = state.get("stream_input_norms", {})
    training.stream_input_norms = {key: float(value) for key, value in norms.items()}
    if training.spectrum is not None:  # the summaries of the spectra measured so far
        training.spectrum.measured = state.get("spectrum", {})
    training.start_step = saved.step + 1
    training.step_reached = saved.step
    if training.progress_bar is not None:
        training.progress_bar.update(training.start_step)


def resumable(run_dir: Path, config: Config | None = None) -> tuple[Config, Checkpoint]:
    """The config and checkpoint to resume the run in ``run_dir`` from; a GradlabError (one
    line) when it finished, has no checkpoint, or its config is not the checkpoint's (or
    not ``config``, when given)."""
    run = read_run(run_dir)
    if run.status in DONE_STATUSES:
        raise GradlabError(f"{run_dir}: the run already {run.status}; nothing to resume")
    if run.unreadable:
        raise GradlabError(f"cannot resume {run_dir}: {run.problems[0]}")
    recorded = config_from_dict(run.config, source=f"{run_dir}/config.yaml")
    if config is not None and config_hash(config) != config_hash(recorded):
        difference = first_difference(
            config_to_dict(config), config_to_dict(recorded), ("given", "in the run")
        )
        raise GradlabError(
            f"cannot resume {run_dir}: the config given differs from the run's "
            f"({difference}); start a new run instead"
        )
    if not (Path(run_dir) / CHECKPOINT_FILE).is_file():
        raise GradlabError(
            f"cannot resume {run_dir}: it has no {CHECKPOINT_FILE} (train.checkpoint_every "
            "is 0, or it was killed before its first checkpoint); run it again with --force"
        )
    saved = load_checkpoint(run_dir)
    if saved.state["config_sha256"] != config_hash(recorded):
        raise GradlabError(
            f"cannot resume {run_dir}: its config.yaml changed since the checkpoint was "
            "written; start a new run instead"
        )
    return recorded, saved
