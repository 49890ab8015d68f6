"""`gradlab summary` (table, csv, json) and `gradlab theory`."""

import csv
import io
import json

import pytest
from click.testing import CliRunner

from gradlab import theory
from gradlab.cli import cli
from gradlab.config import config_from_dict
from gradlab.report import summarize
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
