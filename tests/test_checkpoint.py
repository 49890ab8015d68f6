"""Checkpoints, params.npz and resuming: a resumed run writes the files of a run never stopped."""

import json
import os
import random
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import gradlab
from gradlab import checkpoint, liveness
from gradlab.cli import cli
from gradlab.config import config_from_dict, load_config
from gradlab.data import make_dataset
from gradlab.engine import MLP, mse
from gradlab.engine.optim import make_optimizer
from gradlab.errors import GradlabError
from gradlab.results import RunWriter, read_run
from gradlab.resume import resume_run
from gradlab.runner import build_model, run_config

TIMES = ("started_at", "ended_at", "wall_time_s")
CHECKPOINTED = {"train.checkpoint_every": 3, "log.every": 2, "log.eval_every": 4}


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=False)


def files_of(path):
    """Every file of a run directory as bytes; meta.json as a dict without its times, the
    pid of the process that ran it and its record of resumptions."""
    files = {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}
    meta = json.loads(files.pop("meta.json"))
    for key in (*TIMES, "pid", "resumes"):  # the process and its times
        meta.pop(key, None)
    return files, meta


def assert_same_run(resumed, uninterrupted):
    files, meta = files_of(resumed)
    expected_files, expected_meta = files_of(uninterrupted)
    assert sorted(files) == sorted(expected_files)
    for name, content in expected_files.items():
        assert files[name] == content, name
    assert meta == expected_meta


def _interrupt():
    raise KeyboardInterrupt


def stop_after_step(monkeypatch, step, stop=_interrupt):
    """Make a run in this process call ``stop`` right after the rows of ``step`` are flushed:
    before the checkpoint of that step, as a kill may. The default raises KeyboardInterrupt
    (the runner marks the run interrupted)."""
    log_metrics, flush = RunWriter.log_metrics, RunWriter.flush

    def logging(self, row):
        self.last_step = row["step"]
        log_metrics(self, row)

    def flushing(self):
        flush(self)
        if getattr(self, "last_step", -1) >= step:
            stop()

    monkeypatch.setattr(RunWriter, "log_metrics", logging)
    monkeypatch.setattr(RunWriter, "flush", flushing)


# every optimizer and every norm (the kill -9 test below adds sgd, momentum, adam + batch)
@pytest.mark.parametrize(
    ("optimizer", "norm", "width"),
    [
        ("sgd", "layer", 16),
        ("momentum", "none", 16),
        ("nesterov", "batch", 16),
        ("adam", "none", [16, 8, 16, 16, 8, 16]),  # and layers of different widths
    ],
)
@pytest.mark.parametrize("dropout", [0.0, 0.2])  # the masks' generator is checkpointed too
def test_interrupted_and_resumed_runs_write_the_same_files(
    optimizer, norm, width, dropout, write_config, tmp_path, monkeypatch
):
    changes = {**CHECKPOINTED, "train.optimizer": optimizer, "model.norm": norm}
    changes.update({"model.width": width, "model.dropout": dropout})
    changes["train.weight_decay"] = 0.01 if optimizer == "momentum" else 0.0
    config = load_config(write_config(changes))
    run_config(config, out=tmp_path / "whole")
    with monkeypatch.context() as patch:
        stop_after_step(patch, 10)
        stopped = run_config(config, out=tmp_path / "resumed")
    assert stopped.status == "interrupted" and stopped.metrics["step"][-1] == 10
    assert checkpoint.load_checkpoint(stopped.path).step == 9  # 0, 3, 6, 9: not yet 12
    resumed = resume_run(tmp_path / "resumed")
    assert resumed.status == "completed"
    assert_same_run(resumed.path, tmp_path / "whole")
    assert resumed.meta["resumes"][0]["step"] == 9


@pytest.mark.parametrize(
    "changes",
    [
        {"model.residual.enabled": True, "model.residual.branch_scale": 0.1, "train.lr": 0.01},
        {"analysis.spectrum.enabled": True, "analysis.spectrum.at": "init_and_end"},
    ],
    ids=["residual", "spectrum"],
)
def test_residual_and_spectrum_runs_resume_to_the_same_files(
    changes, write_config, tmp_path, monkeypatch
):
    """What a residual run (|dL/dx^0| of its gradient profile, branch_delta_norm) and a
    spectrum run (spectrum.csv, summary.json's spectrum) keep across a checkpoint."""
    config = load_config(write_config({**CHECKPOINTED, **changes}))
    run_config(config, out=tmp_path / "whole")
    with monkeypatch.context() as patch:
        stop_after_step(patch, 10)
        stopped = run_config(config, out=tmp_path / "resumed")
    assert stopped.status == "interrupted"
    resumed = resume_run(tmp_path / "resumed")
    assert resumed.status == "completed"
    assert_same_run(resumed.path, tmp_path / "whole")


def test_checkpointing_changes_no_other_file(write_config, tmp_path):
    plain = gradlab.run(write_config(), out=tmp_path / "plain")
    saved = gradlab.run(write_config(CHECKPOINTED), out=tmp_path / "saved")
    assert not (plain.path / "checkpoint.npz").exists()
    saved_again = gradlab.run(write_config(CHECKPOINTED), out=tmp_path / "again")
    for name in ("metrics.csv", "layers.csv", "summary.json", "params.npz"):
        assert (saved.path / name).read_bytes() == (saved_again.path / name).read_bytes(), name
    plain_too = gradlab.run(
        write_config(CHECKPOINTED | {"train.checkpoint_every": 0}), out=tmp_path / "p2"
    )
    for name in ("metrics.csv", "layers.csv", "summary.json", "params.npz"):
        assert (plain_too.path / name).read_bytes() == (saved.path / name).read_bytes(), name
    # the same run twice: the npz files are the same bytes (no time stamps inside)
    assert (saved.path / "checkpoint.npz").read_bytes() == (
        saved_again.path / "checkpoint.npz"
    ).read_bytes()


def test_params_npz_holds_the_final_parameters_mlp_load_params_takes(write_config, tmp_path):
    run = gradlab.run(write_config({"log.eval_every": 5}), out=tmp_path / "run")
    config = config_from_dict(run.config)
    model = build_model(config, np.random.default_rng(123))  # other initial values
    with np.load(run.path / "params.npz") as params:
        assert list(params.files) == list(model.params)
        model.load_params(params)
    data_seed = np.random.SeedSequence(config.seed).spawn(3)[0]
    dataset = make_dataset(config, np.random.default_rng(data_seed))
    test_loss, _ = mse(model.predict(dataset.x_test), dataset.y_test)
    # the last row evaluates the final parameters: the same numbers give the same loss
    assert test_loss == run.summary["final"]["test_loss"]


def test_optimizer_state_round_trips_for_every_optimizer():
    rng = np.random.default_rng(0)
    for name in ("sgd", "momentum", "nesterov", "adam"):
        params = {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
        grads = [{key: rng.normal(size=value.shape) for key, value in params.items()}] * 4
        first = make_optimizer(name, 0.1, weight_decay=0.01)
        for grad in grads[:2]:
            first.step(params, grad)
        second = make_optimizer(name, 0.1, weight_decay=0.01)
        second.load_state_dict(first.state_dict())
        copy = {key: value.copy() for key, value in params.items()}
        for grad in grads[2:]:
            first.step(params, grad)
            second.step(copy, grad)
        for key in params:
            np.testing.assert_array_equal(params[key], copy[key])


def test_mlp_load_params_takes_a_params_npz(tmp_path):
    model = MLP(4, 1, 2, 5, rng=np.random.default_rng(0), norm="batch")
    checkpoint.write_npz(tmp_path / "p.npz", model.params)
    other = MLP(4, 1, 2, 5, rng=np.random.default_rng(1), norm="batch")
    other.load_params(np.load(tmp_path / "p.npz"))
    for name, value in model.params.items():
        np.testing.assert_array_equal(other.params[name], value)


# ---- kill -9 and resume, in a separate process --------------------------------------------

KILLER = textwrap.dedent(
    f"""
    import os, signal, sys
    import pytest
    sys.path.insert(0, {str(Path(__file__).parent)!r})
    from test_checkpoint import stop_after_step
    from gradlab.config import load_config
    from gradlab.runner import run_config

    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
    stop_after_step(pytest.MonkeyPatch(), int(sys.argv[3]), kill)
    run_config(load_config(sys.argv[1]), out=sys.argv[2])
    """
)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_run_killed_at_a_random_step_resumes_to_the_same_files(optimizer, write_config, tmp_path):
    """SIGKILL right after the rows of a random step reach the disk (CSV rows past the last
    checkpoint, meta.json still 'running'), then `gradlab run --resume`."""
    kill_step = random.randrange(1, 20)
    path = write_config(
        {**CHECKPOINTED, "log.every": 1, "train.optimizer": optimizer, "model.norm": "batch"}
    )
    gradlab.run(path, out=tmp_path / "whole")
    killed = tmp_path / "killed"
    process = subprocess.run(
        [sys.executable, "-c", KILLER, str(path), str(killed), str(kill_step)],
        capture_output=True,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        timeout=120,
    )
    assert process.returncode == -9, (kill_step, process.stderr)
    assert read_run(killed).status == "running"
    assert read_run(killed).metrics["step"][-1] == kill_step
    result = invoke("run", "--resume", killed, "-q")
    assert result.exit_code == 0, (kill_step, result.output)
    assert_same_run(killed, tmp_path / "whole")


# ---- what cannot be resumed: one line, exit 2, nothing written ----------------------------


def refused(run_dir, *args):
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    result = invoke("run", *args, "--resume", run_dir)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1, result.output
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    return result.output


def test_a_completed_run_is_not_resumed(write_config, tmp_path):
    run = gradlab.run(write_config(CHECKPOINTED), out=tmp_path / "run")
    assert "the run already completed; nothing to resume" in refused(run.path)


def test_a_run_without_a_checkpoint_is_not_resumed(write_config, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        stop_after_step(patch, 5)
        run = gradlab.run(write_config(), out=tmp_path / "run")
    assert run.status == "interrupted"
    assert "it has no checkpoint.npz" in refused(run.path)


def test_a_run_whose_config_changed_is_not_resumed(write_config, tmp_path, monkeypatch):
    path = write_config(CHECKPOINTED)
    with monkeypatch.context() as patch:
        stop_after_step(patch, 5)
        run = gradlab.run(path, out=tmp_path / "run")
    message = refused(run.path, path, "--set", "train.lr=0.05")
    assert "the config given differs from the run's (train.lr: 0.05 given, 0.1 in the run)" in (
        message
    )
    assert refused(run.path, path, "--out", tmp_path / "x").startswith("Error: --resume")
    config_file = run.path / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["train"]["lr"] = 0.05
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    assert "its config.yaml changed since the checkpoint" in refused(run.path)
    # the same config given again is fine
    config["train"]["lr"] = 0.1
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    assert invoke("run", path, "--resume", run.path, "-q").exit_code == 0


@pytest.fixture
def live_run(write_config, tmp_path, monkeypatch):
    """An interrupted run whose meta.json says running and records a live process of this host
    (a sleeping child, started before the session it records): as if still being run."""
    path = write_config(CHECKPOINTED)
    with monkeypatch.context() as patch:
        stop_after_step(patch, 5)
        run = gradlab.run(path, out=tmp_path / "run")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    meta = json.loads((run.path / "meta.json").read_text())
    meta.update(status="running", pid=sleeper.pid, started_at=datetime.now(UTC).isoformat())
    (run.path / "meta.json").write_text(json.dumps(meta))
    yield path, run.path
    sleeper.kill()
    sleeper.wait()


def test_a_run_still_going_in_another_process_is_neither_resumed_nor_replaced(live_run):
    config, run_dir = live_run
    pid = json.loads((run_dir / "meta.json").read_text())["pid"]
    expected = f"is still being run by process {pid} on this host; stop that process first"
    assert expected in refused(run_dir)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    result = invoke("run", config, "--out", run_dir, "--force", "-q")
    assert result.exit_code == 2 and expected in result.output
    assert result.output.count("\n") == 1, result.output
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_a_recorded_pid_now_held_by_a_newer_process_is_not_the_run(live_run):
    """A killed run's pid the system has given to a process started after the run: resumable."""
    _, run_dir = live_run
    meta = json.loads((run_dir / "meta.json").read_text())
    assert liveness.recorded_process_alive(meta) is True
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert liveness.recorded_process_alive({**meta, "started_at": hour_ago}) is False
    resumed_now = {
        **meta,
        "started_at": hour_ago,
        "resumes": [{"step": 3, "at": meta["started_at"]}],
    }
    assert liveness.recorded_process_alive(resumed_now) is True  # the session: its resumption
    (run_dir / "meta.json").write_text(json.dumps({**meta, "started_at": hour_ago}))
    assert invoke("run", "--resume", run_dir, "-q").exit_code == 0
    assert read_run(run_dir).status == "completed"


def test_a_sweep_resumes_an_interrupted_point_from_its_checkpoint(tmp_path, monkeypatch):
    config = {
        "data": {"n_train": 64, "n_test": 32, "input_dim": 4},
        "model": {"depth": 3, "width": 8},
        "train": {"steps": 8, "batch_size": 16, "checkpoint_every": 2},
        "log": {"every": 1, "eval_every": 4},
    }
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"name": "s", "config": config, "seeds": [0, 1]}))
    root = tmp_path / "runs"
    assert invoke("sweep", spec, "--out", root, "-q", "--jobs", 1).exit_code == 0
    whole = tmp_path / "whole"
    (root / "seed=1").rename(whole)
    point = load_config_of(whole)
    with monkeypatch.context() as patch:
        stop_after_step(patch, 5)
        assert run_config(point, out=root / "seed=1").status == "interrupted"
    dry = invoke("sweep", spec, "--out", root, "--dry-run")
    assert [line.split()[1] for line in dry.output.splitlines()[1:]] == ["done", "resume"]
    result = invoke("sweep", spec, "--out", root, "-q", "--jobs", 1)
    assert "1 ran (1 completed, 1 skipped)" in result.output
    assert read_run(root / "seed=1").meta["resumes"] == [
        {"step": 4, "at": read_run(root / "seed=1").meta["resumes"][0]["at"]}
    ]
    assert_same_run(root / "seed=1", whole)


def load_config_of(run_dir):
    return config_from_dict(read_run(run_dir).config)


def test_resuming_cuts_the_csv_back_to_the_checkpoint_and_drops_a_cut_row(tmp_path):
    from gradlab.csv_files import CsvLog

    path = tmp_path / "log.csv"
    path.write_text("step,a\n0,1.5\n2,2.5\n4,3.5\n6,4.5\n8,5")  # killed mid-row
    log = CsvLog(path, ("step", "a"), keep_through=4)
    log.append([5, 0.25])
    log.close()
    assert path.read_text() == "step,a\n0,1.5\n2,2.5\n4,3.5\n5,0.25\n"
    path.write_text("step,b\n0,1\n")
    with pytest.raises(GradlabError, match="does not start with the header"):
        CsvLog(path, ("step", "a"), keep_through=4)
