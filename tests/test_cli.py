"""CLI: every command's --help, outputs, and every class of bad input (exit 2, one line)."""

import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from gradlab.cli import cli

COMMANDS = ["run", "config", "theory", "summary", "plot", "sweep", "report"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_for_every_command(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Usage: cli " in result.output or "Usage: gradlab " in result.output


def test_top_level_help_lists_commands_and_does_not_import_matplotlib():
    code = (
        "import sys; from click.testing import CliRunner; from gradlab.cli import cli; "
        "r = CliRunner().invoke(cli, ['--help']); print(r.output); "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout


def test_python_dash_m_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "gradlab", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "gradlab" in result.stdout


def test_run_prints_table_sentence_and_machine_line(write_config, tmp_path):
    result = invoke("run", write_config(), "--out", tmp_path / "r", "--quiet")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[0] == "layer"
    assert [line.split()[0] for line in lines[1:7]] == ["1", "2", "3", "4", "5", "6"]
    last = dict(item.split("=", 1) for item in lines[-1].split())
    assert last["status"] == "completed"
    assert last["verdict"] in ("vanishing", "stable", "exploding")
    assert float(last["M_init"]) > 0
    assert last["path"] == str(tmp_path / "r")
    assert f"at init: {last['verdict']}: the gradient " in result.output
    assert f"at step 20: {last['verdict_final']}: the gradient " in result.output
    summary = yaml.safe_load((tmp_path / "r" / "summary.json").read_text())
    assert last["verdict"] == summary["regime"]["init"]
    assert last["verdict_final"] == summary["regime"]["final"]
    assert last["M_init"] == format(summary["gradient_factor"]["init"]["delta"], ".4g")


def test_run_set_and_seed_reach_the_config(write_config, tmp_path):
    out = tmp_path / "r"
    result = invoke(
        "run", write_config(), "--out", out, "-q", "--set", "model.depth=3", "--seed", "7"
    )
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["model"]["depth"] == 3 and resolved["seed"] == 7


def test_run_existing_directory_is_exit_2_unless_force(write_config, tmp_path):
    config = write_config()
    assert invoke("run", config, "--out", tmp_path / "r", "-q").exit_code == 0
    again = invoke("run", config, "--out", tmp_path / "r", "-q")
    assert again.exit_code == 2 and "--force" in again.output
    assert invoke("run", config, "--out", tmp_path / "r", "-q", "--force").exit_code == 0


def test_config_prints_the_fully_resolved_config(write_config):
    result = invoke("config", write_config(), "--set", "train.lr=0.5")
    assert result.exit_code == 0
    resolved = yaml.safe_load(result.output)
    assert resolved["train"]["lr"] == 0.5
    assert resolved["model"]["init"] == {"scheme": "normal", "weight_scale": 1.0, "bias_scale": 0.0}
    assert resolved["analysis"] == {
        "fit_skip": 0.15,
        "tol": 0.05,
        "spectrum": {"enabled": False, "samples": 4, "at": "init"},
    }


BAD_FILES = {
    "unknown key": ("model:\n  activaton: tanh\n", ["model.activaton", "did you mean"]),
    "unknown choice": ("model:\n  norm: btach\n", ["model.norm", "did you mean 'batch'"]),
    "wrong type": ("model:\n  depth: deep\n", ["model.depth"]),
    "bool for int": ("model:\n  depth: true\n", ["model.depth"]),
    "depth < 1": ("model:\n  depth: 0\n", ["model.depth"]),
    "lr <= 0": ("train:\n  lr: -0.1\n", ["train.lr"]),
    "batch > n_train": (
        "data:\n  n_train: 16\ntrain:\n  batch_size: 32\n",
        ["train.batch_size"],
    ),
    "batchnorm batch 1": (
        "model:\n  norm: batch\ntrain:\n  batch_size: 1\n",
        ["train.batch_size", "BatchNorm"],
    ),
    "yaml syntax": ("model:\n  depth: [1, 2\n", ["line"]),
    "not a mapping": ("- 1\n- 2\n", ["mapping"]),
    "unsafe tag": ("name: !!python/object/apply:os.system ['echo hi']\n", ["python/object"]),
    "duplicate key": ("train:\n  lr: 0.1\n  lr: 0.2\n", ["line 3", "train.lr", "twice"]),
    "escaping name": ("name: ../evil\n", ["name"]),
    "absolute name": ("name: /tmp/evil\n", ["name"]),
}


@pytest.mark.parametrize("command", ["run", "config"])
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_config_is_one_line_exit_2_and_writes_nothing(case, command, in_tmp):
    text, fragments = BAD_FILES[case]
    path = in_tmp / "bad.yaml"
    path.write_text(text)
    result = invoke(command, path)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert sorted(p.name for p in in_tmp.iterdir()) == ["bad.yaml"]  # nothing written


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--set", "train.lrr=0.1"], "did you mean 'lr'"),
        (["--set", "train.lr"], "train.lr"),
        (["--set", "model.activation=swish"], "model.activation"),
        (["--set", "train.batch_size=huge"], "train.batch_size"),
    ],
)
def test_bad_set_is_exit_2(args, fragment, write_config, in_tmp):
    result = invoke("run", write_config(), "-q", *args)
    assert result.exit_code == 2
    assert fragment in result.output and "\n" not in result.output.strip()
    assert not (in_tmp / "results").exists()


def test_missing_and_directory_config_are_exit_2(in_tmp):
    for path in (in_tmp / "nope.yaml", in_tmp):
        result = invoke("run", path)
        assert result.exit_code == 2 and "\n" not in result.output.strip()


def test_real_process_error_has_no_traceback(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  depht: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "gradlab", "run", str(tmp_path / "bad.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "did you mean 'depth'" in result.stderr


# ---- unwritable --out, theory options, a file given to the wrong command -------------------


def _unwritable_outs(tmp_path):
    """Paths root cannot write either: a folder under a regular file, and under /proc."""
    (tmp_path / "file").write_text("a regular file")
    return {
        "under a file": (tmp_path / "file" / "run", "file is a file, not a folder"),
        "under /proc": ("/proc/gradlab-test/run", "no folder can be created in /proc"),
    }


@pytest.mark.parametrize("case", ["under a file", "under /proc"])
def test_run_with_an_unwritable_out_is_one_line_exit_2(case, write_config, tmp_path):
    config = write_config()
    out, fragment = _unwritable_outs(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke("run", config, "--out", out, "-q")
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message and "Traceback" not in message, message
    assert f"cannot write the run directory {out}" in message and fragment in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root writes into a read-only (chmod 555) folder anyway; the /proc and "
    "under-a-file cases above cover root",
)
def test_run_into_a_read_only_folder_is_one_line_exit_2(write_config, tmp_path):
    config = write_config()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = invoke("run", config, "--out", locked / "run", "-q")
        assert result.exit_code == 2 and "Permission denied" in result.output
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_a_run_folder_that_cannot_be_written_is_removed_again(write_config, tmp_path, monkeypatch):
    """The folder is created, then its first file cannot be written (a read-only or full
    file system): one line, exit 2, and no empty run folder left behind."""
    from gradlab import atomic

    def refuse(path, binary=False):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(atomic, "atomic_writer", refuse)
    result = invoke("run", write_config(), "--out", tmp_path / "new" / "run", "-q")
    assert result.exit_code == 2, result.output
    assert "cannot write the run directory" in result.output
    assert "Read-only file system" in result.output
    assert not (tmp_path / "new" / "run").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--weight-scale", "nan"], "--weight-scale must be >= 0 (a finite number), got nan"),
        (["--weight-scale", "inf"], "--weight-scale must be >= 0 (a finite number), got inf"),
        (["--weight-scale", "-1"], "--weight-scale must be >= 0 (a finite number), got -1"),
        (
            ["--weight-scale", "1", "--bias-scale", "nan"],
            "--bias-scale must be >= 0 (a finite number)",
        ),
        (
            ["--weight-scale", "1", "--bias-scale", "-inf"],
            "--bias-scale must be >= 0 (a finite number)",
        ),
        (["--weight-scale", "1", "--q0", "nan"], "--q0 must be >= 0 (a finite number), got nan"),
        (["--weight-scale", "1", "--q0", "inf"], "--q0 must be >= 0 (a finite number), got inf"),
        (["--weight-scale", "1", "--tol", "nan"], "--tol must be > 0 (a finite number), got nan"),
        (["--weight-scale", "1", "--tol", "0"], "--tol must be > 0 (a finite number), got 0"),
        (["--weight-scale", "1e200"], "too large for the mean-field computation"),
    ],
)
def test_theory_refuses_non_finite_and_out_of_range_values(args, fragment):
    result = invoke("theory", *args)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message and fragment in message, message


def test_theory_still_accepts_zero_scales_and_zero_q0():
    result = invoke("theory", "--weight-scale", "0", "--q0", "0", "--activation", "relu")
    assert result.exit_code == 0, result.output
    assert "predicted factor M     0" in result.output


@pytest.mark.parametrize("command", ["run", "config"])
def test_a_sweep_spec_given_to_run_names_the_sweep_command(command, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: s\nbase: base.yaml\ngrid:\n  model.depth: [2, 3]\n")
    result = invoke(command, spec)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message
    assert f"{spec} is a sweep spec (it has 'base'/'grid')" in message
    assert "run it with `gradlab sweep`" in message
    assert "unknown key" not in message


def test_a_config_with_a_seeds_typo_is_not_taken_for_a_sweep_spec(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seeds: 3\n")
    result = invoke("run", path)
    assert result.exit_code == 2
    assert "seeds: unknown key" in result.output and "did you mean 'seed'" in result.output
