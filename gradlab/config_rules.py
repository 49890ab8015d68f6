"""The rules of a config that join several keys (each section's own types, choices and
ranges are checked by ``config_checks`` as it is built); ``config.ModelConfig`` and
``config.Config`` call them once built. Each failure is one ``ConfigError`` line naming the
key."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gradlab.config_checks import fail, show

if TYPE_CHECKING:
    from gradlab.config import Config, ModelConfig

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=,+-]*")
NAME_MAX_LENGTH = 200


def check_model(model: ModelConfig) -> None:
    """A width list of one entry per layer; residual blocks need one width and no dropout."""
    if isinstance(model.width, list) and len(model.width) != model.depth:
        raise fail(
            "model.width",
            f"a list needs one width per hidden layer (model.depth = {model.depth}), "
            f"got {len(model.width)} entries",
        )
    if model.residual.enabled and len(set(model.widths)) > 1:
        raise fail(
            "model.width",
            "a residual network needs one width (the stream's); "
            f"got {model.width} with model.residual.enabled",
        )
    if model.residual.enabled and model.dropout > 0:
        raise fail(
            "model.dropout",
            "dropout is not supported in residual blocks (model.residual.enabled); use 0",
        )


def check_config(config: Config) -> None:
    """The rules across sections: the run name, loss and task, batch size, the spectrum."""
    _check_name(config.name)
    _check_loss_for_task(config.train.loss, config.data.task)
    _check_batch_size(config)
    _check_spectrum(config)


def _check_name(name: str) -> None:
    """A run name is one safe folder under results/: no '/', no '..', no leading dot."""
    if len(name) > NAME_MAX_LENGTH or not NAME_PATTERN.fullmatch(name):
        raise fail(
            "name",
            f"{show(name)} is not a valid run name: use letters, digits and . _ = , + - "
            f"(first a letter or digit, at most {NAME_MAX_LENGTH} characters, no '/')",
        )


def _check_loss_for_task(loss: str, task: str) -> None:
    if loss == "bce" and task != "binary":
        suggestion = "mse" if task == "regression" else "cross_entropy or mse"
        raise fail("train.loss", f"'bce' needs data.task 'binary', got '{task}'; use {suggestion}")
    if loss == "cross_entropy" and task == "regression":
        raise fail(
            "train.loss",
            "'cross_entropy' needs data.task 'binary' or 'multiclass', got 'regression'; use mse",
        )


def _check_batch_size(config: Config) -> None:
    batch_size, n_train = config.train.batch_size, config.data.n_train
    if batch_size != "full" and batch_size > n_train:
        raise fail(
            "train.batch_size",
            f"must be <= data.n_train ({n_train}), got {batch_size}; "
            f"use 'full' for full-batch gradient descent",
        )
    if config.model.norm == "batch" and config.resolved_batch_size < 2:
        got = f"'full' = data.n_train = {n_train}" if batch_size == "full" else str(batch_size)
        raise fail(
            "train.batch_size",
            f"BatchNorm needs at least 2 samples per batch (model.norm is 'batch'), got {got}",
        )


def _check_spectrum(config: Config) -> None:
    spectrum, n_train = config.analysis.spectrum, config.data.n_train
    if spectrum.enabled and config.model.norm == "batch":
        raise fail(
            "analysis.spectrum.enabled",
            "the per-sample Jacobian is not defined with model.norm 'batch' (the batch couples "
            "the samples); use model.norm none or layer, or analysis.spectrum.enabled false",
        )
    if spectrum.enabled and config.model.residual.enabled:
        raise fail(
            "analysis.spectrum.enabled",
            "the Jacobian spectrum of residual networks (model.residual.enabled) is not built "
            "yet; use a plain network, or analysis.spectrum.enabled false",
        )
    if spectrum.samples > n_train:
        raise fail(
            "analysis.spectrum.samples",
            f"must be <= data.n_train ({n_train}), got {spectrum.samples}",
        )
