"""The activation registry: one entry (an ``Activation`` class) per name in
``gradlab.vocabulary.ACTIVATIONS``.

sigmoid, tanh, relu and linear live in ``layers`` (their forward and backward are tuned for
speed). The entries below are plain: forward is ``phi``, backward multiplies by
``derivative`` of the input kept from forward, so each is written once and used alike by
the engine and by the theory's quadrature. Each matches the PyTorch module named in its
docstring in float64 and stays finite, without warnings, for any finite input.
"""

import math

import numpy as np

from gradlab import vocabulary
from gradlab.engine import special
from gradlab.engine.layers import Activation, Identity, ReLU, Sigmoid, Tanh
from gradlab.errors import EngineError

_GAUSS_CLIP = 40.0  # exp(-40^2 / 2) = 0 in float64: clipping |u| there avoids u^2 overflow
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_ONE_OVER_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class _Pointwise(Activation):
    """An activation computed from ``phi`` and ``derivative`` alone. Forward keeps a
    reference to its input (the previous layer's buffer, unchanged until that layer's next
    forward) and backward returns derivative(input) * grad_out."""

    train_arrays = 2  # out, dL/dz (the input is the previous layer's)

    def forward(self, x, train=True):
        out = self._buffer("out", x.shape)
        np.copyto(out, self.phi(x), casting="same_kind")
        self._input = x
        self.output = out
        return out

    def predict(self, x, scratch):
        np.copyto(x, self.phi(x), casting="same_kind")
        return x

    def backward(self, grad_out):
        grad_in = self._buffer("grad_in", grad_out.shape)
        np.multiply(self.derivative(self._input), grad_out, out=grad_in, casting="same_kind")
        return grad_in


def _sigmoid(u):
    """1 / (1 + exp(-u)) from e = exp(-|u|), which never overflows."""
    e = np.exp(-np.abs(u))
    return np.where(u >= 0, 1.0, e) / (1.0 + e)


class Erf(_Pointwise):
    """phi(z) = erf(z) (``special.erf``, Cody 1969); phi'(z) = 2/sqrt(pi) exp(-z^2).

    Saturation: the fraction of outputs with |erf| > 0.99. Theory: closed forms
    E[erf(u)^2] = (2/pi) arcsin(2q / (1 + 2q)), E[erf'(u)^2] = (4/pi) / sqrt(1 + 4q)."""

    name = "erf"
    bounded = True

    def phi(self, u):
        return special.erf(u)

    def derivative(self, u):
        clipped = np.minimum(np.abs(u), _GAUSS_CLIP)
        return _TWO_OVER_SQRT_PI * np.exp(-clipped * clipped)

    def saturation(self):
        return np.count_nonzero(np.abs(self.output) > 0.99) / self.output.size

    def closed_moments(self, q):
        return (2 / math.pi) * math.asin(2 * q / (1 + 2 * q)), (4 / math.pi) / math.sqrt(1 + 4 * q)


class GELU(_Pointwise):
    """phi(z) = z Phi(z), Phi the standard normal CDF (PyTorch ``nn.GELU()``, the exact form);
    phi'(z) = Phi(z) + z exp(-z^2 / 2) / sqrt(2 pi). No saturation rule."""

    name = "gelu"
    slope_limits = (0.0, 1.0)

    def phi(self, u):
        return u * special.normal_cdf(u)

    def derivative(self, u):
        clipped = np.minimum(np.abs(u), _GAUSS_CLIP)
        return special.normal_cdf(u) + u * (_ONE_OVER_SQRT_2PI * np.exp(-0.5 * clipped * clipped))


class SiLU(_Pointwise):
    """phi(z) = z sigmoid(z) (PyTorch ``nn.SiLU``); phi'(z) = s (1 + z (1 - s)), s =
    sigmoid(z). No saturation rule."""

    name = "silu"
    slope_limits = (0.0, 1.0)

    def phi(self, u):
        return u * _sigmoid(u)

    def derivative(self, u):
        s = _sigmoid(u)
        return s * (1.0 + u * _sigmoid(-u))  # sigmoid(-u) = 1 - s, without cancellation


class Softplus(_Pointwise):
    """phi(z) = log(1 + exp(z)) for z <= 20, z above (PyTorch ``nn.Softplus``, beta 1,
    threshold 20); phi'(z) = sigmoid(z), 1 above 20 (PyTorch's backward). No saturation
    rule."""

    name = "softplus"
    slope_limits = (0.0, 1.0)
    _threshold = 20.0

    def phi(self, u):
        below = np.log1p(np.exp(np.minimum(u, self._threshold)))
        return np.where(u > self._threshold, u, below)

    def derivative(self, u):
        return np.where(u > self._threshold, 1.0, _sigmoid(u))


class LeakyReLU(Activation):
    """phi(z) = z for z > 0, a z otherwise (PyTorch ``nn.LeakyReLU``, a = ``slope``, config
    ``model.leaky_slope``, default 0.01); phi' = 1 or a (a at 0, as PyTorch). Positively
    homogeneous: chi_1 = sigma_w^2 (1 + a^2) / 2. No saturation rule (no unit is dead)."""

    name = "leaky_relu"
    train_arrays = 2  # out, dL/dz
    train_masks = 1  # z > 0
    kink = True
    options = ("leaky_slope",)

    def __init__(self, dtype=np.float64, leaky_slope: float = 0.01):
        super().__init__(dtype)
        self.slope = float(leaky_slope)
        self.slope_limits = (self.slope, 1.0)
        mean = (1.0 - self.slope) ** 2 / (2.0 * math.pi)  # E[phi] = (1 - a) sqrt(q / (2 pi))
        second = (1.0 + self.slope**2) / 2.0
        self.homogeneous = (mean, second, second)

    def twin(self, dtype):
        return LeakyReLU(dtype, self.slope)

    def phi(self, u):
        return np.where(u > 0, u, self.slope * u)

    def derivative(self, u):
        return np.where(u > 0, 1.0, self.slope)

    def forward(self, x, train=True):
        positive = self._positive = self._buffer("positive", x.shape, dtype=bool)
        np.greater(x, 0.0, out=positive)
        out = self._buffer("out", x.shape)
        np.multiply(x, self.slope, out=out)
        np.copyto(out, x, where=positive)
        self.output = out
        return out

    def predict(self, x, scratch):
        np.multiply(x, self.slope, out=scratch)
        np.copyto(x, scratch, where=x <= 0)  # nan stays nan: nan <= 0 is False
        return x

    def backward(self, grad_out):
        grad_in = self._buffer("grad_in", grad_out.shape)
        np.multiply(grad_out, self.slope, out=grad_in)
        np.copyto(grad_in, grad_out, where=self._positive)
        return grad_in


class ELU(_Pointwise):
    """phi(z) = z for z > 0, exp(z) - 1 otherwise (PyTorch ``nn.ELU``, alpha 1); phi' = 1 or
    exp(z). phi'' jumps at 0, so the theory's quadrature splits there. No saturation rule."""

    name = "elu"
    kink = True
    slope_limits = (0.0, 1.0)

    def phi(self, u):
        return np.where(u > 0, u, np.expm1(np.minimum(u, 0.0)))

    def derivative(self, u):
        return np.where(u > 0, 1.0, np.exp(np.minimum(u, 0.0)))


ACTIVATIONS: dict[str, type[Activation]] = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "linear": Identity,
    "erf": Erf,
    "gelu": GELU,
    "silu": SiLU,
    "softplus": Softplus,
    "leaky_relu": LeakyReLU,
    "elu": ELU,
}
vocabulary.check_registry("activation", ACTIVATIONS, vocabulary.ACTIVATIONS)


def make_activation(name: str, dtype=np.float64, **options) -> Activation:
    """An activation layer by name: one of ``ACTIVATIONS``. ``options`` (e.g. ``leaky_slope``)
    go to the entries that declare them in ``options`` and are ignored by the others."""
    if name not in ACTIVATIONS:
        raise EngineError(f"activation: {name!r} is not one of {', '.join(ACTIVATIONS)}")
    entry = ACTIVATIONS[name]
    return entry(dtype, **{key: options[key] for key in entry.options if key in options})
