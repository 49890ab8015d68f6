"""The error function and the normal CDF in numpy alone, accurate to double precision.

numpy has no erf, and the engine imports nothing but numpy, so the ``erf`` and ``gelu``
activations (x * Phi(x)) need their own. This is W. J. Cody's rational Chebyshev
approximation, "Rational Chebyshev approximations for the error function", Math. Comp. 23
(1969), 631-638, with the coefficients and range constants of his routine CALERF in Netlib
SPECFUN (file ``specfun/erf``, latest modification March 19, 1990). Three ranges of
y = |x|:

- y <= 0.4769: erf(x) = x * R1(x^2), a (4, 4) rational function;
- 0.4769 < y <= 4: erfc(y) = exp(-y^2) * R2(y), (8, 8);
- y > 4: erfc(y) = exp(-y^2) / y * (1/sqrt(pi) - R3(1/y^2) / y^2), (4, 5).

Everything else follows by symmetry: erf(-x) = -erf(x), erfc(-x) = 2 - erfc(x), and
erf = 1 - erfc outside the first range. The factor exp(-y^2) is where the accuracy is won or
lost: y^2 rounds with a relative error of up to 1.1e-16, an absolute error of y^2 times that
in the exponent, which exp turns into a relative error (hundreds of ulps at y = 26.5). As in
CALERF, y is split into s = trunc(16 y) / 16, whose square is exact, and a remainder:
exp(-y^2) = exp(-s^2) * exp(-(y - s)(y + s)), the second exponent being smaller than
2y/16. ``normal_cdf`` applies the same split to x itself (Phi(x) = exp(-x^2/2) * ... in the
left tail) instead of to the rounded x / sqrt(2), which would cost up to ~1500 ulps.

Accuracy (tests/test_special.py, against math and an exact decimal reference): at most 3.5
ulps for erf, 8 for erfc and normal_cdf (relative error, 1.8e-15), down to where the
results underflow (erfc near x = 26.5, Phi near x = -37.5; below the smallest normal the
error is within 2 subnormal steps). Cody's approximations are within 1 ulp in double; the
rest is rounding in Horner's rule, worst for the degree-8 middle range.

float16 and float32 inputs are computed in float64 and rounded once to their own dtype;
integer and bool inputs give float64, like numpy's ufuncs. Special values: erf(+-inf) = +-1,
erfc(+inf) = 0, erfc(-inf) = 2, nan stays nan, and erf(-0.0) = -0.0. Inputs are clipped
where the functions have reached their limits, so no overflow is ever computed; underflow
(expected near the limits) is silenced locally.
"""

import numpy as np

# ---- CALERF coefficients, in Cody's order (Netlib SPECFUN, specfun/erf) ----
# erf, |x| <= THRESH:  erf(x) = x * N(t) / D(t), t = x^2
_A = (
    3.16112374387056560e00,
    1.13864154151050156e02,
    3.77485237685302021e02,
    3.20937758913846947e03,
    1.85777706184603153e-1,
)
_B = (
    2.36012909523441209e01,
    2.44024637934444173e02,
    1.28261652607737228e03,
    2.84423683343917062e03,
)
# erfc, THRESH < y <= 4:  erfc(y) = exp(-y^2) * N(y) / D(y)
_C = (
    5.64188496988670089e-1,
    8.88314979438837594e00,
    6.61191906371416295e01,
    2.98635138197400131e02,
    8.81952221241769090e02,
    1.71204761263407058e03,
    2.05107837782607147e03,
    1.23033935479799725e03,
    2.15311535474403846e-8,
)
_D = (
    1.57449261107098347e01,
    1.17693950891312499e02,
    5.37181101862009858e02,
    1.62138957456669019e03,
    3.29079923573345963e03,
    4.36261909014324716e03,
    3.43936767414372164e03,
    1.23033935480374942e03,
)
# erfc, y > 4:  erfc(y) = exp(-y^2) / y * (1/sqrt(pi) - t * N(t) / D(t)), t = 1 / y^2
_P = (
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
    1.63153871373020978e-2,
)
_Q = (
    2.56852019228982242e00,
    1.87295284992346047e00,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
)
_ONE_OVER_SQRT_PI = 5.6418958354775628695e-1
# The first break point. CALERF's is 0.46875, but Cody's first approximation holds on
# |x| <= 0.5, and breaking just below erf(x) = 0.5 (x = 0.476936...) keeps 1 - erfc (erf just
# above the break) and 1 - erf (erfc just below it) at or above 0.5, so the rounding error of
# the subtracted value never counts double in ulps of the result. Measured: erf just above
# 0.46875 improves from 4.6 to 3.3 ulps, erfc there from 4.6 to 2.1.
_THRESH = 0.4769
_MIDDLE_END = 4.0
# Past these |x| the results are exactly +-1 / 0 / 2 in float64 (erfc(27.3) and Phi(-38.5)
# underflow to 0), so inputs are clipped there: no x^2 overflow at 1e300, inf works as a number.
_ERF_CLIP = 28.0
_NORMAL_CDF_CLIP = 40.0
_SQRT_HALF = 0.70710678118654752440  # 1 / sqrt(2)
# Arrays are processed in blocks of this many elements: the temporaries (a few dozen passes)
# then stay in cache and are reused by the allocator instead of page-faulting in anew.
_BLOCK = 16384


def erf(x):
    """The error function erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise."""
    return _evaluate(x, "erf")


def erfc(x):
    """The complementary error function 1 - erf(x), with small relative error in the tail."""
    return _evaluate(x, "erfc")


def normal_cdf(x):
    """Phi(x) = 0.5 * erfc(-x / sqrt(2)), the standard normal CDF, accurate in both tails."""
    return _evaluate(x, "normal_cdf")


def _evaluate(x, kind):
    """Shared driver: dtype rules, then the kernel block by block (see _BLOCK)."""
    array = np.asarray(x)
    if array.dtype.kind in "biu":
        result_dtype = np.dtype(np.float64)
    elif array.dtype in (np.float16, np.float32, np.float64):
        result_dtype = array.dtype
    else:
        raise TypeError(
            f"{kind}: dtype {array.dtype} is not supported (float16/32/64, integers, bool)"
        )
    flat = np.asarray(array, dtype=np.float64).ravel()
    result = np.empty(flat.shape, dtype=np.float64)
    kernel, limit = _KERNELS[kind]
    with np.errstate(under="ignore"):  # tiny x^2 and the far tail underflow by design
        for start in range(0, flat.size, _BLOCK):
            block = flat[start : start + _BLOCK]
            kernel(np.clip(block, -limit, limit), result[start : start + _BLOCK])
    result = result.reshape(array.shape).astype(result_dtype, copy=False)
    return result[()] if result.ndim == 0 else result


def _erf_kernel(x, out):
    """out = erf(x) for float64 x with |x| <= _ERF_CLIP (nan allowed)."""
    y = np.abs(x)
    is_small = y <= _THRESH
    small = np.flatnonzero(is_small)  # integer indices: much faster than boolean masks
    out[small] = _erf_small(x[small])
    large = np.flatnonzero(~is_small)  # also nan, which every formula below passes through
    if large.size:
        erf_abs = 1.0 - _erfc_positive(y[large])
        out[large] = np.copysign(erf_abs, x[large], out=erf_abs)


def _erfc_kernel(x, out):
    """out = erfc(x) for float64 x with |x| <= _ERF_CLIP (nan allowed)."""
    y = np.abs(x)
    is_small = y <= _THRESH
    small = np.flatnonzero(is_small)
    out[small] = 1.0 - _erf_small(x[small])
    large = np.flatnonzero(~is_small)
    if large.size:
        erfc_abs = _erfc_positive(y[large])
        negative = np.flatnonzero(x[large] < 0)
        erfc_abs[negative] = 2.0 - erfc_abs[negative]
        out[large] = erfc_abs


def _normal_cdf_kernel(x, out):
    """out = Phi(x) for float64 x with |x| <= _NORMAL_CDF_CLIP (nan allowed)."""
    z = x * -_SQRT_HALF  # Phi(x) = erfc(z) / 2
    is_small = np.abs(z) <= _THRESH
    small = np.flatnonzero(is_small)
    out[small] = 0.5 - 0.5 * _erf_small(z[small])
    large = np.flatnonzero(~is_small)
    if large.size:
        x_large = x[large]
        # exp(-z^2) = exp(-x^2 / 2), split on x: the rounding of z only enters the ratio.
        half_ratio = 0.5 * _erfc_ratio(np.abs(z[large]))
        half_erfc_abs = _times_exp_minus_square(half_ratio, np.abs(x_large), half=True)
        positive = np.flatnonzero(x_large > 0)
        half_erfc_abs[positive] = 1.0 - half_erfc_abs[positive]
        out[large] = half_erfc_abs


def _erf_small(x):
    """erf(x) for |x| <= _THRESH: x * R1(x^2) (the ratio first, so a subnormal x rounds once)."""
    t = x * x
    ratio = _horner(t, _R1_NUMERATOR)
    ratio /= _horner(t, _R1_DENOMINATOR)
    ratio *= x
    return ratio


def _erfc_positive(y):
    """erfc(y) for y > _THRESH (or nan)."""
    return _times_exp_minus_square(_erfc_ratio(y), y, half=False)


def _erfc_ratio(y):
    """erfc(y) / exp(-y^2) for y > _THRESH: R2 up to 4, R3 beyond."""
    is_middle = y <= _MIDDLE_END
    tail = np.flatnonzero(~is_middle)  # and nan
    if not tail.size:
        return _ratio_middle(y)
    ratio = np.empty_like(y)
    middle = np.flatnonzero(is_middle)
    ratio[middle] = _ratio_middle(y[middle])
    ratio[tail] = _ratio_tail(y[tail])
    return ratio


def _ratio_middle(y):
    """R2(y), the (8, 8) rational function for _THRESH < y <= 4."""
    ratio = _horner(y, _R2_NUMERATOR)
    ratio /= _horner(y, _R2_DENOMINATOR)
    return ratio


def _ratio_tail(y):
    """(1/sqrt(pi) - t R3(t)) / y with t = 1/y^2, for y > 4."""
    t = y * y
    np.divide(1.0, t, out=t)
    ratio = _horner(t, _R3_NUMERATOR)
    ratio /= _horner(t, _R3_DENOMINATOR)
    ratio *= t
    np.subtract(_ONE_OVER_SQRT_PI, ratio, out=ratio)
    ratio /= y
    return ratio


def _horner(x, coefficients):
    """c[0] x^n + c[1] x^(n-1) + ... + c[n] by Horner's rule, CALERF's order of operations."""
    value = x * coefficients[0]
    value += coefficients[1]
    for coefficient in coefficients[2:]:
        value *= x
        value += coefficient
    return value


def _times_exp_minus_square(factor, y, half):
    """factor * exp(-y^2) (or exp(-y^2 / 2) with ``half``) for y >= 0, with CALERF's split
    of y: s = trunc(16 y) / 16 has an exact square, and only the small (y - s)(y + s) rounds.
    exp(-s^2), the factor that may be subnormal, comes last so the result rounds once there."""
    s = y * 16.0
    np.trunc(s, out=s)
    s /= 16.0
    remainder = y - s
    remainder *= y + s
    square = s
    square *= s
    scale = -0.5 if half else -1.0  # exact, like halving the remainder
    remainder *= scale
    square *= scale
    factor *= np.exp(remainder, out=remainder)
    factor *= np.exp(square, out=square)
    return factor


# Cody's coefficients as Horner's rule takes them, leading coefficient first; the
# denominators are monic.
_R1_NUMERATOR = (_A[4], _A[0], _A[1], _A[2], _A[3])
_R1_DENOMINATOR = (1.0, *_B)
_R2_NUMERATOR = (_C[8], *_C[:8])
_R2_DENOMINATOR = (1.0, *_D)
_R3_NUMERATOR = (_P[5], *_P[:5])
_R3_DENOMINATOR = (1.0, *_Q)
_KERNELS = {
    "erf": (_erf_kernel, _ERF_CLIP),
    "erfc": (_erfc_kernel, _ERF_CLIP),
    "normal_cdf": (_normal_cdf_kernel, _NORMAL_CDF_CLIP),
}
