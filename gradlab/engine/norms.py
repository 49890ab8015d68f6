"""Euclidean norms that neither underflow nor overflow.

A vanishing network has gradients of 1e-200 (float64) or 1e-40 (float32): their squares
underflow to 0, so a plain ``sqrt(sum(g**2))`` reads 0 for a gradient that is not 0. An
exploding one has entries of 1e160 whose squares overflow to inf. The fast path is one BLAS
dot product; only when its result is outside the safe range do we rescale by max|g| and
accumulate in float64. Results are Python floats (float64).
"""

import math
from collections.abc import Iterable

import numpy as np

# A sum of squares inside this range was computed without underflow or overflow (the
# squares of entries below ~1e-154 lose bits long before the sum reaches 0).
_SAFE_LOW, _SAFE_HIGH = 1e-250, 1e250
_CHUNK = 1 << 22  # float64 elements cast at a time: the copy never exceeds 32 MiB


def l2_norm(array: np.ndarray) -> float:
    """Frobenius norm of ``array`` as a float64 Python float, exact for tiny and huge entries.

    float32 input is accumulated in float64. Non-finite entries give inf (inf entries) or
    nan (nan entries), never a finite number.
    """
    if array.size == 0:
        return 0.0
    # np.vdot is one BLAS dot product that (unlike np.dot) does not check the floating-point
    # flags: no warning, whatever the error state, when the sum under- or overflows; such a
    # sum is outside the safe range and takes the slow path.
    if array.dtype == np.float64:
        sum_of_squares = float(np.vdot(array, array))
    else:
        sum_of_squares = _float64_sum_of_squares(array.reshape(-1))
    if _SAFE_LOW < sum_of_squares < _SAFE_HIGH:
        return math.sqrt(sum_of_squares)
    return _scaled_norm(array.reshape(-1).astype(np.float64))


def _float64_sum_of_squares(flat: np.ndarray) -> float:
    """Sum of squares of a non-float64 1-D array, accumulated in float64 (each float32 square
    is exact there), cast ``_CHUNK`` entries at a time so the copy stays small."""
    total = 0.0
    for start in range(0, flat.size, _CHUNK):
        part = flat[start : start + _CHUNK].astype(np.float64)
        total += float(np.vdot(part, part))
    return total


def _scaled_norm(flat: np.ndarray) -> float:
    """max|x| * ||x / max|x||| in float64: the slow path, for sums outside the safe range."""
    scale = float(np.max(np.abs(flat)))
    if scale == 0.0 or not math.isfinite(scale):
        return scale  # 0, inf, or nan (np.max propagates nan)
    scaled = flat / scale
    return scale * math.sqrt(float(np.dot(scaled, scaled)))


def combine_norms(norms: Iterable[float]) -> float:
    """sqrt(sum of n**2) of per-tensor norms without underflow: the global norm."""
    values = [float(n) for n in norms]
    if not values:
        return 0.0
    if any(math.isnan(v) for v in values):
        return math.nan
    scale = max(values)
    if scale == 0.0 or math.isinf(scale):
        return scale
    return scale * math.sqrt(sum((v / scale) ** 2 for v in values))
