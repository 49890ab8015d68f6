"""Resuming a run from its checkpoint.npz: ``gradlab run --resume`` and the points of
``gradlab sweep`` (the format and the checks: ``gradlab.checkpoint``)."""

import time
from pathlib import Path

from gradlab import checkpoint
from gradlab.config import Config
from gradlab.errors import GradlabError
from gradlab.liveness import refuse_live_run
from gradlab.results import (
    Run,
    RunWriter,
    has_checkpoint,
    layer_columns,
    metric_columns,
    read_meta,
)
from gradlab.runner import (
    prepare_data,
    records_train_accuracy,
    run_config,
    train_into,
    utc_now,
)


def resume_run(path: Path, config: Config | None = None, progress: bool = False) -> Run:
    """Go on with the interrupted or killed run in ``path`` from its checkpoint.npz: rows
    logged after the checkpoint are dropped and training continues, writing the same files
    as an uninterrupted run (but for the times in meta.json). A GradlabError when the run
    finished, has no checkpoint, its config is not ``config`` (when given) or changed, or
    its data file changed. meta.json records the resumption (``RunWriter.resume``)."""
    started = time.monotonic()
    meta = read_meta(path)
    refuse_live_run(path, meta)
    config, saved = checkpoint.resumable(path, config)
    config, table = prepare_data(config)
    recorded = meta.get("data")
    if table is not None and table.record != recorded:
        raise GradlabError(
            f"cannot resume {path}: its data file changed since the run started "
            f"({recorded} then, {table.record} now)"
        )
    layers = layer_columns(config.model.residual.enabled)
    metrics = metric_columns(records_train_accuracy(config))
    writer = RunWriter.resume(path, saved.step, utc_now(), layers, metrics)
    return train_into(config, writer, started, progress, table, saved)


def run_or_resume(config: Config, out: Path, progress: bool = False) -> Run:
    """A sweep point: resume the run in ``out`` when it has a checkpoint of ``config`` and
    did not finish; otherwise run ``config`` there from the start."""
    if has_checkpoint(out):
        try:
            return resume_run(out, config, progress)
        except GradlabError:
            pass  # not resumable (another config, unreadable): start afresh
    return run_config(config, out=out, force=True, progress=progress)
