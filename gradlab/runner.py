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

The lr of step s is ``gradlab.schedule.learning_rate`` (``train.schedule``), logged in the
``lr`` column. With ``train.checkpoint_every`` a checkpoint is saved after every N-th step and
the last one (``gradlab.checkpoint``); ``gradlab.resume`` goes on from it, writing the same files
as a run never stopped. params.npz holds the final parameters of every run.
"""

import datetime as dt
import math
import signal
import sys
import time
from pathlib import Path

import numpy as np

from gradlab import analysis, checkpoint, datafiles, residual_summary
from gradlab.config import Config, dump_config_yaml
from gradlab.data import Batches, load_dataset
from gradlab.datafiles import Table
from gradlab.engine import MLP, Probe, clip_gradients, get_loss, make_optimizer
from gradlab.engine.losses import accuracy
from gradlab.engine.residual import ResidualMLP
from gradlab.errors import GradlabError
from gradlab.initial_theory import effective_weight_scale, theory_at_init, width_theory_applies
from gradlab.results import (
    Run,
    RunWriter,
    layer_columns,
    metric_columns,
    read_run,
    start_run,
    versions,
)
from gradlab.schedule import learning_rate
from gradlab.seeds import dropout_stream, seed_streams
from gradlab.signals import StopFlag, stop_on_signals
from gradlab.spectrum import SpectrumRecorder

DEFAULT_RESULTS_ROOT = Path("results")
# where a divergence is placed when every array is finite: a loss that overflows on finite
# outputs (e.g. 1e160 squared), or a global norm that overflows on finite gradients
_UNLOCATED = {
    "loss": {"pass": "forward", "layer": "output", "quantity": "loss"},
    "gradient norm": {"pass": "backward", "layer": "unknown", "quantity": "gradient norm"},
}


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def build_model(config: Config, rng: np.random.Generator) -> MLP:
    """The network of ``config``: an ``MLP``, or a ``ResidualMLP`` (model.residual.enabled).
    With dropout, its masks come from the run's dropout generator (``seeds.dropout_stream``),
    which the model keeps as ``dropout_rng``."""
    model = config.model
    residual = model.residual
    if residual.enabled:
        return ResidualMLP(
            **_network_spec(config),
            rng=rng,
            branch=residual.branch,
            branch_scale=residual.branch_scale,
            norm_position=residual.norm_position,
        )
    return MLP(**_network_spec(config), rng=rng)


def _network_spec(config: Config) -> dict:
    model = config.model
    dropout_rng = None
    if model.dropout > 0:  # without dropout nothing is drawn, and no generator is made
        dropout_rng = np.random.default_rng(dropout_stream(config))
    return dict(
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
        bn_momentum=model.batchnorm.momentum,
        bn_eps=model.batchnorm.eps,
        ln_eps=model.layernorm.eps,
        leaky_slope=model.leaky_slope,
        dropout=model.dropout,
        dropout_rng=dropout_rng,
    )


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
        data_seed, init_seed, batch_seed = seed_streams(config)
        self.dataset = load_dataset(config, np.random.default_rng(data_seed), table)
        # the dropout masks' generator (None without dropout) is self.model.dropout_rng
        self.model = build_model(config, np.random.default_rng(init_seed))
        self.loss_name = config.resolved_loss
        self.loss_fn = get_loss(self.loss_name)
        train = config.train
        self.optimizer = make_optimizer(
            train.optimizer, train.lr, train.momentum, train.weight_decay
        )
        batch_rng = np.random.default_rng(batch_seed)
        self.batches = Batches(
            self.dataset.x_train, self.dataset.y_train, config.resolved_batch_size, batch_rng
        )
        # every generator drawn from while training, by name: a checkpoint saves their states
        self.generators = {"batches": batch_rng}
        if self.model.dropout_rng is not None:
            self.generators["dropout"] = self.model.dropout_rng
        self.start_step = 0  # a resumed run starts after its checkpoint's step
        self.probe = Probe(self.model)
        self.spectrum = None
        if config.analysis.spectrum.enabled:
            self.spectrum = SpectrumRecorder(config, self.model, self.dataset.x_train, writer)
        self.grad_list = list(self.model.grads.values())
        self.first_stats = None
        self.last_stats = None
        self.stream_input_norms = {}  # residual: |dL/dx^0| at the first and last logged step
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
        train = config.train
        steps, clip = train.steps, train.clip
        status = "completed"
        if self.spectrum is not None and self.start_step == 0:
            self.spectrum.measure("init", 0)
        for step in range(self.start_step, steps + 1):
            self.step_reached = step
            logged = step % config.log.every == 0 or step == steps
            x, y = next(self.batches)
            probe.start(layer_stats=logged)  # gradient norms every step, the rest if logged
            outputs = model.forward(x, train=True, probe=probe if logged else None)  # B, out
            loss, dlogits = self.loss_fn(outputs, y)
            lr = self.optimizer.lr = learning_rate(train.schedule, train.lr, steps, step)
            row = {"step": step, "train_loss": loss, "lr": lr}
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
            stopped = self.stop.signal_number is not None and step < steps
            every = train.checkpoint_every
            if every and (step % every == 0 or step == steps or stopped):
                checkpoint.save_checkpoint(self.writer.path, self, step)
            if stopped:
                status = "interrupted"
                break
        if self.spectrum is not None:
            self.spectrum.at_end(self.step_reached)
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
                self.stream_input_norms["init"] = self.probe.input_delta_norm
            self.last_stats, self.last_logged_step = stats, step
            self.stream_input_norms["final"] = self.probe.input_delta_norm
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
                width_theory=width_theory_applies(self.config),
            )
            factors[label] = {"step": step, **factor}
            if self.model.residual:
                factors[label]["basis"] = residual_summary.CONSTANT_FIT
            regimes[label] = factor["regime"]
            layers[label] = {
                "step": step,
                "weight_grad_norm": stats["weight_grad_norm"],
                "delta_norm": stats["delta_norm"],
            }
        prediction = theory_at_init(self.config, self.dataset.x_train)
        summary = {
            "name": self.config.name,
            "status": status,
            "steps": self.config.train.steps,
            "step_reached": self.step_reached,
            "final": self.final,
            "gradient_factor": factors,
            "regime": regimes,
            "theory": prediction,
            "divergence": self.divergence,
            "layers": layers,
        }
        if self.model.residual:
            summary["gradient_profile"] = self.gradient_profile()
        if self.spectrum is not None:
            summary["spectrum"] = self.spectrum.summary(self.config, prediction)
        return summary

    def gradient_profile(self) -> dict:
        """summary.json's ``gradient_profile`` of a residual network (``residual_summary``)."""
        config = self.config
        q0 = float(np.mean(np.square(self.dataset.x_train, dtype=np.float64)))
        effective_scale = effective_weight_scale(config)
        measured = {
            label: (step, self.stream_input_norms[label], stats["delta_norm"])
            for label, stats, step in (
                ("init", self.first_stats, 0),
                ("final", self.last_stats, self.last_logged_step),
            )
            if stats is not None
        }
        prediction = residual_summary.predict(config, effective_scale, q0)
        return residual_summary.gradient_profiles(config, prediction, measured)


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
    meta = {"seed": config.seed, "started_at": utc_now(), "steps": config.train.steps}
    if table is not None:
        meta["data"] = table.record  # which data the run saw: path, size, SHA-256
    layers = layer_columns(config.model.residual.enabled)
    metrics = metric_columns(records_train_accuracy(config))
    writer = start_run(
        path, dump_config_yaml(config), {**meta, **versions()}, force, layers, metrics
    )
    return train_into(config, writer, started, progress, table)


def train_into(
    config: Config,
    writer: RunWriter,
    started: float,
    progress: bool,
    table: Table | None,
    saved=None,
) -> Run:
    """Train into ``writer``'s run directory (from ``saved``, a checkpoint, if given); write
    summary.json and the final meta.json; read the run back."""
    path = writer.path

    def finish(status, **extra):
        writer.close(
            status=status,
            ended_at=utc_now(),
            wall_time_s=round(time.monotonic() - started, 3),
            step_reached=training.step_reached if training else 0,
            **extra,
        )

    training = None
    with stop_on_signals() as stop:
        try:
            training = _Training(config, writer, stop, progress, table)
            if saved is not None:
                checkpoint.restore(training, saved)
            with np.errstate(all="ignore"):  # exploding runs overflow on purpose: detected below
                status, summary = training.run()
            checkpoint.save_params(path, training.model)
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
