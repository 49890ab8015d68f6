"""What a run records about its BLAS, and the tools behind the tutorial's reproducibility notes."""

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import gradlab
from gradlab import blas

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
OPENBLAS = blas.blas_runtime()["kernel"] is not None
needs_openblas = pytest.mark.skipif(
    not OPENBLAS or platform.machine() not in ("x86_64", "AMD64"),
    reason="numpy's BLAS here is not an x86-64 OpenBLAS",
)


def load_script(name):
    """Import docs/NAME.py as a module."""
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runtime_in_subprocess(**variables):
    """blas_runtime() of a fresh interpreter with ``variables`` set (read by OpenBLAS at load)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENBLAS_")}
    env.update(variables)
    code = "import json, gradlab.blas; print(json.dumps(gradlab.blas.blas_runtime()))"
    output = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output)


@needs_openblas
@pytest.mark.parametrize(("coretype", "threads"), [("Haswell", "1"), ("Sandybridge", "2")])
def test_blas_runtime_reports_the_kernel_and_threads_openblas_runs(coretype, threads):
    info = runtime_in_subprocess(OPENBLAS_CORETYPE=coretype, OPENBLAS_NUM_THREADS=threads)
    assert info["kernel"] == coretype
    assert info["threads"] == int(threads)
    assert info["coretype_env"] == coretype
    assert "openblas" in info["library"].lower()
    assert info["version"][0].isdigit()


@needs_openblas
def test_blas_runtime_without_a_forced_coretype_says_unset():
    info = runtime_in_subprocess(OPENBLAS_NUM_THREADS="1")
    assert info["coretype_env"] is None
    assert info["kernel"]  # OpenBLAS's own pick for this CPU


def test_blas_runtime_without_openblas_reports_unknowns(monkeypatch):
    monkeypatch.setattr(blas, "_openblas_path", lambda: None)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert blas.blas_runtime() == {
        "library": None,
        "version": None,
        "kernel": None,
        "threads": None,
        "coretype_env": "Haswell",
    }


def test_describe_is_one_line_with_kernel_and_threads():
    info = {"library": "libopenblas.so", "version": "0.3.31", "kernel": "Haswell"}
    assert blas.describe({**info, "threads": 1}) == (
        "OpenBLAS 0.3.31 (libopenblas.so), kernel Haswell, 1 thread"
    )
    assert blas.describe({**info, "threads": 2}).endswith("kernel Haswell, 2 threads")
    unknown = dict.fromkeys(("library", "version", "kernel", "threads"))
    assert blas.describe(unknown) == "BLAS, kernel unknown, unknown threads"


def test_a_run_records_the_blas_it_ran_with(tmp_path, write_config):
    run = gradlab.run(write_config({"train.steps": 1}), out=tmp_path / "run")
    meta = json.loads((run.path / "meta.json").read_text())
    assert meta["blas"] == blas.blas_runtime()
    assert set(meta["blas"]) == {"library", "version", "kernel", "threads", "coretype_env"}


# docs/record_environment.py: the tutorial's "computed with" block


def write_meta(folder, kernel, threads):
    folder.mkdir(parents=True)
    blas_info = {"version": "0.3.31", "kernel": kernel, "threads": threads, "coretype_env": None}
    meta = {"gradlab": "0.1.0", "numpy": "2.4.6", "python": "3.11.7", "blas": blas_info}
    (folder / "meta.json").write_text(json.dumps(meta))


def test_environment_block_lists_each_environment_once_with_its_run_count(tmp_path):
    record = load_script("record_environment")
    write_meta(tmp_path / "a", "Haswell", 1)
    write_meta(tmp_path / "sweep" / "b", "Haswell", 1)
    write_meta(tmp_path / "c", "Haswell", 2)
    lines = record.environment_block(tmp_path).splitlines()
    assert lines[0].startswith("Computed on ")
    common = "gradlab 0.1.0, numpy 2.4.6, Python 3.11.7; OpenBLAS 0.3.31, kernel Haswell"
    assert lines[1:] == [
        f"- {common}, 1 thread, OPENBLAS_CORETYPE unset (2 runs)",
        f"- {common}, 2 threads, OPENBLAS_CORETYPE unset (1 runs)",
    ]


def test_replace_block_rewrites_only_between_the_markers(tmp_path):
    record = load_script("record_environment")
    text = f"before\n{record.BEGIN}\nold line\n{record.END}\nafter\n"
    updated = record.replace_block(text, "new line")
    assert updated == f"before\n{record.BEGIN}\nnew line\n{record.END}\nafter\n"
    assert record.replace_block(updated, "new line") == updated
    with pytest.raises(SystemExit, match="expected one"):
        record.replace_block("no markers\n", "new line")
    with pytest.raises(SystemExit, match="expected one"):
        record.replace_block(f"{record.END}\n{record.BEGIN}\n", "new line")


def test_the_tutorial_has_one_environment_block_filled_in():
    record = load_script("record_environment")
    text = (DOCS / "tutorial.md").read_text(encoding="utf-8")
    block = text.split(record.BEGIN)[1].split(record.END)[0]
    assert record.replace_block(text, block.strip("\n")) == text
    assert "kernel " in block and "numpy " in block


# docs/compare_runs.py: the spread table


def test_compare_runs_finds_identical_runs_identical_and_measures_a_perturbation(
    tmp_path, write_config
):
    compare = load_script("compare_runs")
    config = write_config()
    for folder in ("a", "b"):
        gradlab.run(config, out=tmp_path / folder / "small")
    header, _, row = compare.compare([tmp_path / "a", tmp_path / "b"])
    assert header.startswith("| run | folders | step 0 rows | last step rows |")
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:5] == ["small", "2", "identical", "identical", "completed"]
    # one value of the last step, changed in its 4th significant digit
    layers = tmp_path / "b" / "small" / "layers.csv"
    lines = layers.read_text().splitlines()
    last = lines[-1].split(",")
    last[2] = repr(float(last[2]) * (1 + 1e-4))
    layers.write_text("\n".join([*lines[:-1], ",".join(last)]) + "\n")
    cells = [
        cell.strip()
        for cell in compare.compare([tmp_path / "a", tmp_path / "b"])[2][1:-1].split("|")
    ]
    assert cells[2] == "identical"
    assert cells[3].startswith("1e-04 (weight_grad_norm ~")
    # a run only one folder holds is left out; one that two of three hold is compared
    gradlab.run(config, out=tmp_path / "a" / "only_here")
    (tmp_path / "c").mkdir()
    rows = compare.compare([tmp_path / "a", tmp_path / "b", tmp_path / "c"])[2:]
    assert [row.split("|")[1:3] for row in rows] == [[" small ", " 2 "]]


def test_spread_shows_equal_values_in_full_and_different_ones_as_a_range():
    compare = load_script("compare_runs")
    assert compare.spread([0.9424, 0.9424]) == "0.9424"
    assert compare.spread([0.822, 0.9424]) == "0.822 .. 0.9424 (1e-01)"
    assert compare.spread([None, None]) == "-"


# docs/make_figures.sh: arguments are checked before anything runs


def test_make_figures_rejects_an_unknown_option():
    result = subprocess.run(
        [str(DOCS / "make_figures.sh"), "--bogus"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_make_figures_does_not_overwrite_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run(
        [str(DOCS / "make_figures.sh"), "--runs-only", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "not overwriting" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"
