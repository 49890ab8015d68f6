"""A sweep on a real SLURM cluster (one node, this machine; scripts/slurm_local.sh): submit the
array, kill one task mid-point, resubmit, collect. Runs when SLURM is installed and is
skipped, with the reason, when it is not (.ci/run installs it)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
PROGRAMS = ("sbatch", "munged", "slurmctld", "slurmd")  # the daemons live in sbin
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
MISSING = [program for program in PROGRAMS if shutil.which(program, path=SEARCH_PATH) is None]
TIMEOUT_S = 120  # from bringing the cluster up to the collecting job's end

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        bool(MISSING),
        reason=f"SLURM is not installed ({', '.join(MISSING)} not found): "
        "apt-get install slurm-wlm munge",
    ),
]

# 9 points of about a second each (unloaded): long enough to kill one mid-run, short enough for CI
SPEC = {
    "name": "t",
    "config": {
        "data": {"n_train": 256, "n_test": 64, "input_dim": 16},
        "model": {"depth": 8, "width": 64},
        "train": {"steps": 1000, "batch_size": 64, "lr": 0.05},
        "log": {"every": 50, "eval_every": 500},
    },
    "grid": {"model.init.weight_scale": [0.5, 1, 2]},
    "seeds": [0, 1, 2],
}
ARRAY = ["--array=0-2", "--cpus-per-task=1", "--mem-per-cpu=200M", "--time=5"]


class Cluster:
    """The local cluster of one test, and the commands the test runs against it."""

    def __init__(self, folder: Path, work: Path):
        self.folder, self.work = folder, work
        bin_dir = Path(sys.executable).parent  # gradlab of this interpreter, in every job
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{SEARCH_PATH}",
            "SLURM_CONF": str(folder / "slurm.conf"),
            "SPEC": "spec.yaml",
            "PLOT": "0",  # the collecting job's figures: 45 of them, tested in test_scripts.py
        }
        self.started = time.monotonic()
        self.deadline = self.started + TIMEOUT_S
        self.stages = []  # (seconds since the start, what): printed when the test fails

    def stage(self, what):
        self.stages.append(f"{time.monotonic() - self.started:6.1f} s  {what}")

    def run(self, *command, check=True):
        result = subprocess.run(
            [str(part) for part in command],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=max(1.0, self.deadline - time.monotonic()),
        )
        if check:
            assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
        return result

    def local(self, action):
        return self.run("bash", SCRIPTS / "slurm_local.sh", action, self.folder)

    def submit(self, script, *options) -> str:
        return (
            self.run("sbatch", "--parsable", *options, SCRIPTS / script)
            .stdout.strip()
            .split(";")[0]
        )

    def wait_until(self, condition, what):
        while not condition():
            assert time.monotonic() < self.deadline, f"over {TIMEOUT_S} s waiting for {what}"
            time.sleep(0.05)

    def wait_for_job(self, job_id):
        """Until no task of the job is pending or running."""
        self.wait_until(
            lambda: not self.run("squeue", "-h", "-j", job_id, check=False).stdout.strip(),
            f"job {job_id}",
        )

    def job_state(self, job_id) -> str:
        fields = self.run("scontrol", "show", "job", job_id).stdout.split()
        return " ".join(f for f in fields if f.startswith(("JobState=", "ExitCode=")))

    def logs(self) -> str:
        parts = [*self.stages, self.run("squeue", check=False).stdout]
        for path in sorted(self.folder.glob("log/*.log")) + sorted(self.work.glob("*.out")):
            parts.append(f"==== {path}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


@pytest.fixture
def cluster(tmp_path):
    # the munge socket path must stay short (108 bytes): a folder of its own under /tmp
    folder = Path(tempfile.mkdtemp(prefix="gradlab-slurm-"))
    work = tmp_path / "work"
    work.mkdir()
    cluster = Cluster(folder, work)
    try:
        cluster.local("up")
        yield cluster
    finally:
        cluster.deadline = time.monotonic() + 60  # down gets its own time, also after a timeout
        try:
            cluster.local("down")
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def meta(path):
    return json.loads((path / "meta.json").read_text())


def test_a_sweep_array_survives_a_killed_task_resumes_and_collects(cluster):
    work = cluster.work
    (work / "spec.yaml").write_text(yaml.safe_dump(SPEC, sort_keys=False))
    root = work / "results" / "t"
    try:
        # the same spec as a plain sweep on this machine: the summary to compare with
        cluster.stage("cluster up")
        cluster.run("gradlab", "sweep", "spec.yaml", "--jobs", "2", "-q")
        expected = cluster.run("gradlab", "summary", root, "--format", "csv").stdout
        root.rename(work / "plain")

        cluster.stage("plain sweep done")
        first = cluster.submit("sweep_slurm.sbatch", *ARRAY, "--output=array-%A_%a.out")
        killed = root / "weight_scale=0.5,seed=0"  # point 0: the first of task 0
        cluster.wait_until(
            lambda: (
                (killed / "metrics.csv").is_file()
                and len((killed / "metrics.csv").read_text().splitlines()) > 2
            ),
            "point 0 to start",
        )
        cluster.run("scancel", "--batch", "--signal=KILL", f"{first}_0")  # outright
        cluster.stage("point 0 killed")
        cluster.wait_for_job(first)
        cluster.stage("first array done")
        assert meta(killed)["status"] == "running", "point 0 finished before the kill"
        killed_pid = meta(killed)["pid"]
        finished = {
            path.name: (path / "meta.json").read_bytes()
            for path in root.iterdir()
            if (path / "meta.json").is_file() and meta(path)["status"] == "completed"
        }
        assert 0 < len(finished) < 9

        second = cluster.submit("sweep_slurm.sbatch", *ARRAY, "--output=array-%A_%a.out")
        collect = cluster.submit(
            "sweep_slurm_collect.sbatch", f"--dependency=afterany:{second}", "--output=collect.out"
        )
        cluster.wait_for_job(second)
        cluster.stage("second array done")
        cluster.wait_for_job(collect)
        cluster.stage("collected")

        status = cluster.run("gradlab", "sweep", "spec.yaml", "--status")
        assert status.stdout.splitlines()[1].startswith("9 completed,"), status.stdout
        assert meta(killed)["status"] == "completed" and meta(killed)["pid"] != killed_pid
        for name, recorded in finished.items():  # done before the resubmission: not re-run
            assert (root / name / "meta.json").read_bytes() == recorded, name
        summary = cluster.run("gradlab", "summary", root, "--format", "csv").stdout
        assert summary == expected
        assert cluster.job_state(collect) == "JobState=COMPLETED ExitCode=0:0"
        assert (root / "summary.csv").read_text() == expected
    except BaseException:
        print(cluster.logs())
        raise
