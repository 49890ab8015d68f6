"""gradlab.formatting: the one number formatter (exact for files, rounded for people)."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradlab.formatting import config_text, number_text


@given(st.floats(allow_nan=False))
def test_exact_text_reads_back_bit_for_bit(value):
    text = number_text(value)
    assert float(text) == value and math.copysign(1, float(text)) == math.copysign(1, value)
    assert text == repr(value)  # the shortest such text: the bytes of every run CSV


@pytest.mark.parametrize(
    ("value", "spec", "missing", "text"),
    [
        (0.1, None, "", "0.1"),
        (np.float32(0.1), None, "", "0.10000000149011612"),  # float32 widened exactly
        (np.float64(1e-05), None, "", "1e-05"),
        (7, None, "", "7"),
        (np.int64(12), None, "", "12"),
        (math.nan, None, "", "nan"),
        (-math.inf, None, "", "-inf"),
        (None, None, "", ""),
        (0.63451234, ".4g", "", "0.6345"),
        (1.0, ".4g", "", "1"),
        (math.nan, ".4g", "", "nan"),
        (3.14159e-7, ".3e", "nan", "3.142e-07"),
        (None, ".3e", "nan", "nan"),
        (None, ".3g", "n/a", "n/a"),
        ("relu", ".3g", "n/a", "n/a"),  # not a number: the reader's missing text
        (20, ".0f", "", "20"),
    ],
)
def test_number_text(value, spec, missing, text):
    assert number_text(value, spec, missing) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (4.0, "4"),
        (10.149, "10.149"),
        (1e-05, "1e-05"),
        (0.1 + 0.2, "0.30000000000000004"),
        (4, "4"),
        (True, "true"),
        (False, "false"),
        ("full", "full"),
        (None, ""),
    ],
)
def test_config_text_shows_values_as_given(value, text):
    assert config_text(value) == text


def test_callers_format_through_number_text(monkeypatch):
    """The CLI, the summary table and figure labels all go through number_text: replacing
    it changes what each of them prints."""
    from gradlab import formatting, report, run_report
    from gradlab.figures import common

    calls = []

    def spy(value, spec=None, missing=""):
        calls.append(spec)
        return "X"

    for module in (run_report, report, common):
        monkeypatch.setattr(module, "number_text", spy)
    assert run_report.number(1.5) == "X" and report._measured_text(1.5) == "X"
    assert common.fmt(1.5, ".4g") == "X"
    assert calls == [".3g", ".4g", ".4g"]
    assert formatting.number_text is not spy  # the module itself was left alone
