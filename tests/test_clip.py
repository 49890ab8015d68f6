"""Property tests of gradient clipping (gradlab.engine.clip), PyTorch/Keras semantics.

Gradients are drawn at ordinary magnitudes and then scaled by an exact power of two, from
~1e-211 (squares underflow) to ~1e195 (squares overflow). Scaling back by the inverse power
of two is exact, so the references (np.linalg.norm, np.clip, cosines) are computed at
ordinary magnitudes where plain numpy is accurate.
"""

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.engine import (
    ClipResult,
    clip_by_global_norm,
    clip_by_layer_norm,
    clip_by_value,
    clip_gradients,
    global_norm,
)
from gradlab.engine.clip import CLIP_MODES
from gradlab.engine.norms import combine_norms
from gradlab.errors import EngineError

EPS = 1e-6  # PyTorch's guard in max_norm / (total + eps)
RTOL = 1e-12
SCALES = [2.0**-700, 2.0**-330, 1.0, 2.0**330, 2.0**640]
# For norm clipping PyTorch's absolute eps makes tiny scales degenerate: with total ~ 1e-211,
# coef = max_norm / (total + 1e-6) ~ 1e-208 scales the gradients into underflow. Those
# tests go down to 2^-20 ~ 1e-6, where the eps is still visible in the coefficient.
NORM_CLIP_SCALES = [2.0**-20, 1.0, 2.0**330, 2.0**640]

# 0 or |x| in [1e-3, 1e3]: ordinary magnitudes whose squares neither underflow nor overflow
_magnitudes = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)
_entries = st.one_of(
    st.just(0.0), _magnitudes, _magnitudes.map(lambda x: -x), st.integers(-5, 5).map(float)
)
_shapes = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=6)
_base_grads = st.lists(hnp.arrays(np.float64, _shapes, elements=_entries), min_size=1, max_size=4)
_thresholds = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)

PROPERTY = settings(max_examples=50, deadline=None)


@st.composite
def scaled_grads(draw, scales=SCALES):
    """(grads, scale): base gradients times an exact power of two."""
    scale = draw(st.sampled_from(scales))
    return [g * scale for g in draw(_base_grads)], scale


def _copy(grads):
    return [g.copy() for g in grads]


def _flat(grads, scale=1.0):
    """All gradients as one float64 vector, multiplied back by 1/scale (exact)."""
    return np.concatenate([g.reshape(-1).astype(np.float64) for g in grads]) / scale


def _reference_norm(grads, scale):
    return float(np.linalg.norm(_flat(grads, scale))) * scale


def _cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _assert_bitwise_equal(grads, originals):
    assert len(grads) == len(originals)
    for g, original in zip(grads, originals, strict=True):
        assert g.dtype == original.dtype
        assert g.shape == original.shape
        assert g.tobytes() == original.tobytes()


def _check_tensor_norms(result, grads, scale):
    """``tensor_norms``: each gradient's norm as it is now (after clipping), in order."""
    assert len(result.tensor_norms) == len(grads)
    for reported, g in zip(result.tensor_norms, grads, strict=True):
        assert reported == pytest.approx(_reference_norm([g], scale), rel=RTOL, abs=0.0)


# --- global norm -------------------------------------------------------------------------


def _check_clipped_norm_factor_cosine(result, grads, originals, scale):
    """The reported post-clip norm, factor and cosine match the arrays before and after."""
    clipped_total = _reference_norm(grads, scale)
    assert result.clipped_norm == pytest.approx(clipped_total, rel=RTOL, abs=0.0)
    _check_tensor_norms(result, grads, scale)
    if result.norm > 0.0:
        assert result.factor == pytest.approx(clipped_total / result.norm, rel=RTOL, abs=0.0)
        cosine = _cosine(_flat(grads, scale), _flat(originals, scale))
        assert result.cosine == pytest.approx(cosine, abs=RTOL)
    else:
        assert (result.factor, result.cosine) == (1.0, 1.0)


@PROPERTY
@given(scaled_grads())
def test_global_norm_equals_norm_of_concatenation(grads_and_scale):
    grads, scale = grads_and_scale
    expected = _reference_norm(grads, scale)
    assert isinstance(global_norm(grads), float)
    assert global_norm(grads) == pytest.approx(expected, rel=RTOL, abs=0.0)


@PROPERTY
@given(scaled_grads(NORM_CLIP_SCALES), _thresholds)
def test_clip_by_global_norm_pytorch_semantics(grads_and_scale, base_max_norm):
    grads, scale = grads_and_scale
    max_norm = base_max_norm * scale
    originals = _copy(grads)
    total = _reference_norm(originals, scale)

    result = clip_by_global_norm(grads, max_norm)

    assert isinstance(result, ClipResult)
    assert result.finite
    assert result.norm == pytest.approx(total, rel=RTOL, abs=0.0)
    coef = min(1.0, max_norm / (result.norm + EPS))
    assert result.factor == coef
    # every tensor is multiplied by the same coefficient (bitwise: g *= coef)
    for g, original in zip(grads, originals, strict=True):
        np.testing.assert_array_equal(g, original * coef if coef < 1.0 else original)
    clipped_total = _reference_norm(grads, scale)
    assert clipped_total <= max_norm * (1.0 + RTOL)
    assert result.clipped_norm == pytest.approx(clipped_total, rel=RTOL, abs=0.0)
    _check_tensor_norms(result, grads, scale)
    assert result.cosine == 1.0
    if total > 0.0:
        assert _cosine(_flat(grads, scale), _flat(originals, scale)) == pytest.approx(1.0, abs=RTOL)


@PROPERTY
@given(scaled_grads(NORM_CLIP_SCALES), _thresholds)
def test_clip_by_global_norm_clips_above_threshold(grads_and_scale, base_max_norm):
    """When the norm exceeds max_norm + eps, the result has norm max_norm (to rounding)."""
    grads, scale = grads_and_scale
    total = global_norm(grads)
    max_norm = base_max_norm * scale
    if total == 0.0:
        grads = [np.full_like(g, scale) for g in grads]
        total = global_norm(grads)
    if not total > max_norm + EPS:
        grads = [g * (2.0 * (max_norm + EPS) / total) for g in grads]
        total = global_norm(grads)
    assert total > max_norm + EPS
    result = clip_by_global_norm(grads, max_norm)
    assert result.factor < 1.0
    expected = max_norm / (1.0 + EPS / total)  # = max_norm up to PyTorch's eps
    assert global_norm(grads) == pytest.approx(expected, rel=RTOL, abs=0.0)
    assert result.clipped_norm == pytest.approx(expected, rel=RTOL, abs=0.0)


# --- per-layer norm ----------------------------------------------------------------------


@PROPERTY
@given(scaled_grads(NORM_CLIP_SCALES), _thresholds)
def test_clip_by_layer_norm_bounds_every_tensor(grads_and_scale, base_max_norm):
    grads, scale = grads_and_scale
    max_norm = base_max_norm * scale
    originals = _copy(grads)

    result = clip_by_layer_norm(grads, max_norm)

    assert result.finite
    assert result.norm == pytest.approx(_reference_norm(originals, scale), rel=RTOL, abs=0.0)
    for g, original in zip(grads, originals, strict=True):
        norm = float(np.linalg.norm(original / scale)) * scale
        coef = min(1.0, max_norm / (norm + EPS))
        if coef < 1.0:
            np.testing.assert_allclose(g, original * coef, rtol=RTOL, atol=0.0)
        else:
            assert g.tobytes() == original.tobytes()
        assert float(np.linalg.norm(g / scale)) * scale <= max_norm * (1.0 + RTOL)
    _check_clipped_norm_factor_cosine(result, grads, originals, scale)


def test_clip_by_layer_norm_changes_direction_when_layers_differ():
    grads = [np.array([3.0, 4.0]), np.array([0.3, 0.4])]  # norms 5 and 0.5
    result = clip_by_layer_norm(grads, 1.0)
    coef = 1.0 / (5.0 + EPS)
    np.testing.assert_array_equal(grads[0], np.array([3.0, 4.0]) * coef)
    np.testing.assert_array_equal(grads[1], [0.3, 0.4])  # below the threshold: untouched
    clipped = np.concatenate(grads)
    original = np.array([3.0, 4.0, 0.3, 0.4])
    assert result.norm == pytest.approx(math.sqrt(25.25), rel=RTOL)
    assert result.clipped_norm == pytest.approx(np.linalg.norm(clipped), rel=RTOL)
    assert result.cosine == pytest.approx(_cosine(clipped, original), abs=RTOL)
    # clipped ~ (0.6, 0.8, 0.3, 0.4): cos = 5.25 / (sqrt(1.25) sqrt(25.25)) = 0.9345 < 1
    assert result.cosine == pytest.approx(5.25 / math.sqrt(1.25 * 25.25), rel=1e-6)


# --- value -------------------------------------------------------------------------------


@PROPERTY
@given(scaled_grads(), _thresholds)
def test_clip_by_value_equals_np_clip(grads_and_scale, base_clip_value):
    grads, scale = grads_and_scale
    clip_value = base_clip_value * scale
    originals = _copy(grads)

    result = clip_by_value(grads, clip_value)

    assert result.finite
    for g, original in zip(grads, originals, strict=True):
        np.testing.assert_array_equal(g, np.clip(original, -clip_value, clip_value))
        assert np.all(np.abs(g) <= clip_value)
    assert result.norm == pytest.approx(_reference_norm(originals, scale), rel=RTOL, abs=0.0)
    _check_clipped_norm_factor_cosine(result, grads, originals, scale)


def test_clip_by_value_changes_direction():
    grads = [np.array([10.0, 0.5]), np.array([[-3.0]])]
    result = clip_by_value(grads, 1.0)
    np.testing.assert_array_equal(grads[0], [1.0, 0.5])
    np.testing.assert_array_equal(grads[1], [[-1.0]])
    original, clipped = np.array([10.0, 0.5, -3.0]), np.array([1.0, 0.5, -1.0])
    assert result.norm == pytest.approx(np.linalg.norm(original), rel=RTOL)
    assert result.clipped_norm == pytest.approx(1.5, rel=RTOL)
    assert result.factor == pytest.approx(1.5 / np.linalg.norm(original), rel=RTOL)
    assert result.cosine == pytest.approx(_cosine(clipped, original), rel=RTOL)
    assert result.cosine < 0.9


# --- below the threshold nothing changes -------------------------------------------------


@PROPERTY
@given(scaled_grads(), st.floats(1.0, 10.0), st.sampled_from(["norm", "layer_norm", "value"]))
def test_below_threshold_nothing_changes(grads_and_scale, margin, mode):
    grads, scale = grads_and_scale
    originals = _copy(grads)
    if mode == "value":
        threshold = max(float(np.max(np.abs(g))) for g in grads) * margin
    else:  # the global norm bounds every per-tensor norm too
        threshold = (global_norm(grads) + EPS) * margin
    result = clip_gradients(grads, mode, threshold)
    _assert_bitwise_equal(grads, originals)
    assert result.factor == 1.0
    assert result.clipped_norm == result.norm
    assert result.norm == pytest.approx(_reference_norm(originals, scale), rel=RTOL, abs=0.0)
    _check_tensor_norms(result, grads, scale)
    if result.norm > 0.0 and mode != "norm":
        assert result.cosine == pytest.approx(1.0, abs=RTOL)
    else:
        assert result.cosine == 1.0


@PROPERTY
@given(scaled_grads(), _thresholds)
def test_mode_none_only_measures(grads_and_scale, threshold):
    grads, scale = grads_and_scale
    originals = _copy(grads)
    result = clip_gradients(grads, "none", threshold * 1e-300)
    _assert_bitwise_equal(grads, originals)
    assert result.norm == pytest.approx(_reference_norm(originals, scale), rel=RTOL, abs=0.0)
    assert (result.clipped_norm, result.factor, result.cosine) == (result.norm, 1.0, 1.0)
    _check_tensor_norms(result, grads, scale)


def test_unknown_mode_is_an_error():
    with pytest.raises(EngineError, match="clip mode 'bogus'"):
        clip_gradients([np.ones(3)], "bogus", 1.0)


# --- non-finite gradients ----------------------------------------------------------------


@PROPERTY
@given(
    _base_grads,
    st.data(),
    st.lists(st.sampled_from([math.inf, -math.inf, math.nan]), min_size=1, max_size=3),
    _thresholds,
)
def test_non_finite_gradient_is_reported_and_left_untouched(grads, data, bad_values, threshold):
    for bad in bad_values:
        g = grads[data.draw(st.integers(0, len(grads) - 1))]
        g.reshape(-1)[data.draw(st.integers(0, g.size - 1))] = bad
    has_nan = any(np.isnan(g).any() for g in grads)
    originals = _copy(grads)
    for mode in CLIP_MODES:
        result = clip_gradients(grads, mode, threshold * 1e-3)  # would clip if finite
        assert not result.finite, mode
        if has_nan:
            assert math.isnan(result.norm), mode
        else:
            assert result.norm == math.inf, mode
        assert result.factor == 1.0, mode
        _assert_bitwise_equal(grads, originals)  # no NaN written over finite entries
        for g, original in zip(grads, originals, strict=True):
            assert np.array_equal(np.isnan(g), np.isnan(original))


# --- float32 -----------------------------------------------------------------------------

_entries32 = st.floats(-1e3, 1e3, width=32, allow_nan=False, allow_infinity=False)
_grads32 = st.lists(hnp.arrays(np.float32, _shapes, elements=_entries32), min_size=1, max_size=4)


@PROPERTY
@given(_grads32, st.sampled_from([2.0**-120, 1.0, 2.0**100]), _thresholds)
def test_float32_gradients_stay_float32_and_are_clipped(grads, scale, base_max_norm):
    grads = [(g * np.float32(scale)).astype(np.float32) for g in grads]
    max_norm = base_max_norm * scale
    total = _reference_norm(grads, scale)
    assert global_norm(grads) == pytest.approx(total, rel=RTOL, abs=0.0)
    result = clip_by_global_norm(grads, max_norm)
    assert isinstance(result.norm, float)
    assert result.norm == pytest.approx(total, rel=RTOL, abs=0.0)
    for g in grads:
        assert g.dtype == np.float32
    # float32 rounding of coef and of the products: a couple of float32 ulps, relative
    assert _reference_norm(grads, scale) <= max_norm * (1.0 + 2.0**-22)


@pytest.mark.parametrize("mode", CLIP_MODES)
def test_all_zero_gradients(mode):
    """A zero gradient (a dead network) is measured as 0 and left alone, with no 0/0."""
    grads = [np.zeros((3, 2)), np.zeros(2)]
    result = clip_gradients(grads, mode, 1e-9)
    # "norm" reports PyTorch's coefficient even when it scales zeros: 1e-9 / (0 + 1e-6)
    factor = 1e-9 / EPS if mode == "norm" else 1.0
    assert result == ClipResult(0.0, 0.0, factor, 1.0, (0.0, 0.0))
    assert result.finite
    for g in grads:
        assert not np.signbit(g).any() and not g.any()


@pytest.mark.parametrize("mode", CLIP_MODES)
def test_given_norms_are_used_and_checked(mode):
    rng = np.random.default_rng(11)
    grads = [rng.normal(size=(3, 3)), rng.normal(size=4)]
    copies = [g.copy() for g in grads]
    norms = [float(np.linalg.norm(g)) for g in grads]
    given = clip_gradients(grads, mode, 0.5, norms)
    computed = clip_gradients(copies, mode, 0.5)
    assert given.norm == combine_norms(norms)
    if mode == "none":  # only measuring: norms that differ from the arrays show they are used
        fake = [2.0 * n for n in norms]
        assert clip_gradients(grads, mode, 0.5, fake).norm == combine_norms(fake)
    assert given.norm == pytest.approx(computed.norm, rel=1e-14)
    for g, c in zip(grads, copies, strict=True):
        np.testing.assert_allclose(g, c, rtol=1e-14)
    with pytest.raises(EngineError, match="1 norms given for 2 gradients"):
        clip_gradients(grads, mode, 0.5, norms[:1])
