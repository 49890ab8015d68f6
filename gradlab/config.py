"""Run configuration: typed, frozen dataclasses, loaded from YAML, checked, overridable.

A config file holds only the keys it changes; everything else keeps the defaults written
below. Precedence, lowest first: the defaults, the file, ``--set key.path=value`` overrides
(in order), ``--seed``. Every problem is a one-line ``ConfigError`` naming the key path, the
bad value and what is allowed.

The schema lives in one place: the dataclasses (names, types, defaults, meaning) plus two
tables, ``CHOICES`` and ``RANGES``, keyed by key path. Checking happens when a section is
constructed (``__post_init__``, by ``config_checks.checked``), so a config built in code is
held to the same rules as one read from a file; YAML text is read by ``yaml_input``. Uses yaml
and the standard library only (no numpy, click or matplotlib).
"""

import copy
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from gradlab import config_data, config_rules, vocabulary
from gradlab import schedule as lr_schedule
from gradlab.config_checks import Range as _Range
from gradlab.config_checks import above as _above
from gradlab.config_checks import at_least as _at_least
from gradlab.config_checks import (
    build_section,
    checked,
    fail,
    is_section,
    join_path,
    show,
    unknown_key,
)
from gradlab.errors import ConfigError
from gradlab.yaml_input import parse_override, read_yaml_file

# ---------------------------------------------------------------------------------------
# What each key may hold beyond its type. Keys are dotted paths, as written in --set.


CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": ("float64", "float32"),
    "data.source": vocabulary.DATA_SOURCES,
    "data.task": ("regression", "binary", "multiclass"),
    "model.activation": vocabulary.ACTIVATIONS,
    "model.norm": vocabulary.NORMS,
    "model.init.scheme": vocabulary.INIT_SCHEMES,
    "model.residual.branch": vocabulary.RESIDUAL_BRANCHES,
    "model.residual.norm_position": vocabulary.NORM_POSITIONS,
    "train.batch_size": ("full",),  # besides an integer
    "train.loss": ("auto", *vocabulary.LOSSES),
    "train.optimizer": vocabulary.OPTIMIZERS,
    "train.clip.mode": vocabulary.CLIP_MODES,
    "analysis.spectrum.at": vocabulary.SPECTRUM_TIMES,
    "train.schedule.kind": vocabulary.SCHEDULES,
}

RANGES: dict[str, _Range] = {
    "seed": _at_least(0),  # numpy's default_rng refuses negative seeds
    "data.n_train": _at_least(1),
    "data.n_test": _at_least(1),
    "data.input_dim": _at_least(1),
    "data.classes": _at_least(2),
    "data.input_scale": _above(0),
    "data.noise": _at_least(0),
    "data.test_fraction": _Range(0, 1, low_open=True, high_open=True),
    "data.max_bytes": _at_least(1),
    "model.depth": _at_least(1),
    "model.width": _at_least(1),
    "model.leaky_slope": _Range(0, 1, high_open=True),
    "model.dropout": _Range(0, 1, high_open=True),
    "model.init.weight_scale": _above(0),
    "model.init.bias_scale": _at_least(0),
    "model.batchnorm.momentum": _Range(0, 1, low_open=True),
    "model.batchnorm.eps": _above(0),
    "model.layernorm.eps": _above(0),
    "model.residual.branch_scale": _above(0),
    "train.steps": _at_least(0),
    "train.batch_size": _at_least(1),
    "train.lr": _above(0),
    "train.momentum": _Range(0, 1, high_open=True),
    "train.weight_decay": _at_least(0),
    "train.clip.threshold": _above(0),
    "train.schedule.warmup_steps": _at_least(0),
    "train.schedule.warmup_start": _Range(0, 1),
    "train.schedule.step_every": _at_least(1),
    "train.schedule.gamma": _above(0),
    "train.schedule.final_lr": _at_least(0),
    "train.checkpoint_every": _at_least(0),
    "log.every": _at_least(1),
    "log.eval_every": _at_least(1),
    "analysis.fit_skip": _Range(0, 0.5, high_open=True),
    "analysis.tol": _above(0),
    "analysis.spectrum.samples": _at_least(1),
}

LOSS_FOR_TASK = {"regression": "mse", "binary": "bce", "multiclass": "cross_entropy"}

DEFAULT_NAME = "run"  # for a config built from a dict, which has no file stem to borrow


# ---------------------------------------------------------------------------------------
# The sections. Each knows its key path, so messages can name the full path.


class _Section:
    """Base of every config section: checks and normalizes each field on construction."""

    _path: ClassVar[str] = ""  # key path of this section, "" for the top level

    def __post_init__(self):
        for item in fields(self):
            path = join_path(self._path, item.name)
            value = checked(path, item.type, getattr(self, item.name), CHOICES, RANGES)
            object.__setattr__(self, item.name, value)  # frozen: the documented way round


@dataclass(frozen=True)
class DataConfig(_Section):
    _path: ClassVar[str] = "data"
    source: str = "synthetic"  # synthetic: the teacher below; file: data.path; digits: sklearn's
    path: str | None = None  # file: a .npz (x_train, y_train, x_test, y_test) or .csv (header)
    target: str | None = None  # .csv: the target column's name (null: the last column)
    task: str = "regression"  # what the teacher network's output becomes: a value or a class
    n_train: int = 2048  # training examples (real data: at most this many)
    n_test: int = 512  # held-out examples, drawn from the same teacher (real data: at most)
    input_dim: int | None = None  # features per example; null: 32, or the data's for real data
    classes: int | None = None  # classes of the multiclass task; null: 2, or the labels' count
    input_mean: float = 0.0  # E[X]: make it large to see why input normalization matters
    input_scale: float = 1.0  # std of every input feature
    noise: float = 0.05  # std of the noise on the teacher's (unit-variance) output
    normalize_inputs: bool = False  # standardize X with the training set's mean and variance
    test_fraction: float = 0.2  # .csv and digits: the share of rows held out (a seeded split)
    max_bytes: int = 2**31  # real data: refuse more than this many bytes of arrays (float64)

    def __post_init__(self):
        super().__post_init__()
        for key, value in config_data.checked_source(self).items():
            object.__setattr__(self, key, value)  # null input_dim, classes: the defaults


@dataclass(frozen=True)
class InitConfig(_Section):
    _path: ClassVar[str] = "model.init"
    scheme: str = "normal"  # normal: W ~ N(0, weight_scale^2 / fan_in) (mean-field sigma_w)
    weight_scale: float = 1.0  # sigma_w: the knob that moves a deep net across the edge of chaos
    bias_scale: float = 0.0  # sigma_b: biases ~ N(0, bias_scale^2)


@dataclass(frozen=True)
class BatchNormConfig(_Section):
    _path: ClassVar[str] = "model.batchnorm"
    momentum: float = 0.1  # PyTorch's m: running <- (1 - m) running + m batch; lecture beta = 1 - m
    eps: float = 1e-5  # added to the variance before the square root


@dataclass(frozen=True)
class LayerNormConfig(_Section):
    _path: ClassVar[str] = "model.layernorm"
    eps: float = 1e-5  # added to the per-sample variance before the square root


@dataclass(frozen=True)
class ResidualConfig(_Section):
    _path: ClassVar[str] = "model.residual"
    enabled: bool = False  # true: input Linear, then depth residual blocks, then the output
    branch: str = "full"  # full: x + act(h) V; reduced: x + act(h)
    branch_scale: float = 1.0  # sigma_v: V ~ N(0, sigma_v^2 / width) (full branch only)
    norm_position: str = "pre"  # pre: norm on the branch's input; post: norm(x + branch)


@dataclass(frozen=True)
class ModelConfig(_Section):
    _path: ClassVar[str] = "model"
    depth: int = 20  # hidden layers: gradients shrink or grow like M^depth
    width: int | list[int] = 64  # units per hidden layer, or a list: one per hidden layer
    activation: str = "sigmoid"  # sigmoid: max slope 1/4, the lecture's vanishing-gradient case
    norm: str = "none"  # normalization of the pre-activations, before the activation
    leaky_slope: float = 0.01  # leaky_relu's slope for z < 0 (PyTorch's default negative_slope)
    dropout: float = 0.0  # probability of dropping a unit of each hidden layer's output (training)
    init: InitConfig = field(default_factory=InitConfig)
    batchnorm: BatchNormConfig = field(default_factory=BatchNormConfig)  # used if norm: batch
    layernorm: LayerNormConfig = field(default_factory=LayerNormConfig)  # used if norm: layer
    residual: ResidualConfig = field(default_factory=ResidualConfig)  # residual blocks

    def __post_init__(self):
        super().__post_init__()
        config_rules.check_model(self)

    @property
    def widths(self) -> tuple[int, ...]:
        """The width of each hidden layer, 1..depth."""
        if isinstance(self.width, list):
            return tuple(self.width)
        return (self.width,) * self.depth


@dataclass(frozen=True)
class ClipConfig(_Section):
    _path: ClassVar[str] = "train.clip"
    mode: str = "none"  # norm: global (PyTorch clip_grad_norm_); layer_norm: per tensor; value
    threshold: float = 1.0  # max norm (norm, layer_norm) or max |entry| (value)


@dataclass(frozen=True)
class ScheduleConfig(_Section):
    _path: ClassVar[str] = "train.schedule"
    kind: str = "constant"  # PyTorch's schedulers in closed form (gradlab.schedule)
    warmup_steps: int = 0  # linear warmup from warmup_start * lr to lr over these steps
    warmup_start: float = 0.0  # the warmup's first lr as a fraction of train.lr
    step_every: int | None = None  # step: lr *= gamma every step_every steps (null: 1000)
    gamma: float | None = None  # step: the factor (null: 0.1)
    final_lr: float | None = None  # cosine, linear: the lr at the last step (null: 0)

    def __post_init__(self):
        super().__post_init__()
        values = {key: getattr(self, key) for key in lr_schedule.OWN_KEYS}
        for key, value in lr_schedule.resolve_keys(self.kind, values).items():
            object.__setattr__(self, key, value)


@dataclass(frozen=True)
class TrainConfig(_Section):
    _path: ClassVar[str] = "train"
    steps: int = 1000  # parameter updates; 0 measures the network at initialization only
    batch_size: int | str = 64  # examples per step, or "full" for full-batch gradient descent
    loss: str = "auto"  # auto: mse for regression, bce for binary, cross_entropy for multiclass
    optimizer: str = "sgd"  # sgd | momentum | nesterov | adam
    lr: float = 0.1  # learning rate
    momentum: float = 0.9  # mu of momentum and nesterov (Adam's beta1 is fixed at 0.9)
    weight_decay: float = 0.0  # L2 penalty added to the gradient: g + weight_decay * W
    clip: ClipConfig = field(default_factory=ClipConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # lr by step
    checkpoint_every: int = 0  # save checkpoint.npz every N steps and at the end; 0: never

    def __post_init__(self):
        super().__post_init__()
        lr_schedule.check_against_steps(self.schedule, self.steps)


@dataclass(frozen=True)
class LogConfig(_Section):
    _path: ClassVar[str] = "log"
    every: int = 10  # per-layer statistics every N steps (step 0 always)
    eval_every: int = 100  # test loss and accuracy every N steps


@dataclass(frozen=True)
class SpectrumConfig(_Section):
    _path: ClassVar[str] = "analysis.spectrum"
    enabled: bool = False  # singular values of the Jacobian d(last hidden) / d(first hidden)
    samples: int = 4  # training inputs (the first ones) whose Jacobians are measured
    at: str = "init"  # init | init_and_end (also the trained network)


@dataclass(frozen=True)
class AnalysisConfig(_Section):
    _path: ClassVar[str] = "analysis"
    fit_skip: float = 0.15  # fraction of hidden layers left out at each end of the M fit
    tol: float = 0.05  # |M - 1| <= tol counts as "stable", else vanishing or exploding
    spectrum: SpectrumConfig = field(default_factory=SpectrumConfig)  # dynamical isometry


@dataclass(frozen=True)
class Config(_Section):
    _path: ClassVar[str] = ""
    name: str = DEFAULT_NAME  # results go to results/<name>/; a file's default is its stem
    seed: int = 0  # seeds the run's np.random.Generator: same seed, same run
    dtype: str = "float64"  # float32 underflows sooner: vanishing gradients hit zero earlier
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    def __post_init__(self):
        super().__post_init__()
        config_rules.check_config(self)

    @property
    def resolved_loss(self) -> str:
        """The loss actually used: ``train.loss``, with auto replaced by the task's loss."""
        return LOSS_FOR_TASK[self.data.task] if self.train.loss == "auto" else self.train.loss

    @property
    def output_dim(self) -> int:
        """Network outputs: classes for multiclass, 2 for binary cross_entropy, else 1."""
        if self.data.task == "multiclass":
            return self.data.classes
        if self.data.task == "binary" and self.resolved_loss == "cross_entropy":
            return 2
        return 1

    @property
    def resolved_batch_size(self) -> int:
        """Examples per step as a number: "full" is ``data.n_train``."""
        return self.data.n_train if self.train.batch_size == "full" else self.train.batch_size


# ---------------------------------------------------------------------------------------
# Overrides: "key.path=value" strings from --set, or {key path: value} from a sweep.


def set_value(mapping: dict, key_path: str, value: Any) -> None:
    """mapping[a][b][c] = value for key_path "a.b.c", creating the missing levels."""
    *parents, last = key_path.split(".")
    node = mapping
    for depth, key in enumerate(parents):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            path = ".".join(parents[: depth + 1])
            raise fail(path, f"must be a mapping of keys, got {show(child)}")
        node = child
    node[last] = value


def _check_key_path(key_path: str, origin: str) -> None:
    """Raise unless key_path names a field of the schema (a value or a whole section)."""
    section: type = Config
    walked = ""
    for key in key_path.split("."):
        if not is_section(section):
            raise fail(key_path, f"unknown key in {origin}; {walked} is a value, not a section")
        names = {item.name: item.type for item in fields(section)}
        walked = join_path(walked, key)
        if key not in names:
            raise unknown_key(walked, key, list(names), origin)
        section = names[key]


def apply_overrides(mapping: Mapping, overrides: Mapping[str, Any], origin: str = "--set") -> dict:
    """A deep copy of ``mapping`` with each {"a.b": value} set; unknown key paths raise.

    ``origin`` says where the overrides came from, for the messages ("--set", "sweep grid").
    """
    result = copy.deepcopy(dict(mapping))
    for key_path, value in overrides.items():
        _check_key_path(key_path, origin)
        set_value(result, key_path, value)
    return result


# ---------------------------------------------------------------------------------------
# Loading and saving.


def _build(
    mapping: Any,
    overrides: Iterable[str],
    seed: int | None,
    source: str,
    default_name: str,
    origin: str,
    folder: Path | None = None,
) -> Config:
    if mapping is None:  # an empty file: all defaults
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(
            f"{source}: the config must be a mapping of keys (e.g. 'train: {{lr: 0.1}}'), "
            f"got {show(mapping)}"
        )
    _check_not_a_sweep_spec(mapping, source)
    _check_keys(mapping, Config, source)
    mapping = config_data.with_data_path_under(mapping, folder)  # relative to the file
    requested = dict(parse_override(text, origin) for text in overrides)
    if seed is not None:
        requested["seed"] = seed
    values = config_data.with_data_path_under(apply_overrides(mapping, requested, origin), None)
    if values.get("name") is None:
        values["name"] = default_name
    return build_section(Config, values)


def _check_keys(mapping: Mapping, section: type, source: str, prefix: str = "") -> None:
    """Raise at the first key of ``mapping`` (and its sub-mappings) the schema does not have,
    naming ``source`` (the file, the dict) as where it came from."""
    types = {item.name: item.type for item in fields(section)}
    for key, value in mapping.items():
        path = join_path(prefix, key)
        if key not in types:
            raise unknown_key(path, key, list(types), source)
        if is_section(types[key]) and isinstance(value, Mapping):
            _check_keys(value, types[key], source, path)


# Top-level keys only a sweep spec has (gradlab.sweep reads this list); 'seeds', 'set' and
# 'name' alone do not make a spec: 'seeds' in a run config is more likely a typo of 'seed'.
SWEEP_SPEC_KEYS = ("name", "base", "config", "set", "grid", "zip", "seeds")
_SWEEP_SPEC_MARKERS = ("base", "config", "grid", "zip")


def _check_not_a_sweep_spec(mapping: Mapping, source: str) -> None:
    """A sweep spec given where a run config belongs: say which command reads it."""
    markers = [key for key in _SWEEP_SPEC_MARKERS if key in mapping]
    if markers and all(key in SWEEP_SPEC_KEYS for key in mapping):
        shown = "/".join(f"'{key}'" for key in markers)
        raise ConfigError(
            f"{source} is a sweep spec (it has {shown}), not a run config: "
            f"run it with `gradlab sweep`",
            markers[0],
        )


def is_run_config(mapping: Any) -> bool:
    """True if every top-level key of ``mapping`` is a run config key (and there is one
    besides 'name'): a run config handed to ``gradlab sweep``."""
    names = {item.name for item in fields(Config)}
    return (
        isinstance(mapping, Mapping)
        and any(key != "name" for key in mapping)
        and all(key in names for key in mapping)
    )


def config_from_dict(
    mapping: Mapping,
    overrides: Iterable[str] = (),
    source: str = "the config dict",
    origin: str = "overrides",
) -> Config:
    """A checked Config from a (possibly partial) nested mapping plus "key.path=value"
    overrides.

    A missing or null ``name`` becomes "run". Messages name ``source`` for a problem in the
    mapping and ``origin`` for one in the overrides (the CLI passes "--set").
    """
    return _build(mapping, overrides, None, source, DEFAULT_NAME, origin)


def load_config(
    path: str | Path,
    overrides: Iterable[str] = (),
    seed: int | None = None,
    origin: str = "overrides",
) -> Config:
    """Read a YAML config file (yaml.safe_load only), apply "key.path=value" overrides and
    ``seed``; messages name the file, or ``origin`` for the overrides (the CLI: "--set").

    A missing or null ``name`` becomes the file's stem: configs/deep.yaml runs as "deep". A
    relative ``data.path`` is relative to the file (one in ``overrides``, to the current
    folder).
    """
    path = Path(path)
    mapping = read_yaml_file(path, "config file")
    return _build(mapping, overrides, seed, str(path), path.stem, origin, path.parent)


def config_to_dict(config: Config) -> dict:
    """The config as plain nested dicts, keys in schema order; config_from_dict inverts it."""
    return asdict(config)


def saved_config(config: Config) -> dict:
    """The mapping a run's config.yaml holds: every key, the ``model.residual`` section only
    when it is not all defaults, so a plain network's config.yaml is what it was before
    residual networks existed (and a sweep finds its earlier runs unchanged)."""
    mapping = config_to_dict(config)
    if config.model.residual == ResidualConfig():
        del mapping["model"]["residual"]
    return mapping


def dump_config_yaml(config: Config) -> str:
    """``saved_config`` as YAML text (schema order), loadable by load_config."""
    return yaml.safe_dump(saved_config(config), sort_keys=False)
