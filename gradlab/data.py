"""Synthetic data from a fixed random "teacher" network, and the lecture's input normalization.

Inputs are X = input_mean + input_scale * Z with Z ~ N(0, 1) of shape (n, input_dim). The
teacher is a random 2-layer tanh network of the *standardized* inputs Z,

    s(Z) = tanh(Z W1) W2,   W1 ~ N(0, 1/input_dim) (input_dim, 32),  W2 ~ N(0, 1/32) (32, k),

so the task is equally learnable whatever input_mean and input_scale are; only the raw
numbers the student sees change. Each of the k teacher outputs is standardized with the
training set's mean and std, then noise * N(0, 1) is added:

- regression (k = 1): the target is that score, (n, 1).
- binary (k = 1): the label is score > the training set's median score (balanced classes).
- multiclass (k = classes): the label is the argmax of the scores.

Train and test come from the same teacher and use the same standardization and threshold.
Draws happen in a fixed order from the given Generator (teacher, train inputs, train noise,
test inputs, test noise), so the training set does not depend on n_test. Everything is
generated in float64 and cast to ``config.dtype`` at the end.

Real data (``data.source`` file or digits, read by gradlab.datafiles) go the same way from
their split on: ``load_dataset`` is the one entry for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gradlab import datafiles

if TYPE_CHECKING:  # only for annotations: keeps this module free of yaml at import time
    from gradlab.config import Config

TEACHER_WIDTH = 32  # hidden units of the teacher: nonlinear enough, yet learnable


@dataclass(frozen=True, eq=False)
class InputNormalizer:
    """Per-feature standardization with training-set statistics: (x - mean) / sqrt(var + eps).

    ``var`` is the biased (1/n) variance, as in the lecture and in BatchNorm's training mode.
    The same statistics are applied to test data: the test set never informs them.
    """

    mean: np.ndarray  # (input_dim,) float64
    var: np.ndarray  # (input_dim,) float64, biased
    eps: float = 1e-5  # keeps a constant feature from dividing by zero

    @classmethod
    def fit(cls, x_train: np.ndarray, eps: float = 1e-5) -> InputNormalizer:
        """Statistics of x_train (n, input_dim), computed in float64."""
        return cls(
            mean=np.mean(x_train, axis=0, dtype=np.float64),
            var=np.var(x_train, axis=0, dtype=np.float64),
            eps=eps,
        )

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / sqrt(var + eps) for x of shape (n, input_dim), in x's dtype."""
        standardized = (x - self.mean) / np.sqrt(self.var + self.eps)
        return standardized.astype(x.dtype, copy=False)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train and test arrays for one run.

    ``x_*`` is (n, input_dim) in the config dtype. ``y_*`` depends on the loss:
    regression: float (n, 1); binary with one output (bce, mse): float 0/1 (n, 1);
    cross_entropy: int64 labels (n,); multiclass with mse: one-hot float (n, classes).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str  # regression | binary | multiclass
    output_dim: int  # the network's output width these targets are meant for
    normalizer: InputNormalizer | None  # fitted on x_train when data.normalize_inputs is true


def _teacher_scores(z: np.ndarray, hidden_weight: np.ndarray, out_weight: np.ndarray):
    """tanh(z W1) W2: (n, input_dim) -> (n, k)."""
    return np.tanh(z @ hidden_weight) @ out_weight


def make_dataset(config: Config, rng: np.random.Generator) -> Dataset:
    """Draw the teacher and the train and test sets described in ``config.data``."""
    data = config.data
    n_scores = data.classes if data.task == "multiclass" else 1
    hidden_weight = rng.normal(0.0, 1.0 / np.sqrt(data.input_dim), (data.input_dim, TEACHER_WIDTH))
    out_weight = rng.normal(0.0, 1.0 / np.sqrt(TEACHER_WIDTH), (TEACHER_WIDTH, n_scores))
    z_train = rng.standard_normal((data.n_train, data.input_dim))
    noise_train = rng.standard_normal((data.n_train, n_scores))
    z_test = rng.standard_normal((data.n_test, data.input_dim))
    noise_test = rng.standard_normal((data.n_test, n_scores))

    clean_train = _teacher_scores(z_train, hidden_weight, out_weight)  # (n_train, k)
    clean_test = _teacher_scores(z_test, hidden_weight, out_weight)  # (n_test, k)
    center = np.mean(clean_train, axis=0)
    spread = np.std(clean_train, axis=0)
    spread = np.where(spread > 0, spread, 1.0)  # a single training example has no spread
    scores_train = (clean_train - center) / spread + data.noise * noise_train
    scores_test = (clean_test - center) / spread + data.noise * noise_test

    if data.task == "regression":
        y_train, y_test = scores_train, scores_test
    elif data.task == "binary":
        threshold = np.median(scores_train[:, 0])
        y_train = _encode(scores_train[:, 0] > threshold, config)
        y_test = _encode(scores_test[:, 0] > threshold, config)
    else:
        y_train = _encode(np.argmax(scores_train, axis=1), config)
        y_test = _encode(np.argmax(scores_test, axis=1), config)

    x_train = data.input_mean + data.input_scale * z_train
    x_test = data.input_mean + data.input_scale * z_test
    return _assemble(config, x_train, y_train, x_test, y_test)


def load_dataset(config: Config, rng: np.random.Generator, table=None) -> Dataset:
    """The run's data: the synthetic teacher's, or a data file's (``table``, a
    gradlab.datafiles.Table already read; None reads it) split with ``rng``."""
    if config.data.source == "synthetic":
        return make_dataset(config, rng)
    table = datafiles.read_table(config.data) if table is None else table
    x_train, y_train, x_test, y_test = datafiles.split(table, config.data, rng)
    if config.data.task == "regression":
        return _assemble(config, x_train, y_train[:, None], x_test, y_test[:, None])
    return _assemble(config, x_train, _encode(y_train, config), x_test, _encode(y_test, config))


def _assemble(config: Config, x_train, y_train, x_test, y_test) -> Dataset:
    """The Dataset of float64 inputs and encoded targets: inputs normalized if asked (with
    training-set statistics), cast to ``config.dtype``."""
    data = config.data
    normalizer = None
    if data.normalize_inputs:
        normalizer = InputNormalizer.fit(x_train)
        x_train, x_test = normalizer.transform(x_train), normalizer.transform(x_test)

    dtype = np.dtype(config.dtype)
    return Dataset(
        x_train=x_train.astype(dtype),
        y_train=y_train if y_train.dtype == np.int64 else y_train.astype(dtype),
        x_test=x_test.astype(dtype),
        y_test=y_test if y_test.dtype == np.int64 else y_test.astype(dtype),
        task=data.task,
        output_dim=config.output_dim,
        normalizer=normalizer,
    )


def _encode(labels: np.ndarray, config: Config) -> np.ndarray:
    """Class labels (n,) as the loss wants them: int64 (n,), 0/1 (n, 1) or one-hot (n, C)."""
    labels = labels.astype(np.int64)
    if config.resolved_loss == "cross_entropy":
        return labels
    if config.output_dim == 1:
        return labels[:, None].astype(np.float64)
    return np.eye(config.output_dim)[labels]


class Batches:
    """Endless minibatches of (x, y): a fresh permutation from ``rng`` at the start of each
    epoch, the remainder dropped so every batch has the same size (BatchNorm statistics stay
    comparable); full batch (batch_size >= n) is (x, y) every time. The position in the
    epoch is state a checkpoint keeps: ``order`` (this epoch's permutation, None before the
    first batch) and ``position`` (batches of it already given); ``rng`` is the run's."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator):
        self.x, self.y, self.batch_size, self.rng = x, y, batch_size, rng
        self.order: np.ndarray | None = None
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        n, size = self.x.shape[0], self.batch_size
        if size >= n:
            return self.x, self.y
        if self.order is None or self.position == n // size:
            self.order, self.position = self.rng.permutation(n), 0
        index = self.order[self.position * size : (self.position + 1) * size]
        self.position += 1
        return self.x[index], self.y[index]
