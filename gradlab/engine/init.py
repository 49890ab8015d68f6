"""Weight and bias initializers. Weights are (fan_in, fan_out); every function takes a Generator.

``weight_scale`` (sigma_w) is the mean-field convention: W ~ N(0, sigma_w^2 / fan_in), so
sigma_w = 1 keeps the pre-activation variance of a linear network constant. The other
schemes use sigma_w as a gain on top of their own variance. Biases are always
b ~ N(0, sigma_b^2) (``bias_scale``), zero when sigma_b = 0.
"""

import math

import numpy as np

from gradlab import vocabulary
from gradlab.errors import EngineError


def normal(rng, fan_in, fan_out, weight_scale):
    """W ~ N(0, sigma_w^2 / fan_in)."""
    return rng.normal(0.0, weight_scale / math.sqrt(fan_in), size=(fan_in, fan_out))


def uniform(rng, fan_in, fan_out, weight_scale):
    """W ~ U(-a, a) with a = sigma_w sqrt(3 / fan_in): the variance of ``normal``."""
    limit = weight_scale * math.sqrt(3.0 / fan_in)
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def xavier(rng, fan_in, fan_out, weight_scale):
    """Glorot & Bengio's normalized init: U(-a, a), a = gain sqrt(6 / (fan_in + fan_out))."""
    limit = weight_scale * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def he(rng, fan_in, fan_out, weight_scale):
    """He et al.: N(0, 2 gain^2 / fan_in), for ReLU networks."""
    return rng.normal(0.0, weight_scale * math.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


def orthogonal(rng, fan_in, fan_out, weight_scale):
    """A (semi-)orthogonal matrix times sigma_w (Saxe et al.; PyTorch ``orthogonal_``).

    Rows (fan_in <= fan_out) or columns are orthonormal; entries then have variance about
    1/fan_out resp. 1/fan_in, like ``normal`` for square layers.
    """
    rows, cols = max(fan_in, fan_out), min(fan_in, fan_out)
    gaussian = rng.normal(size=(rows, cols))
    q, r = np.linalg.qr(gaussian)
    q *= np.sign(np.diag(r))  # makes the distribution uniform (Haar), as PyTorch does
    if fan_in < fan_out:
        q = q.T
    return weight_scale * q


WEIGHT_INITS = {
    "normal": normal,
    "uniform": uniform,
    "xavier": xavier,
    "he": he,
    "orthogonal": orthogonal,
}
vocabulary.check_registry("init scheme", WEIGHT_INITS, vocabulary.INIT_SCHEMES)


def init_weight(scheme, rng, fan_in, fan_out, weight_scale=1.0):
    """A float64 weight matrix (fan_in, fan_out) drawn with ``scheme``."""
    if scheme not in WEIGHT_INITS:
        raise EngineError(f"init scheme: {scheme!r} is not one of {', '.join(WEIGHT_INITS)}")
    return WEIGHT_INITS[scheme](rng, fan_in, fan_out, weight_scale)


def init_bias(rng, fan_out, bias_scale=0.0):
    """b ~ N(0, sigma_b^2); exactly zero (and no random draw) when sigma_b = 0."""
    if bias_scale == 0.0:
        return np.zeros(fan_out)
    return rng.normal(0.0, bias_scale, size=fan_out)
