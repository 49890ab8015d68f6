"""The liveness rule of sweep points (gradlab.sweep.claim) without SLURM: a point a live
process runs is left alone by every other shard; one whose process is gone re-runs. And
``gradlab sweep --status``, which reads the same rule."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
import yaml
from click.testing import CliRunner

from gradlab import liveness, sweep
from gradlab.cli import cli
from gradlab.config import config_to_dict, dump_config_yaml
from gradlab.sweep import claim

TINY = {
    "data": {"n_train": 64, "n_test": 32, "input_dim": 4},
    "model": {"depth": 3, "width": 8},
    "train": {"steps": 5, "batch_size": 16},
    "log": {"every": 1, "eval_every": 5},
}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def meta(path):
    return json.loads((path / "meta.json").read_text())


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "config": TINY, "seeds": [0, 1, 2]}))
    return path


def dead_pid():
    """The pid of a process that has ended (and was reaped): nobody runs under it now."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


HOLDER = """
import sys
from gradlab.sweep import claim
with claim.hold(sys.argv[1]) as held:
    print(held, flush=True)
    sys.stdin.read()  # until the test closes stdin
"""


@pytest.fixture
def hold_claim():
    """Hold a point's claim from another process (a POSIX lock is per process), as a live
    shard does, until the test ends."""
    holders = []

    def hold(run_path):
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(run_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(process)
        assert process.stdout.readline().strip() == "True"
        return process

    yield hold
    for process in holders:
        if process.returncode is None:  # not released by the test itself
            process.communicate("", timeout=10)


def fake_run(root, point, **meta_fields):
    """A point's folder as its run left it: config.yaml and meta.json (all a plan reads)."""
    path = root / point.name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(dump_config_yaml(point.config))
    recorded = {"started_at": "2026-01-01T00:00:00+00:00", "host": socket.gethostname()}
    (path / "meta.json").write_text(json.dumps({**recorded, **meta_fields}))
    return path


def test_a_live_point_is_left_alone_and_a_killed_one_reruns(spec_path, in_tmp, hold_claim):
    root = in_tmp / "results" / "t"
    points = sweep.load_sweep(spec_path).points
    killed = fake_run(root, points[0], status="running", pid=dead_pid())  # its claim is free
    live = fake_run(root, points[1], status="running", pid=os.getpid())
    holder = hold_claim(live)  # the live shard running seed=1
    fake_run(root, points[2], status="completed")
    live_meta = (live / "meta.json").read_bytes()

    dry = invoke("sweep", spec_path, "--dry-run")
    assert [line.split()[1] for line in dry.output.splitlines()[1:]] == ["rerun", "live", "done"]
    status = invoke("sweep", spec_path, "--status")
    assert status.exit_code == 1
    lines = status.output.splitlines()
    assert lines[0] == f"sweep t: 3 points in {os.path.join('results', 't')}/"
    assert lines[1] == (
        "1 completed, 0 diverged, 1 running, 1 interrupted, 0 failed, 0 not started"
    )
    assert lines[2].split()[:5] == ["running", "1", "seed=1", "since", "2026-01-01T00:00:00+00:00"]
    assert lines[2].endswith(f"on {socket.gethostname()} (pid {os.getpid()})")
    assert lines[3].split()[:3] == ["interrupted", "0", "seed=0"] and "killed" in lines[3]

    result = invoke("sweep", spec_path, "--jobs", 2)
    assert result.exit_code == 0, result.output
    assert "3 points, 1 ran (1 completed, 1 running elsewhere, 1 skipped)" in result.output
    recorded = meta(killed)
    assert recorded["status"] == "completed" and recorded["host"] == socket.gethostname()
    assert isinstance(recorded["pid"], int) and recorded["pid"] != os.getpid()  # the worker's
    assert (root / ".claims" / "seed=0.lock").is_file()
    assert (live / "meta.json").read_bytes() == live_meta  # not touched

    holder.communicate("", timeout=10)  # that shard was killed: its point now re-runs
    again = invoke("sweep", spec_path, "--jobs", 2)
    assert "1 ran (1 completed, 2 skipped)" in again.output
    assert meta(live)["status"] == "completed"
    done = invoke("sweep", spec_path, "--status")
    assert done.exit_code == 0 and done.output.splitlines()[1].startswith("3 completed")


def test_without_locks_the_recorded_process_decides_on_its_own_host(tmp_path, monkeypatch):
    alive = {"host": socket.gethostname(), "pid": os.getpid()}
    assert liveness.recorded_process_alive(alive) is True
    assert liveness.recorded_process_alive({**alive, "pid": dead_pid()}) is False
    assert liveness.recorded_process_alive({**alive, "host": "another-node"}) is None
    assert liveness.recorded_process_alive({"status": "running"}) is None  # before host/pid
    run_path = tmp_path / "point"
    assert claim.is_claimed(run_path) is None  # no lock file: the claim cannot tell
    assert claim.is_running(run_path, alive) is True
    assert claim.is_running(run_path, {**alive, "host": "another-node"}) is False

    def no_locks(fd, operation):
        raise OSError(37, "No locks available")  # ENOLCK, as on a filesystem without locks

    monkeypatch.setattr(claim.fcntl, "lockf", no_locks)
    with claim.hold(run_path) as held:
        assert held is None
    assert claim.is_claimed(run_path) is None


STARTS = """
    # sitecustomize: in a sweep worker (a session leader: start_new_session), every run
    # appends "<point> <pid>" to a log as it starts (the worker holds the point's claim by
    # then) and takes a moment, so the two shards overlap.
    import os

    if os.getsid(0) == os.getpid():
        import time
        import gradlab.runner

        _run_config = gradlab.runner.run_config

        def run_config(config, out=None, **options):
            with open(os.environ["GRADLAB_TEST_STARTS"], "a") as log:
                log.write(f"{out.name} {os.getpid()}\\n")
            time.sleep(0.3)
            return _run_config(config, out=out, **options)

        gradlab.runner.run_config = run_config
"""


def test_two_shards_on_overlapping_points_never_run_one_twice(spec_path, tmp_path):
    hooks, starts = tmp_path / "hooks", tmp_path / "starts.log"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(STARTS))
    env = {**os.environ, "PYTHONPATH": str(hooks), "GRADLAB_TEST_STARTS": str(starts)}
    spec_path.write_text(yaml.safe_dump({"name": "t", "config": TINY, "seeds": [0, 1, 2, 3]}))
    command = [sys.executable, "-m", "gradlab", "sweep", str(spec_path), "--jobs", "1", "-q"]
    shards = [  # the whole sweep as one shard, and shard 0 of 2 (points 0 and 2) beside it
        subprocess.Popen(command + extra, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
        for extra in (["--shard", "0/1"], ["--shard", "0/2"])
    ]
    reports = [shard.communicate(timeout=120)[0] for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0], reports
    started = Counter(line.split()[0] for line in starts.read_text().splitlines())
    assert started == {f"seed={seed}": 1 for seed in range(4)}, starts.read_text()
    root = tmp_path / "results" / "t"
    assert all(meta(root / f"seed={seed}")["status"] == "completed" for seed in range(4))
    ran = sum(int(report.split(" ran ")[0].rsplit(maxsplit=1)[1]) for report in reports)
    assert ran == 4, reports


def test_status_of_a_sweep_not_started_and_dry_run_with_status(spec_path, in_tmp):
    result = invoke("sweep", spec_path, "--status", "--shard", "1/2")
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"sweep t: 1 points, shard 1/2 in {os.path.join('results', 't')}/",
        "0 completed, 0 diverged, 0 running, 0 interrupted, 0 failed, 1 not started",
        "  not started  1  seed=1",
    ]
    assert not (in_tmp / "results").exists()
    both = invoke("sweep", spec_path, "--status", "--dry-run")
    assert both.exit_code == 2 and "give one of them" in both.output
    assert "--status" in invoke("sweep", "--help").output


def test_status_lists_failed_and_interrupted_points_with_why(spec_path, in_tmp):
    root = in_tmp / "results" / "t"
    points = sweep.load_sweep(spec_path).points
    fake_run(root, points[0], status="failed", error="RuntimeError: boom")
    fake_run(root, points[1], status="completed")
    fake_run(root, points[2], status="interrupted", step_reached=3)
    plan = sweep.plan_sweep(sweep.load_sweep(spec_path))
    statuses = sweep.point_statuses(plan)
    assert [s.status for s in statuses] == ["failed", "completed", "interrupted"]
    text = sweep.format_status(plan, statuses).splitlines()
    assert text[1] == "1 completed, 0 diverged, 0 running, 1 interrupted, 1 failed, 0 not started"
    assert text[2].split() == ["interrupted", "2", "seed=2", "at", "step", "3"]
    assert text[3].split()[:3] == ["failed", "0", "seed=0"] and text[3].endswith("boom")


def test_a_worker_leaves_a_point_alone_when_its_claim_is_held_or_it_is_done(
    spec_path, tmp_path, hold_claim
):
    """The check at the moment a worker starts (the plan may be minutes old by then)."""
    points = sweep.load_sweep(spec_path).points
    root = tmp_path / "results"

    def start_worker(point):
        request = {
            "config": config_to_dict(point.config),
            "out": str(root / point.name),
            "parent": os.getpid(),
        }
        command = [sys.executable, "-c", "from gradlab.sweep import _worker; _worker()"]
        done = subprocess.run(command, input=json.dumps(request), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    root.mkdir()
    hold_claim(root / points[0].name)  # another shard started it since this one's plan
    assert start_worker(points[0]) == '{"left": "running elsewhere"}\n'
    assert not (root / points[0].name).exists()
    fake_run(root, points[1], status="completed")  # another shard finished it meanwhile
    assert start_worker(points[1]) == '{"left": "skipped"}\n'
