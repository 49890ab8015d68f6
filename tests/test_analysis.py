"""The measured factor M, the verdict and the sentence, on norm sequences with a known M."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gradlab import analysis


def _norms(factor, depth, scale=1.0):
    """norm_l = scale * M^(L - l) for hidden layers l = 1..L (index 0 is layer 1)."""
    layers = np.arange(1, depth + 1)
    return scale * factor ** (depth - layers).astype(np.float64)


@settings(max_examples=60, deadline=None)
@given(
    factor=st.floats(0.05, 5.0),
    depth=st.integers(2, 80),
    scale=st.floats(1e-30, 1e30),
)
@example(factor=1.0, depth=7, scale=49.0)  # equal norms: log values differ only by rounding
def test_exact_power_law_recovers_factor(factor, depth, scale):
    fit = analysis.fit_factor(_norms(factor, depth, scale))
    assert fit.factor == pytest.approx(factor, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)
    assert fit.n_excluded == 0


@pytest.mark.parametrize(
    ("depth", "window"),
    [
        (1, None),
        (2, (1, 2)),
        (4, (1, 4)),
        (5, (2, 4)),
        (10, (2, 9)),
        (40, (7, 34)),
        (100, (16, 85)),
    ],
)
def test_fit_window_drops_15_percent_each_side(depth, window):
    if window is None:
        assert analysis.fit_factor([1.0] * depth).fit_layers is None
    else:
        assert analysis.fit_window(depth, 0.15) == window
        assert analysis.fit_factor(np.ones(depth)).fit_layers == window


def test_fit_skip_zero_uses_every_layer_and_window_keeps_two_layers():
    assert analysis.fit_window(10, 0.0) == (1, 10)
    assert analysis.fit_window(3, 0.49) == (1, 3)
    assert analysis.fit_window(6, 0.49) == (3, 4)


def test_outer_layers_do_not_enter_the_fit():
    norms = _norms(0.5, 20)
    norms[0], norms[-1] = 1e300, 1e-300  # outside the default window (layers 4..17)
    assert analysis.fit_factor(norms).factor == pytest.approx(0.5, rel=1e-12)
    assert analysis.fit_factor(norms, fit_skip=0.0).factor != pytest.approx(0.5, rel=0.1)


def test_zeros_and_non_finite_norms_are_left_out_and_counted():
    norms = _norms(0.6, 40)
    norms[6:10] = 0.0  # underflowed early layers (window starts at layer 7)
    norms[20] = np.inf
    norms[21] = np.nan
    fit = analysis.fit_factor(norms)
    assert fit.factor == pytest.approx(0.6, rel=1e-12)
    assert (fit.n_excluded, fit.n_used) == (6, 28 - 6)
    assert "6 zero or non-finite" in analysis.describe(fit)


def test_too_few_usable_norms_gives_unknown_not_a_crash():
    fit = analysis.fit_factor([0.0, 0.0, np.inf, 1.0, 0.0])  # window: layers 2..4
    assert math.isnan(fit.factor) and fit.n_used == 1 and fit.n_excluded == 2
    assert analysis.verdict(fit.factor) == "unknown"
    assert analysis.describe(fit).startswith("unknown: no factor (only 1 of 3")
    assert analysis.fit_factor([3.0]).reason == "fewer than two layers"
    summary = analysis.factor_summary([1.0], [1.0])
    assert summary["delta"] is None and summary["regime"] == "unknown"


def test_noisy_norms_have_r2_below_one_and_a_close_factor():
    rng = np.random.default_rng(0)
    norms = _norms(0.8, 50) * np.exp(rng.normal(0, 0.3, 50))
    fit = analysis.fit_factor(norms)
    assert 0.5 < fit.r2 < 1.0
    assert fit.factor == pytest.approx(0.8, rel=0.02)


def test_spread_is_measured_between_the_first_and_last_fitted_layer():
    fit = analysis.fit_factor(_norms(0.1, 20))  # window 4..17: 13 layers apart
    assert fit.fit_layers == (4, 17)
    assert fit.spread_decades == pytest.approx(-13.0, rel=1e-12)


def test_huge_factor_does_not_overflow():
    norms = np.array([1e300, 1e150, 1.0, 1e-150, 1e-300])  # grows towards the input
    fit = analysis.fit_factor(norms, fit_skip=0.0)
    assert fit.factor > 1e100 and math.isfinite(fit.factor)
    assert analysis.verdict(fit.factor) == "exploding"


@pytest.mark.parametrize(
    ("factor", "tol", "expected"),
    [
        (0.94, 0.05, "vanishing"),
        (0.96, 0.05, "stable"),
        (1.0, 0.05, "stable"),
        (1.04, 0.05, "stable"),
        (1.06, 0.05, "exploding"),
        (1.06, 0.1, "stable"),
        (math.nan, 0.05, "unknown"),
        (None, 0.05, "unknown"),
        (math.inf, 0.05, "exploding"),
    ],
)
def test_verdict(factor, tol, expected):
    assert analysis.verdict(factor, tol) == expected


def test_sentence_matches_the_lecture_wording():
    fit = analysis.fit_factor(_norms(0.63, 40))
    assert analysis.describe(fit) == (
        "vanishing: the gradient shrinks x0.63 per layer, 10^-7.8 from layer 40 to layer 1"
    )
    grows = analysis.describe(analysis.fit_factor(_norms(1.3, 10)))
    assert grows == "exploding: the gradient grows x1.3 per layer, 10^+1.0 from layer 10 to layer 1"
    assert analysis.describe(analysis.fit_factor(np.ones(8))).startswith(
        "stable: the gradient changes x1 per layer, 10^+0.0"
    )


def test_factor_summary_fits_delta_and_weight_norms_separately():
    summary = analysis.factor_summary(_norms(0.5, 12), _norms(0.7, 12), tol=0.05)
    assert summary["delta"] == pytest.approx(0.5) and summary["weight"] == pytest.approx(0.7)
    assert summary["regime"] == "vanishing" and summary["fit_layers"] == [2, 11]
    assert summary["r2"] == pytest.approx(1.0)
    assert summary["sentence"].startswith("vanishing: the gradient shrinks x0.5 per layer")


def test_fit_factors_per_step():
    matrix = np.stack([_norms(0.5, 10), _norms(2.0, 10), np.zeros(10)])
    factors = analysis.fit_factors(matrix)
    assert factors[:2] == pytest.approx([0.5, 2.0]) and np.isnan(factors[2])


def test_differing_keys_across_configs():
    configs = [
        {"name": "a", "model": {"norm": "none", "depth": 10}, "seed": 0},
        {"name": "b", "model": {"norm": "batch", "depth": 10}, "seed": 0},
        {"name": "c", "model": {"norm": "layer", "depth": 10}, "seed": 1, "extra": 1},
    ]
    assert analysis.differing_keys(configs) == ["model.norm", "seed", "extra"]
    assert analysis.flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}
    assert analysis.short_key("model.init.weight_scale") == "weight_scale"
    assert analysis.differing_keys([configs[0]]) == []


def test_narrow_layers_get_the_mean_field_caveat_once():
    norms = _norms(0.6, 12)
    narrow = analysis.factor_summary(norms, norms, width=16)
    assert narrow["caveat"] == "width 16 < 32: mean-field theory assumes wide layers"
    assert narrow["sentence"] == analysis.describe(analysis.fit_factor(norms)) + (
        "; width 16 < 32: mean-field theory assumes wide layers"
    )
    for width in (32, 128, None):  # wide enough, or not known
        wide = analysis.factor_summary(norms, norms, width=width)
        assert wide["caveat"] is None and "mean-field" not in wide["sentence"]
    unknown = analysis.factor_summary([1.0], [1.0], width=8)  # no factor: nothing to caveat
    assert unknown["caveat"] is None and unknown["sentence"].startswith("unknown")


def test_order_key_sorts_numbers_numerically_before_text():
    flats = [{"lr": 10.149}, {"lr": 2.0}, {"lr": "auto"}, {"lr": 14}, {}, {"lr": 6.0}]
    ordered = sorted(flats, key=lambda flat: analysis.order_key(flat, ["lr"]))
    assert [flat.get("lr") for flat in ordered] == [2.0, 6.0, 10.149, 14, "auto", None]


def test_shortest_suffixes_are_unambiguous_and_end_at_the_whole_key():
    keys = ["model.batchnorm.eps", "model.layernorm.eps", "model.depth"]
    assert analysis.shortest_suffixes(keys, ()) == ["batchnorm.eps", "layernorm.eps", "depth"]
    # a key that is another's suffix stops at itself (no endless search)
    assert analysis.shortest_suffixes(["a.b", "b"], ()) == ["a.b", "b"]
    # clashing with a key outside the list or with a reserved name also lengthens it
    assert analysis.shortest_suffixes(["train.momentum"], {"model.batchnorm.momentum"}) == [
        "train.momentum"
    ]
    assert analysis.shortest_suffixes(["data.seed"], (), reserved=("seed",)) == ["data.seed"]
