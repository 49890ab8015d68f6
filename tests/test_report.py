"""`gradlab summary` (table, csv, json, --group-by-seed) and `gradlab theory`."""

import csv
import io
import json
import math
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from click.testing import CliRunner

from gradlab import report, theory
from gradlab.cli import cli
from gradlab.config import config_from_dict
from gradlab.report import summarize
from gradlab.results import read_run, to_jsonable
from gradlab.runner import run_config


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_config):
    """Three small runs differing in model.norm, plus one diverged run."""
    root = tmp_path_factory.mktemp("runs")
    for norm in ("none", "batch", "layer"):
        config = config_from_dict(small_config, overrides=[f"model.norm={norm}"])
        run_config(config, out=root / f"norm={norm}")
    diverged = config_from_dict(
        small_config,
        overrides=["model.norm=layer", "train.lr=1e300", "model.activation=relu"],
    )
    run_config(diverged, out=root / "diverged")
    return root


def test_table_has_one_row_per_run_and_the_differing_keys(runs):
    result = invoke("summary", runs)
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == [
        "name",
        "status",
        "activation",
        "norm",
        "lr",
        "M_init",
        "M_final",
        "M_theory",
        "verdict",
        "verdict_final",
        "train_loss",
        "test_loss",
        "test_accuracy",
    ]
    assert len(rows) == 4
    statuses = sorted(row.split()[1] for row in rows)
    assert statuses == ["completed", "completed", "completed", "diverged"]


def test_csv_reads_back_with_full_keys_and_numbers(runs):
    result = invoke("summary", runs, "--format", "csv")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [row["model.norm"] for row in rows] == ["layer", "batch", "layer", "none"]
    completed = [row for row in rows if row["status"] == "completed"]
    for row in completed:
        assert 0 < float(row["M_init"]) < 10 and float(row["test_loss"]) >= 0
        assert row["verdict"] in ("vanishing", "stable", "exploding")
        assert (runs / row["path"].split("/")[-1] / "meta.json").exists()
    none_row = next(row for row in rows if row["model.norm"] == "none")
    expected = theory.predict("sigmoid", 1.0, norm="none", q0=1.0)  # checked loosely below
    assert float(none_row["M_theory"]) == pytest.approx(expected.factor, rel=0.2)


def test_json_matches_summary_files(runs):
    rows = json.loads(invoke("summary", runs, "--format", "json").output)
    for row in rows:
        summary = json.loads((runs / row["path"].split("/")[-1] / "summary.json").read_text())
        assert row["M_init"] == summary["gradient_factor"]["init"]["delta"]
        assert row["status"] == summary["status"]
        assert row["test_loss"] == summary["final"]["test_loss"]


def test_single_run_has_no_varying_columns(runs):
    text = summarize([runs / "norm=none"], "table")
    assert text.splitlines()[0].split()[:3] == ["name", "status", "M_init"]


def test_no_runs_and_missing_path_are_exit_2(tmp_path):
    result = invoke("summary", tmp_path)
    assert result.exit_code == 2 and "no gradlab runs found" in result.output
    result = invoke("summary", tmp_path / "missing")
    assert result.exit_code == 2 and "no such file or directory" in result.output


def test_unreadable_config_does_not_crash_the_summary(runs, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text('{"status": "completed"}')
    (broken / "config.yaml").write_text("name: [unclosed")
    result = invoke("summary", broken)
    assert result.exit_code == 0 and "completed" in result.output


def test_theory_command_prints_prediction():
    result = invoke("theory", "--activation", "sigmoid", "--weight-scale", "4")
    assert result.exit_code == 0
    prediction = theory.predict("sigmoid", 4.0)
    assert f"predicted factor M     {prediction.factor:.6g}" in result.output
    assert f"chi_1                  {prediction.chi_1:.6g}" in result.output
    assert "regime                 vanishing" in result.output
    assert "critical weight scale  10.149" in result.output


def test_theory_command_layer_and_batch_norm():
    layer = invoke("theory", "--weight-scale", "4", "--norm", "layer")
    assert f"{theory.predict('sigmoid', 4.0, norm='layer').factor:.6g}" in layer.output
    batch = invoke("theory", "--weight-scale", "4", "--norm", "batch", "--batch-size", "2")
    assert batch.exit_code == 0 and "regime                 unknown" in batch.output
    bad = invoke("theory", "--weight-scale", "-1")
    assert bad.exit_code == 2 and "must be >= 0" in bad.output
    typo = invoke("theory", "--weight-scale", "1", "--activation", "sigmod")
    assert typo.exit_code == 2


def test_rows_are_ordered_by_the_varying_values_numerically(tmp_path, small_config):
    for depth in (10, 2, 3):  # folder names sort as 10, 2, 3
        config = config_from_dict(small_config, overrides=[f"model.depth={depth}", "train.steps=0"])
        run_config(config, out=tmp_path / f"depth={depth}")
    rows = list(csv.DictReader(io.StringIO(summarize([tmp_path], "csv"))))
    assert [row["model.depth"] for row in rows] == ["2", "3", "10"]


def _run_small(small_config, out, *overrides, name=None):
    config = config_from_dict(
        {**small_config, "name": name or small_config["name"]}, overrides=list(overrides)
    )
    return run_config(config, out=out)


def _kill(run_path):
    """Leave what kill -9 leaves: meta.json still says running, no summary.json."""
    meta = json.loads((run_path / "meta.json").read_text())
    (run_path / "meta.json").write_text(json.dumps({**meta, "status": "running"}))
    (run_path / "summary.json").unlink()


def test_table_prints_config_values_as_given_and_results_to_4_digits(tmp_path, small_config):
    for scale in (4, 10.149, 1e-05):
        _run_small(small_config, tmp_path / f"s{scale}", f"model.init.weight_scale={scale}")
    header, *lines = summarize([tmp_path], "table").splitlines()
    assert header.split()[2] == "weight_scale"
    assert [line.split()[2] for line in lines] == ["1e-05", "4", "10.149"]
    rows = json.loads(summarize([tmp_path], "json"))
    for line, row in zip(lines, rows, strict=True):
        assert line.split()[3] == format(row["M_init"], ".4g")  # the rule `gradlab run` prints
    csv_rows = list(csv.DictReader(io.StringIO(summarize([tmp_path], "csv"))))
    assert [row["model.init.weight_scale"] for row in csv_rows] == ["1e-05", "4", "10.149"]
    assert [float(row["M_init"]) for row in csv_rows] == [row["M_init"] for row in rows]


def test_table_names_a_key_in_full_where_its_last_part_is_ambiguous(tmp_path, small_config):
    for momentum in (0.5, 0.9):  # train.momentum; model.batchnorm.momentum exists as well
        _run_small(
            small_config,
            tmp_path / f"m{momentum}",
            f"train.momentum={momentum}",
            f"model.depth={int(momentum * 10)}",
            "train.steps=0",
        )
    header = summarize([tmp_path], "table").splitlines()[0].split()
    assert header[2:4] == ["depth", "train.momentum"]
    assert "momentum" not in header


def test_csv_loads_with_genfromtxt_and_csv_alike(tmp_path, small_config):
    """Names and paths with commas and '#', and a column of text and integers (batch_size)."""
    root = tmp_path / "a#b,c"
    for batch_size in (16, "full"):
        for depth in (3, 4):
            name = f"batch_size={batch_size},depth={depth}"
            _run_small(
                small_config,
                root / name,
                f"train.batch_size={batch_size}",
                f"model.depth={depth}",
                "train.steps=0",
                name=name,
            )
    text = invoke("summary", root, "--format", "csv").output
    (tmp_path / "summary.csv").write_text(text)
    table = np.genfromtxt(
        tmp_path / "summary.csv", names=True, delimiter=",", dtype=None, encoding=None
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    header = text.splitlines()[0].split(",")
    assert list(table.dtype.names) == [column.replace(".", "") for column in header]
    assert table.shape == (len(rows),) == (4,)
    assert '"' not in text  # nothing quoted: both readers see the same cells
    for record, row in zip(table, rows, strict=True):
        for column in header:
            value = record[column.replace(".", "")]
            if isinstance(value, float):
                assert float(row[column]) == value or (math.isnan(value) and row[column] == "nan")
            else:
                assert str(value) == row[column], column
        assert (Path(unquote(row["path"])) / "meta.json").is_file()
        assert unquote(row["name"]) == Path(unquote(row["path"])).name
    assert list(table["trainbatch_size"]) == ["full", "16", "full", "16"]  # text first
    assert list(table["modeldepth"]) == [3, 3, 4, 4]
    assert np.isnan(table["test_accuracy"]).all()  # regression: no accuracy, a float nan
    runs = json.loads(invoke("summary", root, "--format", "json").output)
    assert list(table["M_init"]) == [run["M_init"] for run in runs]


def test_killed_run_gets_m_init_and_theory_from_the_functions_that_write_summary_json(
    tmp_path, small_config
):
    run = _run_small(
        small_config,
        tmp_path / "killed",
        "data.input_scale=2.5",  # q0 far from 1: the theory depends on the data
        "model.activation=linear",
    )
    written = run.summary
    _kill(run.path)
    with (run.path / "layers.csv").open("a") as handle:
        handle.write("25,1,0.5")  # a row cut by the kill
    factor, recomputed = report._from_files(read_run(run.path))
    init = dict(written["gradient_factor"]["init"])
    assert init.pop("step") == 0
    assert json.loads(json.dumps(to_jsonable(factor))) == init
    assert json.loads(json.dumps(to_jsonable(recomputed))) == written["theory"]
    assert written["theory"]["q0"] == pytest.approx(6.25, rel=0.2)
    result = invoke("summary", run.path, "--format", "json")
    (row,) = json.loads(result.output)
    assert row["status"] == "running/incomplete"
    assert row["M_init"] == init["delta"] and row["verdict"] == init["regime"]
    assert row["M_theory"] == written["theory"]["factor"]
    assert row["M_final"] is None and row["verdict_final"] == "unknown"
    table = invoke("summary", run.path).output.splitlines()[1].split()
    assert table[1:4] == [
        "running/incomplete",
        format(init["delta"], ".4g"),
        format(written["theory"]["factor"], ".4g"),
    ]


def test_killed_run_without_a_complete_step_0_stays_empty(tmp_path, small_config):
    run = _run_small(small_config, tmp_path / "killed", "train.steps=0")
    _kill(run.path)
    lines = (run.path / "layers.csv").read_text().splitlines()
    (run.path / "layers.csv").write_text("\n".join(lines[:-1]) + "\n")  # one layer missing
    (row,) = json.loads(summarize([run.path], "json"))
    assert row["status"] == "running/incomplete"
    assert row["M_init"] is None and row["M_theory"] is None and row["verdict"] == "unknown"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, small_config):
    """Two points (depth 3, 5) x three seeds; the run of depth 5, seed 2 killed."""
    root = tmp_path_factory.mktemp("seeded")
    for depth in (5, 3):
        for seed in (2, 0, 1):
            _run_small(
                small_config,
                root / f"depth={depth},seed={seed}",
                f"model.depth={depth}",
                f"seed={seed}",
                "train.steps=4",
                "log.every=2",
            )
    _kill(root / "depth=5,seed=2")
    return root


def test_group_by_seed_gives_mean_std_and_count_per_point(seeded):
    runs = json.loads(summarize([seeded], "json"))
    points = json.loads(invoke("summary", seeded, "--format", "json", "--group-by-seed").output)
    assert [point["model.depth"] for point in points] == [3, 5]
    assert all("seed" not in point for point in points)
    for point in points:
        members = [run for run in runs if run["model.depth"] == point["model.depth"]]
        assert point["seeds"] == [0, 1, 2] and point["count"] == 3
        for column in report.MEASURED:
            values = [run[column] for run in members if run[column] is not None]
            assert point[f"{column}_count"] == len(values)
            if not values:
                assert point[f"{column}_mean"] is None and point[f"{column}_std"] is None
                continue
            assert point[f"{column}_mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert point[f"{column}_std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    depth3, depth5 = points
    assert depth3["status"] == "completed" and depth3["M_final_count"] == 3
    assert depth5["status"] == "completed:2 running/incomplete:1"
    assert depth5["M_init_count"] == 3 and depth5["M_final_count"] == 2


def test_group_by_seed_table_and_csv(seeded):
    points = json.loads(summarize([seeded], "json", group_by_seed=True))
    header, *lines = invoke("summary", seeded, "--group-by-seed").output.splitlines()
    assert header.split()[:3] == ["depth", "count", "status"]
    assert len(lines) == 2 and lines[0].split()[:2] == ["3", "3"]
    mean, std = points[0]["M_init_mean"], points[0]["M_init_std"]
    assert f"{mean:.4g} ± {std:.2g}" in lines[0]
    assert "(2/3)" in lines[1]  # M_final: the killed seed has none
    text = invoke("summary", seeded, "--format", "csv", "--group-by-seed").output
    (Path(seeded) / "grouped.csv").write_text(text)
    table = np.genfromtxt(
        Path(seeded) / "grouped.csv", names=True, delimiter=",", dtype=None, encoding=None
    )
    assert list(table["M_init_mean"]) == [point["M_init_mean"] for point in points]
    assert list(table["M_final_count"]) == [3, 2]
    assert list(table["seeds"]) == ["0 1 2", "0 1 2"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [float(row["M_init_std"]) for row in rows] == [p["M_init_std"] for p in points]
