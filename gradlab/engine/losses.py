"""Losses returning ``(loss, dlogits)``: a float64 Python float and dL/dlogits in the logits' dtype.

All are means over the batch and stay finite for logits of +-1e4 (no exp of a positive
number, log-sum-exp with the max subtracted).
"""

import math

import numpy as np

from gradlab import vocabulary
from gradlab.errors import EngineError


def mse(predictions, targets):
    """Mean squared error over all entries (PyTorch ``MSELoss``): mean((y - t)^2)."""
    residual = predictions - targets
    loss = float(np.dot(residual.reshape(-1), residual.reshape(-1))) / residual.size
    residual *= 2.0 / residual.size
    return loss, residual


def bce_with_logits(logits, targets):
    """Binary cross-entropy on logits z with 0/1 targets t, mean over entries.

    loss = max(z, 0) - z t + log(1 + exp(-|z|)); dL/dz = (sigmoid(z) - t) / n.
    """
    exp_neg_abs = np.exp(-np.abs(logits))
    loss_terms = np.maximum(logits, 0.0) - logits * targets + np.log1p(exp_neg_abs)
    loss = float(np.sum(loss_terms, dtype=np.float64)) / logits.size
    reciprocal = 1.0 / (1.0 + exp_neg_abs)
    probabilities = np.where(logits >= 0, reciprocal, exp_neg_abs * reciprocal)
    grad = (probabilities - targets) / logits.size
    return loss, grad.astype(logits.dtype, copy=False)


def cross_entropy(logits, labels):
    """Softmax cross-entropy with integer class labels (B,), mean over the batch.

    loss = mean(logsumexp(z) - z[label]); dL/dz = (softmax(z) - onehot(label)) / B.
    """
    batch = logits.shape[0]
    shifted = logits - np.max(logits, axis=1, keepdims=True)
    exp_shifted = np.exp(shifted)
    sum_exp = np.sum(exp_shifted, axis=1, keepdims=True)
    rows = np.arange(batch)
    log_probability = shifted[rows, labels] - np.log(sum_exp[:, 0])
    loss = -float(np.sum(log_probability, dtype=np.float64)) / batch
    grad = exp_shifted / sum_exp
    grad[rows, labels] -= 1.0
    grad /= batch
    return loss, grad


LOSSES = {"mse": mse, "bce": bce_with_logits, "cross_entropy": cross_entropy}
vocabulary.check_registry("loss", LOSSES, vocabulary.LOSSES)


def get_loss(name):
    """The loss function called ``name``: one of ``LOSSES``."""
    if name not in LOSSES:
        raise EngineError(f"loss: {name!r} is not one of {', '.join(LOSSES)}")
    return LOSSES[name]


def accuracy(outputs, targets, task, loss_name) -> float:
    """Fraction of correct predictions; nan for regression.

    cross_entropy: argmax vs integer labels; bce: logit >= 0 vs 0/1 targets; mse on a
    classification task: output >= 0.5 (binary) or argmax against the one-hot target.
    """
    if task == "regression":
        return math.nan
    if loss_name == "cross_entropy":
        predicted, actual = np.argmax(outputs, axis=1), targets
    elif loss_name == "bce":
        predicted, actual = outputs >= 0.0, targets >= 0.5
    elif outputs.shape[1] == 1:
        predicted, actual = outputs >= 0.5, targets >= 0.5
    else:
        predicted, actual = np.argmax(outputs, axis=1), np.argmax(targets, axis=1)
    return float(np.mean(predicted == actual))
