"""Gradient clipping as standalone functions on a list of gradient arrays (modified in place).

Each returns a ``ClipResult`` with the pre-clip global norm, the post-clip global norm, the
factor applied (post / pre; for ``norm`` exactly the PyTorch coefficient), the cosine
between the clipped and the unclipped gradient (1 when the direction is kept) and each
gradient's norm after clipping.

- ``clip_by_global_norm`` (PyTorch ``clip_grad_norm_``): total = sqrt(sum of squared
  per-tensor norms); coef = min(1, max_norm / (total + 1e-6)); every gradient times coef.
  Keeps the direction.
- ``clip_by_layer_norm`` (Keras ``clipnorm``): each tensor clipped to norm <= max_norm on its
  own (same coefficient formula per tensor). Changes the direction when layers differ.
- ``clip_by_value`` (PyTorch ``clip_grad_value_``): each entry clamped to [-v, v]. Changes
  the direction.

A non-finite pre-clip norm is reported (``finite`` is False) and the gradients are left
untouched: scaling by max_norm / inf would silently turn them into NaN weights.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gradlab import vocabulary
from gradlab.engine.norms import combine_norms, l2_norm
from gradlab.errors import EngineError

CLIP_MODES = vocabulary.CLIP_MODES  # each handled in ``clip_gradients``
_EPS = 1e-6  # PyTorch's guard in max_norm / (total + eps)


@dataclass(frozen=True)
class ClipResult:
    norm: float  # global L2 norm before clipping
    clipped_norm: float  # global L2 norm after clipping
    factor: float  # clipped_norm / norm (1.0 when nothing was clipped)
    cosine: float  # cos(clipped, unclipped); 1.0 when only the length changed
    tensor_norms: tuple[float, ...] = ()  # each gradient's norm after clipping, in order

    @property
    def finite(self) -> bool:
        return math.isfinite(self.norm)


def global_norm(grads: Sequence[np.ndarray]) -> float:
    """sqrt(sum of squared per-tensor norms), underflow- and overflow-safe."""
    return combine_norms(l2_norm(g) for g in grads)


def _unchanged(norm: float, norms: Sequence[float]) -> ClipResult:
    return ClipResult(norm, norm, 1.0, 1.0, tuple(norms))


def _coefficient(norm: float, max_norm: float) -> float:
    return min(1.0, max_norm / (norm + _EPS))


def _tensor_norms(grads: Sequence[np.ndarray], norms: Sequence[float] | None) -> list[float]:
    """Each gradient's norm: given (e.g. ``Probe.grad_norms``, taken while hot) or computed."""
    if norms is None:
        return [l2_norm(g) for g in grads]
    if len(norms) != len(grads):
        raise EngineError(f"{len(norms)} norms given for {len(grads)} gradients")
    return [float(n) for n in norms]


def clip_by_global_norm(
    grads: Sequence[np.ndarray], max_norm: float, norms: Sequence[float] | None = None
) -> ClipResult:
    """Scale all gradients by min(1, max_norm / (total + 1e-6)); the direction is kept."""
    norms = _tensor_norms(grads, norms)
    norm = combine_norms(norms)
    if not math.isfinite(norm):
        return _unchanged(norm, norms)
    coef = _coefficient(norm, max_norm)
    if coef < 1.0:
        for g in grads:
            g *= coef
    return ClipResult(norm, norm * coef, coef, 1.0, tuple(n * coef for n in norms))


def clip_by_layer_norm(
    grads: Sequence[np.ndarray], max_norm: float, norms: Sequence[float] | None = None
) -> ClipResult:
    """Clip each tensor to norm <= max_norm on its own (Keras ``clipnorm``)."""
    norms = _tensor_norms(grads, norms)
    norm = combine_norms(norms)
    if norm == 0.0 or not math.isfinite(norm):  # all zero: nothing to clip (and no 0/0)
        return _unchanged(norm, norms)
    clipped_norms, inner = [], 0.0  # inner = <clipped, original> / ||original||
    for g, tensor_norm in zip(grads, norms, strict=True):
        coef = _coefficient(tensor_norm, max_norm)
        if coef < 1.0:
            g *= coef
        clipped_norms.append(tensor_norm * coef)
        inner += coef * tensor_norm * (tensor_norm / norm)
    return _result(norm, clipped_norms, inner)


def clip_by_value(
    grads: Sequence[np.ndarray], clip_value: float, norms: Sequence[float] | None = None
) -> ClipResult:
    """Clamp every entry to [-clip_value, clip_value] (PyTorch ``clip_grad_value_``)."""
    norms = _tensor_norms(grads, norms)
    norm = combine_norms(norms)
    if not math.isfinite(norm):
        return _unchanged(norm, norms)
    clipped_norms, inner = [], 0.0  # inner = <clipped, original> / ||original||
    for g, tensor_norm in zip(grads, norms, strict=True):
        if tensor_norm == 0.0:
            clipped_norms.append(0.0)
            continue
        original = g / norm  # scaled so the products below neither underflow nor overflow
        np.clip(g, -clip_value, clip_value, out=g)
        clipped_norms.append(l2_norm(g))
        inner += float(np.dot(original.reshape(-1), g.reshape(-1)))
    return _result(norm, clipped_norms, inner)


def _result(norm: float, clipped_norms: list[float], inner: float) -> ClipResult:
    """ClipResult from inner = <clipped, original> / ||original||: cosine = inner / ||clipped||."""
    if norm == 0.0:
        return _unchanged(norm, clipped_norms)
    clipped_norm = combine_norms(clipped_norms)
    cosine = min(1.0, inner / clipped_norm) if clipped_norm > 0 else math.nan
    return ClipResult(norm, clipped_norm, clipped_norm / norm, cosine, tuple(clipped_norms))


def clip_gradients(
    grads: Sequence[np.ndarray],
    mode: str,
    threshold: float,
    norms: Sequence[float] | None = None,
) -> ClipResult:
    """Dispatch on ``mode`` (one of ``CLIP_MODES``); "none" only measures the norm.

    ``norms``: each gradient's norm if already known (they are not recomputed)."""
    if mode == "none":
        norms = _tensor_norms(grads, norms)
        return _unchanged(combine_norms(norms), norms)
    if mode == "norm":
        return clip_by_global_norm(grads, threshold, norms)
    if mode == "layer_norm":
        return clip_by_layer_norm(grads, threshold, norms)
    if mode == "value":
        return clip_by_value(grads, threshold, norms)
    raise EngineError(f"clip mode {mode!r} is not one of {', '.join(CLIP_MODES)}")
