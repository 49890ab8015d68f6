"""Inverted dropout, one element of a hidden block (after its activation)."""

import numpy as np

from gradlab.engine.layers import Layer
from gradlab.errors import EngineError


class Dropout(Layer):
    """Inverted dropout of probability p: y = x * m / (1 - p) in training, with m ~
    Bernoulli(1 - p) drawn for every sample and unit; the identity in eval (the 1 / (1 - p)
    keeps E[y] = x, so eval needs no rescaling). PyTorch ``nn.Dropout``'s convention.

    The masks come from ``rng``: one ``rng.random`` draw of the input's shape per training
    forward (a unit is kept where the draw is >= p), nothing in eval. Backward multiplies by
    the same scaled mask. p = 0 is no Dropout at all: a model builds none and draws nothing.
    """

    train_arrays = 3  # the scaled mask, out, dL/dx

    def __init__(self, probability: float, rng: np.random.Generator, dtype=np.float64):
        super().__init__(dtype)
        if not 0 < probability < 1:
            raise EngineError(f"dropout probability must be in (0, 1), got {probability!r}")
        self.probability = float(probability)
        self.rng = rng
        self._scale = 1.0 / (1.0 - self.probability)
        self._train = True

    def forward(self, x, train=True):
        self._train = train
        if not train:
            self.output = x
            return x
        mask = self._buffer("mask", x.shape)  # B, features: uniform draws, then 0 or 1/(1-p)
        self.rng.random(out=mask, dtype=self.dtype)
        np.greater_equal(mask, self.probability, out=mask)  # 1.0 where the unit is kept
        mask *= self._scale
        out = self._buffer("out", x.shape)
        np.multiply(x, mask, out=out)
        self.output = out
        return out

    def predict(self, x, scratch):
        return x

    def backward(self, grad_out):
        if not self._train:
            return grad_out
        grad_in = self._buffer("grad_in", grad_out.shape)
        np.multiply(grad_out, self._buffer("mask", grad_out.shape), out=grad_in)
        return grad_in
