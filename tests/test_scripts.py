"""The shell scripts in scripts/: each run on tiny configs in a temporary folder."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
TINY = {
    "data": {"n_train": 64, "n_test": 32, "input_dim": 4},
    "model": {"depth": 3, "width": 8},
    "train": {"steps": 5, "batch_size": 16},
    "log": {"every": 1, "eval_every": 5},
}


def run_script(name, cwd, **env):
    """Run scripts/<name> with bash in ``cwd``; ``gradlab`` is the one of this interpreter."""
    environment = {**os.environ, **env}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    return subprocess.run(
        ["bash", str(SCRIPTS / name)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def status(run_dir):
    return json.loads((run_dir / "meta.json").read_text())["status"]


@pytest.fixture
def tiny_base(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.mark.parametrize(
    "name",
    [
        "sweep_loop.sh",
        "sweep_parallel.sh",
        "sweep_slurm.sbatch",
        "sweep_slurm_collect.sbatch",
        "slurm_local.sh",
    ],
)
def test_scripts_are_strict_bash(name):
    text = (SCRIPTS / name).read_text()
    assert "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(SCRIPTS / name)]).returncode == 0


@pytest.mark.parametrize(("name", "jobs"), [("sweep_loop.sh", None), ("sweep_parallel.sh", "2")])
def test_loop_and_parallel_run_one_folder_per_weight_scale(name, jobs, tmp_path, tiny_base):
    env = {"BASE": str(tiny_base), "WEIGHT_SCALES": "1 4 8"}
    if jobs:
        env["JOBS"] = jobs
    result = run_script(name, tmp_path, **env)
    assert result.returncode == 0, result.stderr
    loop = tmp_path / "results" / "loop"
    assert sorted(p.name for p in loop.iterdir()) == ["ws=1", "ws=4", "ws=8"]
    for scale in (1, 4, 8):
        assert status(loop / f"ws={scale}") == "completed"
        config = yaml.safe_load((loop / f"ws={scale}" / "config.yaml").read_text())
        assert config["model"]["init"]["weight_scale"] == scale


def test_loop_stops_at_the_first_failing_run(tmp_path, tiny_base):
    result = run_script("sweep_loop.sh", tmp_path, BASE=str(tiny_base), WEIGHT_SCALES="1 -1 4")
    assert result.returncode != 0
    assert "model.init.weight_scale" in result.stderr
    assert sorted(p.name for p in (tmp_path / "results" / "loop").iterdir()) == ["ws=1"]


def test_parallel_fails_when_a_run_fails_and_finishes_the_others(tmp_path, tiny_base):
    env = {"BASE": str(tiny_base), "WEIGHT_SCALES": "1 -1 4", "JOBS": "2"}
    result = run_script("sweep_parallel.sh", tmp_path, **env)
    assert result.returncode != 0
    loop = tmp_path / "results" / "loop"
    assert status(loop / "ws=1") == status(loop / "ws=4") == "completed"


def test_loop_passes_extra_arguments_and_uses_scripts_base_by_default(tmp_path):
    environment = {**os.environ, "WEIGHT_SCALES": "2"}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    result = subprocess.run(
        [
            "bash",
            str(SCRIPTS / "sweep_loop.sh"),
            "--set",
            "train.steps=2",
            "--set",
            "model.depth=3",
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((tmp_path / "results/loop/ws=2/config.yaml").read_text())
    assert config["train"]["steps"] == 2 and config["data"]["n_train"] == 1024  # scripts/base


def array_task_ids(sbatch_text):
    """The task ids of the script's own '#SBATCH --array=A-B' line."""
    first, last = map(int, re.search(r"^#SBATCH --array=(\d+)-(\d+)", sbatch_text, re.M).groups())
    return list(range(first, last + 1))


def test_slurm_array_tasks_together_run_every_point_exactly_once(tmp_path):
    spec = {"name": "arr", "config": TINY, "grid": {"model.depth": [2, 3, 4]}, "seeds": [0, 1, 2]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    task_ids = array_task_ids((SCRIPTS / "sweep_slurm.sbatch").read_text())
    assert task_ids[0] == 0  # shards are 0-based
    root = tmp_path / "results" / "arr"
    seen = set()
    for task_id in task_ids:  # what SLURM does, one task after another
        result = run_script(
            "sweep_slurm.sbatch",
            tmp_path,
            SPEC="spec.yaml",
            SLURM_ARRAY_TASK_ID=str(task_id),
            SLURM_ARRAY_TASK_COUNT=str(len(task_ids)),
            SLURM_CPUS_PER_TASK="2",
        )
        assert result.returncode == 0, result.stderr
        runs = {p.name for p in root.iterdir() if (p / "meta.json").exists()}
        new = runs - seen
        assert new, f"task {task_id} ran nothing"
        seen |= new
    recorded = json.loads((root / "sweep.json").read_text())
    assert seen == {point["name"] for point in recorded["points"]}
    assert len(seen) == 9
    assert all(status(root / name) == "completed" for name in seen)


def test_slurm_script_outside_slurm_says_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(
        ["bash", str(SCRIPTS / "sweep_slurm.sbatch")], cwd=tmp_path, env=env, capture_output=True
    )
    assert result.returncode != 0 and b"SLURM_ARRAY_TASK_ID" in result.stderr


def test_example_spec_expands_and_validates():
    from gradlab.sweep import load_sweep

    loaded = load_sweep(SCRIPTS / "sweep_example.yaml")
    assert loaded.name == "phase-diagram" and len(loaded.points) == 60
    assert loaded.base_path == (SCRIPTS / "base.yaml").resolve()
    assert loaded.points[0].name == "depth=10,weight_scale=1,seed=0"


def test_collect_names_the_unfinished_points_and_fails_then_succeeds(tmp_path):
    spec = {"name": "c", "config": TINY, "seeds": [0, 1, 2]}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {"SPEC": "spec.yaml"}
    root = tmp_path / "results" / "c"
    assert (
        run_script(
            "sweep_slurm.sbatch",
            tmp_path,
            SLURM_ARRAY_TASK_ID="0",
            SLURM_ARRAY_TASK_COUNT="2",
            **env,
        ).returncode
        == 0
    )  # points 0 and 2
    result = run_script("sweep_slurm_collect.sbatch", tmp_path, **env)
    assert result.returncode == 1, result.stderr
    assert "2 completed, 0 diverged, 0 running, 0 interrupted, 0 failed, 1 not started" in (
        result.stdout
    )
    assert "not started  1  seed=1" in result.stdout
    assert "not every point of the sweep finished" in result.stderr
    assert len((root / "summary.csv").read_text().splitlines()) == 3  # header and 2 runs

    assert (
        run_script(
            "sweep_slurm.sbatch",
            tmp_path,
            SLURM_ARRAY_TASK_ID="1",
            SLURM_ARRAY_TASK_COUNT="2",
            **env,
        ).returncode
        == 0
    )
    result = run_script("sweep_slurm_collect.sbatch", tmp_path, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len((root / "summary.csv").read_text().splitlines()) == 4
    assert (root / "summary-by-seed.csv").is_file() and (root / "plots").is_dir()
    assert f"collected: {os.path.join('results', 'c', 'summary.csv')}" in result.stdout


def test_collect_with_a_bad_spec_exits_2(tmp_path):
    result = run_script("sweep_slurm_collect.sbatch", tmp_path, SPEC="missing.yaml")
    assert result.returncode == 2 and "no such sweep spec file" in result.stderr
