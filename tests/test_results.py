"""Reading run directories back: CSV columns (fast and fallback parsers agree), lazy loading."""

import math
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from gradlab import csv_files, results
from gradlab.results import RUN_FILES, read_csv_columns, read_run

COLUMNS = ("step", "a", "b")
TRICKY = [
    5e-324,  # the smallest subnormal
    1.2345e-310,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -0.0,
    0.1,
    1 / 3,
    math.inf,
    -math.inf,
    math.nan,
    123456789.123456789,
]


def _write(tmp_path, lines, name="x.csv"):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _slow(path, columns, monkeypatch):
    """read_csv_columns with the numpy fast path switched off."""
    with monkeypatch.context() as patch:
        patch.setattr(csv_files, "_numeric_table", lambda body, width: None)
        return read_csv_columns(path, columns)


def _assert_columns_equal(a, b):
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == np.float64
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        assert (np.signbit(a[name]) == np.signbit(b[name])).all(), name


def test_fast_parser_reads_every_float_bit_for_bit(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    values = TRICKY + (rng.standard_normal(200) * 10.0 ** rng.integers(-300, 300, 200)).tolist()
    lines = ["step,a,b"] + [f"{i},{v!r},{-v!r}" for i, v in enumerate(values)]
    path = _write(tmp_path, lines)
    fast = read_csv_columns(path, COLUMNS)
    assert csv_files._numeric_table("1,2,3\n", 3) is not None  # the fast path is the one used
    _assert_columns_equal(fast, _slow(path, COLUMNS, monkeypatch))
    np.testing.assert_array_equal(fast["a"], np.array(values))


@pytest.mark.parametrize(
    "lines, expected_a",
    [
        (["step,a,b", "0,1.5,2", "1,,3"], [1.5, math.nan]),  # an empty cell
        (["step,a,b", "0,1.5,2", "1,2.5", "2,3.5,4"], [1.5, 3.5]),  # a short row is skipped
        (["step,a,b"], []),  # a header only
    ],
)
def test_rows_the_fast_parser_refuses_are_read_like_before(
    tmp_path, monkeypatch, lines, expected_a
):
    path = _write(tmp_path, lines)
    data = read_csv_columns(path, COLUMNS)
    np.testing.assert_array_equal(data["a"], expected_a)
    _assert_columns_equal(data, _slow(path, COLUMNS, monkeypatch))


def test_a_cell_that_is_not_a_number_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("step,a\n0,1.5\n1,zz\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"^x\.csv unreadable: could not convert .*'zz'$"):
        read_csv_columns(path, COLUMNS)


def test_a_trailing_partial_row_and_missing_columns(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("step,a\n0,1.5\n1,2.5\n2,3.", encoding="utf-8")  # killed mid-write
    data = read_csv_columns(path, COLUMNS)
    np.testing.assert_array_equal(data["a"], [1.5, 2.5])
    assert np.isnan(data["b"]).all() and data["b"].shape == (2,)
    data["b"][0] = 7.0  # each missing column is its own array
    assert np.isnan(read_csv_columns(path, COLUMNS)["b"]).all()
    assert read_csv_columns(tmp_path / "absent.csv", COLUMNS)["a"].shape == (0,)


def test_read_run_parses_the_csv_files_only_when_asked(write_config, tmp_path, monkeypatch):
    import gradlab

    run = gradlab.run(write_config(), out=tmp_path / "run")
    expected = run.layers["weight_grad_norm"].copy()

    def refuse(path, columns):
        raise AssertionError(f"parsed {path.name}")

    monkeypatch.setattr(results, "read_csv_columns", refuse)
    again = read_run(run.path)
    assert again.status == "completed" and again.summary["name"] == "small"
    with pytest.raises(AssertionError, match=r"parsed layers\.csv"):
        _ = again.layers
    monkeypatch.undo()
    np.testing.assert_array_equal(again.layers["weight_grad_norm"], expected)
    assert again.layers is again.layers  # parsed once


@pytest.fixture
def umask(request):
    """Run the test under the umask given as its parameter (restored afterwards)."""
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


@pytest.mark.parametrize("umask", [0o022, 0o027], indirect=True)
def test_every_file_gradlab_writes_follows_the_umask(umask, tmp_path):
    """Run directories, the sweep folder, figures: 0666 and 0777 less the umask (mkstemp's
    0600 must not survive the rename of an atomically written file)."""
    from click.testing import CliRunner

    from gradlab.cli import cli
    from gradlab.plots import plot_paths

    spec = {
        "name": "modes",
        "config": {
            "data": {"n_train": 64, "n_test": 32, "input_dim": 4},
            "model": {"depth": 3, "width": 8},
            "train": {"steps": 3, "batch_size": 16, "checkpoint_every": 2},  # every file
            "analysis": {"spectrum": {"enabled": True, "samples": 2}},  # spectrum.csv too
        },
        "seeds": [0, 1],
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    root = tmp_path / "sweep"
    result = CliRunner().invoke(cli, ["sweep", str(spec_path), "--out", str(root), "-j", "2"])
    assert result.exit_code == 0, result.output
    written, _, _ = plot_paths([root])
    assert written and all(path.is_relative_to(root) for path in written)

    files = sorted(p for p in root.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"sweep.json", *RUN_FILES} <= names and any(n.endswith(".png") for n in names)
    assert not [p for p in files if p.name.endswith(".tmp")]
    expected_file, expected_dir = 0o666 & ~umask, 0o777 & ~umask
    modes = {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert {path: mode for path, mode in modes.items() if mode != expected_file} == {}
    folders = [p for p in root.rglob("*") if p.is_dir()]
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {
        str(p): oct(expected_dir) for p in folders
    }


def test_atomic_writer_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), results.atomic_writer(path) as handle:
        handle.write("half of the new")
        raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    with results.atomic_writer(path, binary=True) as handle:
        handle.write(b"new")
    assert path.read_bytes() == b"new"


def test_read_run_names_the_files_it_cannot_parse(tmp_path):
    """A damaged run is read, not raised on: problems say which file, ``unreadable`` lists
    meta.json / config.yaml (what a sweep re-runs), read_meta gives {}."""
    (tmp_path / "meta.json").write_text("[1, 2]")  # JSON, but not an object
    (tmp_path / "config.yaml").write_text("model: [unclosed")
    (tmp_path / "summary.json").write_text('{"name": ')
    run = read_run(tmp_path)
    assert run.unreadable == ["meta.json", "config.yaml"]
    assert [problem.split(":")[0] for problem in run.problems] == [
        "meta.json unreadable",
        "config.yaml unreadable",
        "summary.json unreadable",
    ]
    assert (run.status, run.config, run.summary) == ("unknown", {}, None)
    assert results.read_meta(tmp_path) == {}
    (tmp_path / "meta.json").write_text('{"status": "completed"}')
    (tmp_path / "config.yaml").write_text("name: x\n")
    assert read_run(tmp_path).unreadable == []
    assert results.read_meta(tmp_path) == {"status": "completed"}
    assert results.read_meta(tmp_path / "missing") == {}


def test_only_results_names_the_files_of_a_run_directory():
    """One owner per file format: no other module builds the path of a run's files (it asks
    results.read_run / read_meta / RunWriter instead)."""
    package = Path(results.__file__).parent
    names = "|".join(re.escape(name) for name in RUN_FILES)
    pattern = re.compile(rf'/ "({names})"')  # e.g. path / "meta.json"
    offenders = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if path.name != "results.py" and pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
