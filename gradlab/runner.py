"""One run: build the data and the network from a config, train, log per-layer statistics.

The loop, for step = 0 .. steps (step s sees the parameters after s updates):

    forward on batch s -> loss -> backward -> clip -> step (unless s == steps) -> log

Everything logged for step s describes the parameters before its update: a probe takes the
per-layer statistics while the passes run (gradient norms before clipping), and at
evaluation steps the test set is evaluated before the update; only ``update_ratio``
describes the update itself. Layer statistics are logged every ``log.every`` steps, the
metrics row also every ``log.eval_every`` steps, and both at s == steps. That extra pass
makes no update: it measures the gradients of the final parameters, so "at the end" means
the trained network, and ``steps: 0`` measures the network at initialization.
A non-finite loss or gradient ends the run as *diverged*, recording the step, the pass,
the layer and the quantity where it first appeared (the step's metrics row is written, and
its layer statistics if it was a logged step whose backward ran); SIGINT/SIGTERM end it as
*interrupted* after the current step. Randomness: one SeedSequence(seed) spawns the data,
init and batch generators (and, with dropout, the masks' generator), so changing the model
never changes the data.
"""

import datetime as dt
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from gradlab import analysis, datafiles, theory, theory_widths
from gradlab.config import Config, config_from_dict, config_to_dict, dump_config_yaml, load_config
from gradlab.data import TEACHER_WIDTH, load_dataset
from gradlab.datafiles import Table
from gradlab.engine import MLP, Probe, clip_gradients, get_loss, make_optimizer
from gradlab.engine.losses import accuracy
from gradlab.engine.model import memory_footprint
from gradlab.errors import GradlabError
from gradlab.results import (
    METRIC_COLUMNS,
    METRIC_COLUMNS_TRAIN_ACCURACY,
    Run,
    RunWriter,
    read_run,
    start_run,
    versions,
)
from gradlab.signals import StopFlag, stop_on_signals

DEFAULT_RESULTS_ROOT = Path("results")
# how the non-"normal" schemes scale sigma_w for a square hidden layer (fan_in = fan_out)
_EFFECTIVE_SCALE = {"normal": 1.0, "uniform": 1.0, "orthogonal": 1.0, "xavier": 1.0}
_EFFECTIVE_SCALE["he"] = math.sqrt(2.0)
# where a divergence is placed when every array is finite: a loss that overflows on finite
# outputs (e.g. 1e160 squared), or a global norm that overflows on finite gradients
_UNLOCATED = {
    "loss": {"pass": "forward", "layer": "output", "quantity": "loss"},
    "gradient norm": {"pass": "backward", "layer": "unknown", "quantity": "gradient norm"},
}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def build_model(config: Config, rng: np.random.Generator) -> MLP:
    """The run's MLP, initialized from ``rng``; with dropout, its masks come from the run's
    dropout generator (``_dropout_stream``), which the model keeps as ``dropout_rng``."""
    model = config.model
    dropout_rng = None
    if model.dropout > 0:  # without dropout nothing is drawn, and no generator is made
        dropout_rng = np.random.default_rng(_dropout_stream(config))
    return MLP(
        input_dim=config.data.input_dim,
        output_dim=config.output_dim,
        depth=model.depth,
        width=model.widths,
        activation=model.activation,
        norm=model.norm,
        init=model.init.scheme,
        weight_scale=model.init.weight_scale,
        bias_scale=model.init.bias_scale,
        dtype=config.dtype,
        rng=rng,
        bn_momentum=model.batchnorm.momentum,
        bn_eps=model.batchnorm.eps,
        ln_eps=model.layernorm.eps,
        leaky_slope=model.leaky_slope,
        dropout=model.dropout,
        dropout_rng=dropout_rng,
    )


def _batches(x, y, batch_size: int, rng: np.random.Generator):
    """Endless minibatches: a fresh permutation each epoch, the remainder dropped so every
    batch has the same size (BatchNorm statistics stay comparable). Full batch: (x, y)."""
    n = x.shape[0]
    if batch_size >= n:
        while True:
            yield x, y
    per_epoch = n // batch_size
    while True:
        order = rng.permutation(n)
        for k in range(per_epoch):
            index = order[k * batch_size : (k + 1) * batch_size]
            yield x[index], y[index]


def predict_theory(config: Config, q0: float) -> dict:
    """Mean-field prediction for this network at initialization (see gradlab.theory)."""
    init = config.model.init
    effective_scale = init.weight_scale * _EFFECTIVE_SCALE[init.scheme]
    try:
        prediction = theory.predict(
            config.model.activation,
            effective_scale,
            init.bias_scale,
            norm=config.model.norm,
            q0=q0,
            batch_size=config.resolved_batch_size,
            tol=config.analysis.tol,
            leaky_slope=config.model.leaky_slope,
            dropout=config.model.dropout,
        )
    except OverflowError:  # e.g. weight_scale 1e200: sigma_w^2 is beyond the float range
        prediction = theory.Prediction(
            config.model.activation,
            effective_scale,
            init.bias_scale,
            config.model.norm,
            q0,
            q_star=None,
            chi_1=None,
            factor=None,
            regime="unknown",
            critical_weight_scale=None,
            applicable=False,
            reason="no prediction: sigma_w^2, sigma_b^2 or q0 overflows a float",
            dropout=config.model.dropout,
        )
    result = prediction.to_dict()
    result["applies_to"] = "initialization"
    if len(set(config.model.widths)) > 1:  # see gradlab.theory_widths
        reason = theory_widths.unpredictable_scheme(config.model.init.scheme, config.model.norm)
        if reason is not None:
            result.update(q_star=None, chi_1=None, factor=None, regime="unknown")
            result.update(applicable=False, reason=reason, gradient_toward_input="unknown")
            for key in ("xi_grad", "xi_q", "c_star", "chi_c", "xi_c"):  # theory_depth's
                result[key] = None
                result["notes"][key] = reason
        result["width_factors"] = (
            None if reason else theory_widths.width_factors(config.model.widths)
        )
    return result


def _seed_streams(config: Config) -> list[np.random.SeedSequence]:
    """The data, init and batch seeds: one SeedSequence(seed) spawns all three, so changing
    the model never changes the data."""
    return np.random.SeedSequence(config.seed).spawn(3)


def _dropout_stream(config: Config) -> np.random.SeedSequence:
    """The dropout masks' seed: the fourth child of SeedSequence(seed) (the first three,
    ``_seed_streams``, are the same whether or not a fourth is spawned)."""
    return np.random.SeedSequence(config.seed).spawn(4)[3]


def theory_at_init(config: Config, x_train: np.ndarray | None = None) -> dict:
    """predict_theory with q0 = the mean squared training input. Without ``x_train`` the run's
    data is regenerated from its seed (a data file read again): the theory needs no training
    (e.g. for a killed run)."""
    if x_train is None:
        x_train = load_dataset(config, np.random.default_rng(_seed_streams(config)[0])).x_train
    return predict_theory(config, float(np.mean(np.square(x_train, dtype=np.float64))))


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


class _Training:
    """State of one training run; ``run`` returns (status, summary)."""

    def __init__(
        self,
        config: Config,
        writer: RunWriter,
        stop: StopFlag,
        progress: bool,
        table: Table | None = None,
    ):
        self.config, self.writer, self.stop = config, writer, stop
        data_seed, init_seed, batch_seed = _seed_streams(config)
        self.dataset = load_dataset(config, np.random.default_rng(data_seed), table)
        # the dropout masks' generator (None without dropout) is self.model.dropout_rng
        self.model = build_model(config, np.random.default_rng(init_seed))
        self.loss_name = config.resolved_loss
        self.loss_fn = get_loss(self.loss_name)
        train = config.train
        self.optimizer = make_optimizer(
            train.optimizer, train.lr, train.momentum, train.weight_decay
        )
        self.batches = _batches(
            self.dataset.x_train,
            self.dataset.y_train,
            config.resolved_batch_size,
            np.random.default_rng(batch_seed),
        )
        self.probe = Probe(self.model)
        self.grad_list = list(self.model.grads.values())
        self.first_stats = None
        self.last_stats = None
        self.last_logged_step = None
        finals = ("train_loss", "test_loss", "test_accuracy", "train_eval_loss")
        self.train_accuracy = records_train_accuracy(config)
        if self.train_accuracy:
            finals += ("train_accuracy",)
        self.final = dict.fromkeys(finals, math.nan)
        self.divergence = None
        self.step_reached = 0
        self.progress_bar = None
        if progress:
            from tqdm import tqdm

            self.progress_bar = tqdm(total=train.steps, file=sys.stderr, unit="step", leave=False)

    def evaluate(self):
        """Test loss and accuracy, and the loss and accuracy on (up to 1024) training samples,
        all in eval mode: with BatchNorm, train_loss (batch statistics) against
        train_eval_loss (running averages) on the same kind of data shows what the switch of
        statistics costs. ``predict`` keeps no per-layer arrays, so this costs no memory that
        grows with depth."""
        task = self.config.data.task
        outputs = self.model.predict(self.dataset.x_test)
        loss, _ = self.loss_fn(outputs, self.dataset.y_test)
        acc = accuracy(outputs, self.dataset.y_test, task, self.loss_name)
        x_train, y_train = self.dataset.x_train[:1024], self.dataset.y_train[:1024]
        train_outputs = self.model.predict(x_train)
        train_eval_loss, _ = self.loss_fn(train_outputs, y_train)
        train_acc = accuracy(train_outputs, y_train, task, self.loss_name)
        return loss, acc, train_eval_loss, train_acc

    def run(self):
        config, model, probe = self.config, self.model, self.probe
        steps, clip = config.train.steps, config.train.clip
        status = "completed"
        for step in range(steps + 1):
            self.step_reached = step
            logged = step % config.log.every == 0 or step == steps
            x, y = next(self.batches)
            probe.start(layer_stats=logged)  # gradient norms every step, the rest if logged
            outputs = model.forward(x, train=True, probe=probe if logged else None)  # B, out
            loss, dlogits = self.loss_fn(outputs, y)
            row = {"step": step, "train_loss": loss, "lr": config.train.lr}
            clipped = None
            if math.isfinite(loss):
                model.backward(dlogits, probe=probe)
                clipped = clip_gradients(
                    self.grad_list, clip.mode, clip.threshold, probe.grad_norms
                )
                row.update(
                    grad_norm=clipped.norm,  # before clipping
                    grad_norm_clipped=clipped.clipped_norm,
                    clip_factor=clipped.factor,
                    clip_cosine=clipped.cosine,
                )
            if clipped is None or not clipped.finite:  # a non-finite loss or gradient
                self._diverged(step, row, layer_stats=logged and clipped is not None)
                status = "diverged"
                break
            evaluated = step % config.log.eval_every == 0 or step == steps
            if evaluated:  # before the update, like everything else logged for this step
                row.update(self._evaluation())
            if step < steps:
                self.optimizer.step(model.params, model.grads)
                probe.after_step(self.optimizer, clipped.tensor_norms)
            if logged or evaluated:
                self._log(step, row, probe.layer_stats() if logged else None)
            self.final["train_loss"] = loss
            self._progress(step, loss, logged)
            if self.stop.signal_number is not None and step < steps:
                status = "interrupted"
                break
        if self.progress_bar is not None:
            self.progress_bar.close()
        return status, self.summary(status)

    def _evaluation(self) -> dict:
        """``evaluate`` as metrics columns; also the run's final values so far."""
        test_loss, test_accuracy, train_eval_loss, train_accuracy = self.evaluate()
        evaluation = dict(
            test_loss=test_loss, test_accuracy=test_accuracy, train_eval_loss=train_eval_loss
        )
        if self.train_accuracy:
            evaluation["train_accuracy"] = train_accuracy
        self.final.update(evaluation)
        return evaluation

    def _log(self, step, row, stats):
        """The step's metrics row and, if measured, its layer statistics; flushed together."""
        if stats is not None:
            self.writer.log_layers(step, stats)
            if self.first_stats is None:
                self.first_stats = stats
            self.last_stats, self.last_logged_step = stats, step
        self.writer.log_metrics(row)
        self.writer.flush()

    def _diverged(self, step, row, layer_stats):
        """End the run at ``step``: record where it first went non-finite, and log the step
        (its layer statistics too if ``layer_stats``: they were measured, before clipping)."""
        where = self.probe.locate_nonfinite()
        if where is None:
            where = _UNLOCATED["loss" if not math.isfinite(row["train_loss"]) else "gradient norm"]
        self.divergence = {"step": step, **where}
        self._log(step, row, self.probe.layer_stats() if layer_stats else None)

    def _progress(self, step, loss, logged):
        bar = self.progress_bar
        if bar is None or step == self.config.train.steps:
            return
        bar.update(1)
        if logged:
            fit = analysis.fit_factor(
                self.last_stats["delta_norm"],
                self.config.analysis.fit_skip,
                analysis.varying_widths(self.config.model.width),
            )
            bar.set_postfix(loss=f"{loss:.4g}", M=f"{fit.factor:.3g}", refresh=False)

    def summary(self, status):
        cfg = self.config.analysis
        factors, regimes, layers = {}, {}, {}
        for label, stats, step in (
            ("init", self.first_stats, 0),
            ("final", self.last_stats, self.last_logged_step),
        ):
            if stats is None:
                continue
            factor = analysis.factor_summary(
                stats["delta_norm"],
                stats["weight_grad_norm"],
                cfg.fit_skip,
                cfg.tol,
                width=self.config.model.width,
            )
            factors[label] = {"step": step, **factor}
            regimes[label] = factor["regime"]
            layers[label] = {
                "step": step,
                "weight_grad_norm": stats["weight_grad_norm"],
                "delta_norm": stats["delta_norm"],
            }
        return {
            "name": self.config.name,
            "status": status,
            "steps": self.config.train.steps,
            "step_reached": self.step_reached,
            "final": self.final,
            "gradient_factor": factors,
            "regime": regimes,
            "theory": theory_at_init(self.config, self.dataset.x_train),
            "divergence": self.divergence,
            "layers": layers,
        }


def resolve_config(config_or_path, overrides=(), origin="overrides") -> Config:
    """A Config from a Config, a mapping or a YAML path, with "key.path=value" overrides
    (``origin`` names them in messages)."""
    overrides = list(overrides)
    if isinstance(config_or_path, Config):
        if not overrides:
            return config_or_path
        return config_from_dict(
            config_to_dict(config_or_path), overrides, source="the Config", origin=origin
        )
    if isinstance(config_or_path, dict):
        return config_from_dict(config_or_path, overrides, origin=origin)
    return load_config(config_or_path, overrides, origin=origin)


def records_train_accuracy(config: Config) -> bool:
    """Whether the run records train_accuracy (metrics.csv and summary.json's final): on
    real data (not the synthetic teacher) with a classification task. Synthetic runs keep
    the files they always had."""
    return config.data.source != "synthetic" and config.data.task != "regression"


def prepare_data(config: Config) -> tuple[Config, Table | None]:
    """(the config with what real data decide filled in, the data read and checked; None
    for synthetic data): see gradlab.datafiles. Raises before anything is written."""
    table = datafiles.read_table(config.data)
    return datafiles.resolve_config(config, table), table


def run_config(
    config: Config,
    out: Path | None = None,
    force: bool = False,
    progress: bool = False,
    table: Table | None = None,
) -> Run:
    """Train ``config`` into ``out`` (default results/<name>) and read the run back.
    ``table``: the data ``prepare_data`` read for this config (None: read them here)."""
    if table is None:
        config, table = prepare_data(config)
    path = Path(out) if out is not None else DEFAULT_RESULTS_ROOT / config.name
    started = time.monotonic()
    meta = {"seed": config.seed, "started_at": _now(), "steps": config.train.steps}
    if table is not None:
        meta["data"] = table.record  # which data the run saw: path, size, SHA-256
    columns = METRIC_COLUMNS_TRAIN_ACCURACY if records_train_accuracy(config) else METRIC_COLUMNS
    writer = start_run(path, dump_config_yaml(config), {**meta, **versions()}, force, columns)

    def finish(status, **extra):
        writer.close(
            status=status,
            ended_at=_now(),
            wall_time_s=round(time.monotonic() - started, 3),
            step_reached=training.step_reached if training else 0,
            **extra,
        )

    training = None
    with stop_on_signals() as stop:
        try:
            training = _Training(config, writer, stop, progress, table)
            with np.errstate(all="ignore"):  # exploding runs overflow on purpose: detected below
                status, summary = training.run()
        except KeyboardInterrupt:
            finish("interrupted")
            return read_run(path)
        except GradlabError as error:
            finish("failed", error=str(error))
            raise
        except Exception as error:  # a bug: keep the record, then let it surface
            finish("failed", error=f"{type(error).__name__}: {error}")
            raise
    writer.write_summary(summary)
    extra = {"divergence": summary["divergence"]} if summary["divergence"] else {}
    if status == "interrupted":
        extra["signal"] = signal.Signals(stop.signal_number).name
    finish(status, **extra)
    return read_run(path)


def run(config_or_path, *, out=None, force=False, progress=False, **overrides) -> Run:
    """Python API: run an experiment and return its run directory read back.

    ``overrides`` use key paths with "__" for ".", e.g. ``run("c.yaml", train__lr=0.05)``,
    or pass them as a dict: ``run("c.yaml", **{"model.depth": 10})``.
    """
    override_strings = [
        f"{key.replace('__', '.')}={_yaml_scalar(v)}" for key, v in overrides.items()
    ]
    config = resolve_config(config_or_path, override_strings, origin="run() keyword overrides")
    return run_config(config, out=out, force=force, progress=progress)


def _yaml_scalar(value) -> str:
    """A Python value as the YAML scalar text parse_override reads back."""
    import json

    if isinstance(value, str):
        return value
    return json.dumps(value)
