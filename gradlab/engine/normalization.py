"""Normalization layers: BatchNorm (each feature over the batch) and LayerNorm (each sample
over its features), placed between a hidden Linear and its activation.

Both follow the layer contract of ``gradlab.engine.layers`` (reused buffers, ``params`` and
``grads``, ``predict`` in place); BatchNorm keeps its running statistics in ``buffers``.
"""

import numpy as np

from gradlab.engine.layers import Layer
from gradlab.errors import EngineError


class BatchNorm(Layer):
    """Batch normalization of pre-activations, y = gamma * (x - mu) / sqrt(var + eps) + beta.

    Statistics are per feature (column) over the batch (rows). PyTorch's convention:
    - training: mu and the *biased* variance of the batch; the running statistics follow
      running <- (1 - momentum) * running + momentum * batch_stat, with the *unbiased*
      batch variance for running_var. The lecture writes this as
      running <- beta * running + (1 - beta) * batch_stat: its beta is 1 - momentum.
    - eval: running_mean and running_var replace the batch statistics.
    Defaults momentum 0.1, eps 1e-5; running_mean starts at 0, running_var at 1.
    Running statistics live in ``buffers``, never in ``params``. A training batch of one
    sample has no variance and is an error.
    """

    train_arrays = 3  # x_hat, out, dL/dx

    def __init__(
        self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, dtype=np.float64
    ):
        super().__init__(dtype)
        self.momentum = float(momentum)
        self.eps = float(eps)
        self._add_param("gamma", np.ones(num_features))
        self._add_param("beta", np.zeros(num_features))
        self.buffers = {
            "running_mean": np.zeros(num_features, dtype=self.dtype),
            "running_var": np.ones(num_features, dtype=self.dtype),
        }
        self._train = True

    def forward(self, x, train=True):
        batch, features = x.shape
        self._train = train
        x_hat = self._buffer("x_hat", x.shape)
        out = self._buffer("out", x.shape)
        mean = self._buffer("mean", (features,))
        inv_std = self._buffer("inv_std", (features,))
        if train:
            if batch < 2:
                raise EngineError(
                    f"BatchNorm needs at least 2 samples per batch in training, got {batch}"
                )
            np.mean(x, axis=0, out=mean)
            np.subtract(x, mean, out=x_hat)
            np.einsum("ij,ij->j", x_hat, x_hat, out=inv_std)  # sum of squares, per feature
            variance = inv_std / batch  # biased: used to normalize
            self._update_running(mean, variance * (batch / (batch - 1)))  # unbiased
            np.add(variance, self.eps, out=inv_std)
            np.sqrt(inv_std, out=inv_std)
            np.reciprocal(inv_std, out=inv_std)
        else:
            np.copyto(mean, self.buffers["running_mean"])
            np.subtract(x, mean, out=x_hat)
            self._running_inv_std(inv_std)
        _scale_shift(x_hat, inv_std, self.params, out)
        self.output = out
        return out

    def predict(self, x, scratch):
        inv_std = np.empty(x.shape[1], dtype=self.dtype)  # features,
        np.subtract(x, self.buffers["running_mean"], out=x)
        self._running_inv_std(inv_std)
        return _scale_shift(x, inv_std, self.params, x)

    def _running_inv_std(self, inv_std):
        """1 / sqrt(running_var + eps), into ``inv_std``."""
        np.add(self.buffers["running_var"], self.eps, out=inv_std)
        np.sqrt(inv_std, out=inv_std)
        np.reciprocal(inv_std, out=inv_std)

    def _update_running(self, batch_mean, unbiased_var):
        m = self.momentum
        running_mean, running_var = self.buffers["running_mean"], self.buffers["running_var"]
        running_mean *= 1.0 - m
        running_mean += m * batch_mean
        running_var *= 1.0 - m
        running_var += m * unbiased_var

    def backward(self, grad_out):
        batch, features = grad_out.shape
        x_hat = self._buffer("x_hat", grad_out.shape)
        inv_std = self._buffer("inv_std", (features,))
        gamma = self.params["gamma"]
        grad_in = self._buffer("grad_in", grad_out.shape)
        np.sum(grad_out, axis=0, out=self.grads["beta"])
        np.einsum("ij,ij->j", grad_out, x_hat, out=self.grads["gamma"])
        scale = gamma * inv_std
        if not self._train:
            # running statistics are constants: a per-feature affine map
            np.multiply(grad_out, scale, out=grad_in)
            return grad_in
        # dL/dx = gamma/sigma * (g - mean(g) - x_hat * mean(g * x_hat)), means over the batch
        np.multiply(x_hat, self.grads["gamma"] / batch, out=grad_in)
        np.subtract(grad_out, grad_in, out=grad_in)
        grad_in -= self.grads["beta"] / batch
        grad_in *= scale
        return grad_in


class LayerNorm(Layer):
    """Layer normalization, y = gamma * (x - mu) / sqrt(var + eps) + beta.

    Statistics are per sample (row) over its features (columns), with the biased variance;
    the same computation in training and eval (no running statistics). gamma and beta are
    per feature. Compare BatchNorm: columns over the batch.
    """

    train_arrays = 4  # x_hat, out, dL/dx, a projection in backward

    def __init__(self, num_features: int, eps: float = 1e-5, dtype=np.float64):
        super().__init__(dtype)
        self.eps = float(eps)
        self._add_param("gamma", np.ones(num_features))
        self._add_param("beta", np.zeros(num_features))

    def forward(self, x, train=True):
        batch = x.shape[0]
        x_hat = self._buffer("x_hat", x.shape)
        out = self._buffer("out", x.shape)
        mean = self._buffer("mean", (batch, 1))
        inv_std = self._buffer("inv_std", (batch, 1))
        self._normalize(x, x_hat, mean, inv_std)
        _scale_shift(x_hat, inv_std, self.params, out)
        self.output = out
        return out

    def predict(self, x, scratch):
        mean, inv_std = np.empty((2, x.shape[0], 1), dtype=self.dtype)  # (batch, 1) each
        self._normalize(x, x, mean, inv_std)
        return _scale_shift(x, inv_std, self.params, x)

    def _normalize(self, x, x_hat, mean, inv_std):
        """x_hat = x - mean (``x_hat`` may be ``x``) and inv_std = 1/sqrt(var + eps), per row."""
        np.mean(x, axis=1, keepdims=True, out=mean)
        np.subtract(x, mean, out=x_hat)
        np.einsum("ij,ij->i", x_hat, x_hat, out=inv_std[:, 0])
        inv_std /= x.shape[1]
        inv_std += self.eps
        np.sqrt(inv_std, out=inv_std)
        np.reciprocal(inv_std, out=inv_std)

    def backward(self, grad_out):
        batch, features = grad_out.shape
        x_hat = self._buffer("x_hat", grad_out.shape)
        inv_std = self._buffer("inv_std", (batch, 1))
        grad_in = self._buffer("grad_in", grad_out.shape)
        row_mean = self._buffer("row_mean", (batch, 1))
        np.sum(grad_out, axis=0, out=self.grads["beta"])
        np.einsum("ij,ij->j", grad_out, x_hat, out=self.grads["gamma"])
        # g = dL/dx_hat = grad_out * gamma; dL/dx = (g - mean(g) - x_hat * mean(g x_hat)) / sigma
        np.multiply(grad_out, self.params["gamma"], out=grad_in)
        np.einsum("ij,ij->i", grad_in, x_hat, out=row_mean[:, 0])
        row_mean /= features
        projection = self._buffer("projection", grad_out.shape)
        np.multiply(x_hat, row_mean, out=projection)
        np.mean(grad_in, axis=1, keepdims=True, out=row_mean)
        grad_in -= row_mean
        grad_in -= projection
        grad_in *= inv_std
        return grad_in


def _scale_shift(x_hat, inv_std, params, out):
    """out = x_hat * inv_std * gamma + beta, scaling ``x_hat`` in place (``out`` may be it)."""
    x_hat *= inv_std
    np.multiply(x_hat, params["gamma"], out=out)
    out += params["beta"]
    return out
