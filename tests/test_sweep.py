"""Sweeps: expansion and names, validation up front, shards, resume, failures, parallel runs."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml
from click.testing import CliRunner

from gradlab import sweep
from gradlab.cli import cli
from gradlab.errors import ConfigError, GradlabError

# Each point trains in well under a second; most of a point's time is its worker's start-up.
TINY = {
    "data": {"n_train": 64, "n_test": 32, "input_dim": 4},
    "model": {"depth": 3, "width": 8},
    "train": {"steps": 5, "batch_size": 16},
    "log": {"every": 1, "eval_every": 5},
}


def spec(**parts):
    """A spec mapping on the TINY config; keyword arguments add or replace its keys."""
    return {"name": "t", "config": TINY, **parts}


def names(mapping):
    return [point.name for point in sweep.expand_sweep(mapping).points]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def write_spec(tmp_path):
    def write(mapping, name="sweep.yaml"):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(mapping, sort_keys=False))
        return path

    return write


def run_dirs(root):
    return sorted(p.name for p in root.iterdir() if (p / "meta.json").exists())


def meta(path):
    return json.loads((path / "meta.json").read_text())


# ---- expansion ----------------------------------------------------------------------------


def test_grid_is_the_cross_product_first_key_slowest_seeds_innermost():
    points = sweep.expand_sweep(
        spec(grid={"model.init.weight_scale": [1, 4], "model.depth": [3, 5]}, seeds=[0, 1])
    ).points
    assert len(points) == 8
    assert [p.index for p in points] == list(range(8))
    assert [p.name for p in points[:4]] == [
        "depth=3,weight_scale=1,seed=0",
        "depth=3,weight_scale=1,seed=1",
        "depth=5,weight_scale=1,seed=0",
        "depth=5,weight_scale=1,seed=1",
    ]
    assert points[5].overrides == {"model.init.weight_scale": 4, "model.depth": 3, "seed": 1}
    assert points[5].config.model.init.weight_scale == 4.0 and points[5].config.seed == 1
    assert points[5].config.name == points[5].name
    assert points[5].config.model.width == 8  # the base is kept


def test_integer_range_stop_exclusive_and_negative_step():
    assert names(spec(grid={"model.depth": {"range": [10, 60, 10]}})) == [
        f"depth={d}" for d in (10, 20, 30, 40, 50)
    ]
    assert names(spec(grid={"model.depth": {"range": [5, 2, -1]}})) == [
        "depth=5",
        "depth=4",
        "depth=3",
    ]
    assert names(spec(grid={"model.depth": {"range": [1, 3]}})) == ["depth=1", "depth=2"]


def test_float_range_has_no_float_drift_in_values_or_names():
    points = sweep.expand_sweep(spec(grid={"train.lr": {"range": [0.1, 0.7, 0.1]}})).points
    assert [p.overrides["train.lr"] for p in points] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert [p.name for p in points] == [f"lr=0.{k}" for k in range(1, 7)]
    assert names(spec(grid={"model.init.weight_scale": {"range": [0.5, 2, 0.25]}}))[-1] == (
        "weight_scale=1.75"
    )


@pytest.mark.parametrize(
    ("bounds", "fragment"),
    [([1, 5, 0], "must not be 0"), ([5, 1, 1], "empty"), ([1], "range must be"), ("x", "range")],
)
def test_bad_ranges_are_config_errors(bounds, fragment):
    with pytest.raises(ConfigError, match=fragment) as caught:
        sweep.expand_sweep(spec(grid={"model.depth": {"range": bounds}}))
    assert caught.value.key_path == "grid.model.depth"


def test_zip_varies_lists_together_and_crosses_with_the_grid():
    points = sweep.expand_sweep(
        spec(
            grid={"model.depth": [3, 4]},
            zip={"train.lr": [0.1, 0.05], "train.batch_size": [16, 32]},
        )
    ).points
    assert [
        (p.config.model.depth, p.config.train.lr, p.config.train.batch_size) for p in points
    ] == [
        (3, 0.1, 16),
        (3, 0.05, 32),
        (4, 0.1, 16),
        (4, 0.05, 32),
    ]
    assert points[1].name == "batch_size=32,depth=3,lr=0.05"


def test_zip_length_mismatch_names_both_lists():
    with pytest.raises(ConfigError, match=r"same length; train.lr has 2, train.batch_size has 3"):
        sweep.expand_sweep(spec(zip={"train.lr": [0.1, 0.05], "train.batch_size": [8, 16, 32]}))


def test_names_are_stable_when_values_are_added_or_keys_reordered():
    before = names(spec(grid={"model.init.weight_scale": [1, 2], "model.depth": [3]}, seeds=[0]))
    more = names(spec(grid={"model.init.weight_scale": [1, 2, 8], "model.depth": [3]}, seeds=[0]))
    reordered = names(spec(grid={"model.depth": [3], "model.init.weight_scale": [2, 1]}, seeds=[0]))
    assert set(before) <= set(more)
    assert set(reordered) == set(before)


def test_labels_are_the_shortest_unambiguous_suffix():
    assert names(spec(grid={"model.batchnorm.eps": [1e-5], "model.layernorm.eps": [1e-3]})) == [
        "batchnorm.eps=1e-05,layernorm.eps=0.001"
    ]


def test_string_values_are_made_filesystem_safe():
    assert names(spec(grid={"model.activation": ["tanh"], "train.batch_size": ["full"]})) == [
        "activation=tanh,batch_size=full"
    ]
    assert sweep.format_name_value("a/b=c,d") == "a_b_c_d"
    assert sweep.format_name_value(True) == "true" and sweep.format_name_value(None) == "null"


def test_name_collision_between_a_number_and_its_string_is_an_error():
    with pytest.raises(
        ConfigError, match=r"sweep points 0 .* and 1 .* would both be named 'lr=0.1'"
    ):
        sweep.expand_sweep(spec(grid={"train.lr": [0.1, "0.1"]}))


def test_two_points_with_the_same_config_are_an_error():
    with pytest.raises(ConfigError, match="same config"):
        sweep.expand_sweep(spec(grid={"model.init.weight_scale": [1, 1.0]}))


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"grid": {"model.dept": [3]}}, "did you mean 'depth'"),
        ({"grid": {"name": ["a"]}}, "name cannot vary"),
        ({"grid": {"seed": [1]}, "seeds": [0]}, "varied twice"),
        ({"grid": {"model.depth": 3}}, "non-empty list"),
        ({"grid": {"model.depth": [[3]]}}, "scalars"),
        ({"grids": {}}, "unknown key 'grids'"),
        ({"grid": None}, "at least one of"),
        ({"name": "a/b", "seeds": [0]}, "not a valid sweep name"),
    ],
)
def test_bad_specs_are_config_errors(changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        sweep.expand_sweep(spec(**changes))


def test_a_binary_spec_is_a_config_error(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_bytes(b"\xff\xfe\x00grid")
    with pytest.raises(ConfigError, match="not a text file"):
        sweep.load_sweep(path)


def test_a_key_given_twice_in_a_spec_is_an_error(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("config: {}\ngrid:\n  train.lr: [0.1, 0.2]\n  train.lr: [0.3]\n")
    with pytest.raises(ConfigError, match=r"line 4: grid\.train\.lr: key given twice"):
        sweep.load_sweep(path)


def test_base_is_relative_to_the_spec_file_and_config_is_an_alternative(tmp_path, write_spec):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    path = write_spec({"name": "t", "base": "configs/tiny.yaml", "seeds": [3]})
    loaded = sweep.load_sweep(path)
    assert loaded.base_path == (tmp_path / "configs" / "tiny.yaml").resolve()
    assert loaded.points[0].config == sweep.expand_sweep(spec(seeds=[3])).points[0].config
    with pytest.raises(ConfigError, match="exactly one of base"):
        sweep.expand_sweep({"name": "t", "seeds": [0]})


def test_set_applies_fixed_overrides_to_every_point_without_naming_them():
    expanded = sweep.expand_sweep(
        spec(set={"train.steps": 7, "model.width": 5}, grid={"model.depth": [2, 3]})
    )
    assert [point.name for point in expanded.points] == ["depth=2", "depth=3"]
    assert all(point.config.train.steps == 7 for point in expanded.points)
    assert all(point.config.model.width == 5 for point in expanded.points)
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        sweep.expand_sweep(spec(set={"train.step": 7}, seeds=[0]))
    with pytest.raises(ConfigError, match="set: must be a mapping"):
        sweep.expand_sweep(spec(set=[1], seeds=[0]))


def test_sweep_name_defaults_to_the_file_stem(write_spec):
    loaded = sweep.load_sweep(write_spec({"config": TINY, "seeds": [0]}, name="my-sweep.yaml"))
    assert loaded.name == "my-sweep" and str(loaded.root) == os.path.join("results", "my-sweep")


# ---- validation up front ------------------------------------------------------------------


def test_one_bad_point_fails_the_whole_sweep_before_anything_is_written(write_spec, in_tmp):
    path = write_spec(spec(grid={"model.depth": [3, 0, 4]}))
    result = invoke("sweep", path, "--jobs", 1)
    assert result.exit_code == 2
    message = result.output.strip()
    assert len(message.splitlines()) == 1
    assert "sweep point 1 (depth=0)" in message and "model.depth" in message
    assert not (in_tmp / "results").exists()


def test_a_point_invalid_only_in_combination_is_caught(write_spec, in_tmp):
    path = write_spec(spec(grid={"train.batch_size": [16, 128]}))  # n_train is 64
    result = invoke("sweep", path)
    assert result.exit_code == 2
    assert "sweep point 1 (batch_size=128): train.batch_size: must be <= data.n_train" in (
        result.output
    )


# ---- shards -------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_shards_partition_the_sweep(count):
    points = sweep.expand_sweep(spec(grid={"model.depth": [3, 4, 5]}, seeds=[0, 1])).points
    shards = [sweep.select_shard(points, (k, count)) for k in range(count)]
    indices = [p.index for shard in shards for p in shard]
    assert sorted(indices) == list(range(len(points)))  # union is all, no overlap
    assert all(p.index % count == k for k, shard in enumerate(shards) for p in shard)


def test_parse_shard_is_zero_based():
    assert sweep.parse_shard("0/4") == (0, 4)
    assert sweep.parse_shard(" 3 / 4 ") == (3, 4)
    for text in ("4/4", "-1/2", "1/0", "a/b", "/", "1"):
        with pytest.raises(GradlabError, match="--shard"):
            sweep.parse_shard(text)


def test_dry_run_lists_the_shard_points_and_writes_nothing(write_spec, in_tmp):
    path = write_spec(spec(grid={"model.depth": [3, 4, 5]}, seeds=[0, 1]))
    result = invoke("sweep", path, "--dry-run", "--shard", "1/4")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert "6 points, shard 1/4: 2 selected" in lines[0]
    assert [line.split() for line in lines[1:]] == [
        ["1", "run", "depth=3,seed=1"],
        ["5", "run", "depth=5,seed=1"],
    ]
    assert not (in_tmp / "results").exists()


def test_bad_shard_is_exit_2(write_spec, in_tmp):
    result = invoke("sweep", write_spec(spec(seeds=[0])), "--shard", "2/2", "--dry-run")
    assert result.exit_code == 2 and "0-based" in result.output


# ---- running, resume, failures ------------------------------------------------------------


def test_sweep_runs_every_point_writes_sweep_json_and_a_rerun_skips_all(write_spec, in_tmp):
    path = write_spec(spec(grid={"model.init.weight_scale": [1, 4]}, seeds=[0, 1]))
    result = invoke("sweep", path, "--jobs", 2)
    assert result.exit_code == 0, result.output
    root = in_tmp / "results" / "t"
    expected = [f"weight_scale={w},seed={s}" for w in (1, 4) for s in (0, 1)]
    assert run_dirs(root) == expected
    assert all(meta(root / name)["status"] == "completed" for name in expected)
    recorded = json.loads((root / "sweep.json").read_text())
    assert recorded["name"] == "t" and recorded["spec"]["seeds"] == [0, 1]
    assert recorded["points"][3] == {
        "index": 3,
        "name": "weight_scale=4,seed=1",
        "overrides": {"model.init.weight_scale": 4, "seed": 1},
    }
    config = yaml.safe_load((root / expected[3] / "config.yaml").read_text())
    assert config["model"]["init"]["weight_scale"] == 4.0 and config["seed"] == 1

    started = {name: meta(root / name)["started_at"] for name in expected}
    again = invoke("sweep", path, "--jobs", 2)
    assert again.exit_code == 0 and "0 ran (4 skipped)" in again.output
    assert {name: meta(root / name)["started_at"] for name in expected} == started


def test_resume_reruns_only_the_point_killed_mid_run(write_spec, in_tmp):
    path = write_spec(spec(seeds=[0, 1, 2]))
    assert invoke("sweep", path, "--jobs", 2).exit_code == 0
    root = in_tmp / "results" / "t"
    killed = root / "seed=1"
    # what SIGKILL mid-run leaves: meta still says running, a CSV cut mid-row, no summary
    state = meta(killed)
    state.update(status="running", step_reached=2)
    state.pop("ended_at")
    (killed / "meta.json").write_text(json.dumps(state))
    (killed / "summary.json").unlink()
    (killed / "metrics.csv").write_text("step,train_loss\n0,0.5\n1,0.4")
    before = {name: (root / name / "meta.json").stat().st_mtime_ns for name in run_dirs(root)}

    dry = invoke("sweep", path, "--dry-run")
    assert [line.split()[1] for line in dry.output.strip().splitlines()[1:]] == [
        "done",
        "rerun",
        "done",
    ]
    result = invoke("sweep", path, "--jobs", 2)
    assert result.exit_code == 0, result.output
    assert "1 ran (1 completed, 2 skipped)" in result.output
    after = {name: (root / name / "meta.json").stat().st_mtime_ns for name in run_dirs(root)}
    assert [name for name in after if after[name] != before[name]] == ["seed=1"]
    assert meta(killed)["status"] == "completed" and (killed / "summary.json").exists()


def test_changed_spec_reusing_a_directory_is_an_error(write_spec, in_tmp):
    assert invoke("sweep", write_spec(spec(seeds=[0, 1]))).exit_code == 0
    changed = {**TINY, "train": {**TINY["train"], "steps": 6}}
    result = invoke("sweep", write_spec({"name": "t", "config": changed, "seeds": [0, 1, 2]}))
    assert result.exit_code == 2
    assert "holds a different config (train.steps: 6 in the spec, 5 on disk)" in result.output
    assert "and 1 more" in result.output
    assert not (in_tmp / "results" / "t" / "seed=2").exists()
    # adding points without changing the old ones extends the sweep
    assert invoke("sweep", write_spec(spec(seeds=[0, 1, 2]))).exit_code == 0


def test_a_point_whose_run_files_are_damaged_is_planned_as_a_rerun(write_spec, in_tmp):
    """The plan reads each folder through results.read_run: a meta.json or config.yaml it
    cannot parse, or a folder of run files without them (killed while starting), re-runs."""
    path = write_spec(spec(seeds=[0, 1, 2, 3]))
    assert invoke("sweep", path).exit_code == 0
    root = in_tmp / "results" / "t"
    (root / "seed=0" / "meta.json").write_text('{"status": "compl')
    (root / "seed=1" / "config.yaml").write_text("model: {depth: [")
    (root / "seed=2" / "meta.json").unlink()
    (root / "seed=2" / "config.yaml").unlink()
    plan = sweep.plan_sweep(sweep.load_sweep(path))
    assert [planned.state for planned in plan.points] == ["incomplete"] * 3 + ["done"]
    assert plan.points[3].previous == "completed"


INJECT_FAILURE = """
    # sitecustomize: every worker imports this first. A network of width 9 crashes in the
    # runner like a bug would: after the run directory exists, so meta.json says failed.
    import gradlab.runner

    _build_model = gradlab.runner.build_model

    def build_model(config, rng):
        if config.model.width == 9:
            raise RuntimeError("injected failure for width 9")
        return _build_model(config, rng)

    gradlab.runner.build_model = build_model
"""


@pytest.fixture
def crash_width_9(tmp_path, monkeypatch):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(INJECT_FAILURE))
    monkeypatch.setenv("PYTHONPATH", f"{hooks}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def test_a_failing_point_does_not_stop_the_others_and_exits_1(
    write_spec, in_tmp, crash_width_9, monkeypatch
):
    path = write_spec(spec(grid={"model.width": [8, 9, 10]}))
    result = invoke("sweep", path, "--jobs", 2)
    assert result.exit_code == 1
    root = in_tmp / "results" / "t"
    assert [meta(root / f"width={w}")["status"] for w in (8, 9, 10)] == [
        "completed",
        "failed",
        "completed",
    ]
    lines = result.output.strip().splitlines()
    assert "2 completed, 1 failed" in lines[0]
    assert lines[1] == "1 failed:"
    assert lines[3].split()[:2] == ["1", "width=9"]
    assert "RuntimeError: injected failure for width 9" in lines[3]
    assert "injected failure" in (root / "logs" / "width=9.log").read_text()  # the traceback

    # a failed point is reported again, not re-run, unless --retry-failed
    again = invoke("sweep", path)
    assert again.exit_code == 1 and "0 ran" in again.output and "--retry-failed" in again.output
    monkeypatch.delenv("PYTHONPATH")  # the bug is fixed
    retried = invoke("sweep", path, "--retry-failed")
    assert retried.exit_code == 0, retried.output
    assert "1 ran (1 completed, 2 skipped)" in retried.output
    assert meta(root / "width=9")["status"] == "completed"


def test_a_point_whose_folder_is_blocked_fails_alone(write_spec, in_tmp):
    root = in_tmp / "results" / "t"
    root.mkdir(parents=True)
    (root / "seed=1").write_text("not a run directory")
    result = invoke("sweep", write_spec(spec(seeds=[0, 1, 2])), "--jobs", 2)
    assert result.exit_code == 1
    assert "exists and is not a directory" in result.output
    assert run_dirs(root) == ["seed=0", "seed=2"]


def test_parallel_runs_write_the_same_bytes_as_serial_runs(write_spec, in_tmp):
    path = write_spec(spec(grid={"model.init.weight_scale": [1, 4, 8]}, seeds=[0, 1]))
    serial, parallel = in_tmp / "serial", in_tmp / "parallel"
    assert invoke("sweep", path, "--jobs", 1, "--out", serial).exit_code == 0
    assert invoke("sweep", path, "--jobs", 2, "--out", parallel).exit_code == 0
    assert run_dirs(serial) == run_dirs(parallel) and len(run_dirs(serial)) == 6
    for name in run_dirs(serial):
        for file in ("metrics.csv", "layers.csv"):
            assert (serial / name / file).read_bytes() == (parallel / name / file).read_bytes()
    assert (serial / "sweep.json").read_bytes() == (parallel / "sweep.json").read_bytes()


def test_workers_get_one_blas_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    env = sweep.worker_environment()
    assert {env[v] for v in sweep.BLAS_THREAD_VARIABLES} == {"1"}
    assert os.environ["OMP_NUM_THREADS"] == "8"  # the parent's own setting is left alone
    assert sweep.default_jobs() >= 1


def test_sweep_help():
    result = invoke("sweep", "--help")
    assert result.exit_code == 0
    for option in ("--jobs", "--shard", "--dry-run", "--retry-failed", "--out", "--quiet"):
        assert option in result.output
    assert "SLURM_ARRAY_TASK_ID" in result.output


# ---- the wrong kind of file, an unwritable --out ------------------------------------------


def test_a_run_config_given_to_sweep_names_the_run_command(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, **TINY}, sort_keys=False))
    result = invoke("sweep", path, "--dry-run")
    assert result.exit_code == 2
    message = result.output.strip()
    assert "\n" not in message and "unknown key" not in message
    assert f"{path} is a run config (it has 'seed', 'data', 'model'), not a sweep spec" in message
    assert "run it with `gradlab run`" in message


def test_an_unknown_key_in_an_inline_config_names_it():
    with pytest.raises(ConfigError, match=r"^model\.depht: unknown key in config \(inline\)"):
        sweep.expand_sweep({"config": {"model": {"depht": 3}}, "seeds": [0]})


@pytest.mark.parametrize("where", ["under a file", "under /proc"])
def test_an_unwritable_sweep_folder_is_one_line_exit_2(where, write_spec, in_tmp):
    path = write_spec(spec(seeds=[0, 1]))
    (in_tmp / "file").write_text("a regular file")
    out = in_tmp / "file" / "sweep" if where == "under a file" else "/proc/gradlab-test/sweep"
    before = sorted(p.name for p in in_tmp.iterdir())
    result = invoke("sweep", path, "--out", out)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "\n" not in message and message.startswith(f"Error: cannot write the sweep folder {out}")
    assert sorted(p.name for p in in_tmp.iterdir()) == before


def test_a_sweep_folder_whose_sweep_json_cannot_be_written_is_removed(
    write_spec, in_tmp, monkeypatch
):
    def refuse(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sweep.execute, "atomic_write_json", refuse)  # run_sweep writes it
    result = invoke("sweep", write_spec(spec(seeds=[0])), "--out", in_tmp / "new")
    assert result.exit_code == 2
    assert "cannot write the sweep folder" in result.output
    assert "No space left on device" in result.output
    assert not (in_tmp / "new").exists()


# ---- --set on the command line ------------------------------------------------------------


def test_command_line_set_applies_to_every_point_after_the_spec_set(write_spec, in_tmp):
    path = write_spec(spec(set={"train.steps": 4}, grid={"model.depth": [2, 3]}, seeds=[0]))
    loaded = sweep.load_sweep(path, overrides=["train.steps=2", "model.width=5"])
    assert [p.name for p in loaded.points] == ["depth=2,seed=0", "depth=3,seed=0"]
    assert [p.config.train.steps for p in loaded.points] == [2, 2]  # --set beats set:
    assert [p.config.model.width for p in loaded.points] == [5, 5]
    assert [p.config.model.depth for p in loaded.points] == [2, 3]

    result = invoke("sweep", path, "--set", "train.steps=2", "--jobs", 2)
    assert result.exit_code == 0, result.output
    root = in_tmp / "results" / "t"
    for name in ("depth=2,seed=0", "depth=3,seed=0"):
        assert meta(root / name)["step_reached"] == 2
    recorded = json.loads((root / "sweep.json").read_text())
    assert recorded["command_line_set"] == {"train.steps": 2}
    assert recorded["points"][0]["overrides"] == {"model.depth": 2, "seed": 0}

    # the same --set again: everything is done; another value: the old runs are not mixed in
    assert "0 ran (2 skipped)" in invoke("sweep", path, "--set", "train.steps=2").output
    changed = invoke("sweep", path, "--set", "train.steps=3")
    assert changed.exit_code == 2
    assert "holds a different config (train.steps: 3 in the spec, 2 on disk)" in changed.output
    assert "the spec (or --set) changed" in changed.output
    assert all(meta(root / n)["step_reached"] == 2 for n in ("depth=2,seed=0", "depth=3,seed=0"))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.depth=4"], "--set model.depth: the sweep varies model.depth (in grid/zip)"),
        (["model=null"], "--set model: the sweep varies model.depth (in grid/zip)"),
        (["train.lr=0.5"], "--set train.lr: the sweep varies train.lr (in grid/zip)"),
        (["seed=3"], "--set seed: the sweep varies seed (in seeds)"),
        (["name=x"], "--set name: the sweep names its points"),
        (["train.stepz=3"], "train.stepz: unknown key in --set; did you mean 'steps'?"),
        (["train.steps"], "--set 'train.steps': expected key.path=value"),
        (["train.steps=-1"], "sweep point 0 (depth=2,lr=0.1,seed=0): train.steps: must be >= 0"),
    ],
)
def test_command_line_set_errors_are_one_line_exit_2(overrides, fragment, write_spec, in_tmp):
    path = write_spec(spec(grid={"model.depth": [2]}, zip={"train.lr": [0.1]}, seeds=[0]))
    result = invoke("sweep", path, "--dry-run", *[f"--set={text}" for text in overrides])
    assert result.exit_code == 2, result.output
    assert "\n" not in result.output.strip() and fragment in result.output, result.output
    assert not (in_tmp / "results").exists()


# ---- Ctrl-C -------------------------------------------------------------------------------


def test_a_worker_killed_by_the_forwarded_sigint_is_interrupted_not_failed(tmp_path):
    point = sweep.expand_sweep(spec(seeds=[0])).points[0]
    planned = sweep.PlannedPoint(point, tmp_path / point.name, "new")
    pool = sweep._WorkerPool({}, tmp_path / "logs")
    pool.stopped = True  # the parent got Ctrl-C and passed it on
    outcome = pool._outcome(planned, -signal.SIGINT, "Traceback ...\nKeyboardInterrupt\n")
    assert (outcome.status, outcome.error) == ("interrupted", "")
    assert not (tmp_path / "logs").exists()
    # a run that had finished when the signal came is done, whatever the exit code says
    (tmp_path / point.name).mkdir()
    (tmp_path / point.name / "meta.json").write_text(json.dumps({"status": "completed"}))
    assert pool._outcome(planned, -signal.SIGTERM, "").status == "completed"
    # without a stop request, a worker killed by a signal still failed
    pool.stopped = False
    failed = pool._outcome(planned, -signal.SIGINT, "")
    assert failed.status == "failed" and failed.error == "worker killed by SIGINT"


SLOW_START = """
    # sitecustomize: a sweep worker (a session leader: start_new_session) starts slowly, so
    # Ctrl-C reaches it before the runner has installed its own handler.
    import os, pathlib, time

    if os.getsid(0) == os.getpid():
        import gradlab.sweep

        _worker = gradlab.sweep._worker

        def slow_worker():
            pathlib.Path(os.environ["GRADLAB_TEST_STARTED"], str(os.getpid())).touch()
            time.sleep(60)
            _worker()

        gradlab.sweep._worker = slow_worker
"""


def test_ctrl_c_during_worker_start_up_reports_interrupted_and_exits_130(write_spec, tmp_path):
    hooks, started = tmp_path / "hooks", tmp_path / "started"
    hooks.mkdir()
    started.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(SLOW_START))
    env = {**os.environ, "PYTHONPATH": str(hooks), "GRADLAB_TEST_STARTED": str(started)}
    path = write_spec(spec(seeds=[0, 1, 2]))
    process = subprocess.Popen(
        [sys.executable, "-m", "gradlab", "sweep", str(path), "--jobs", "2", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    deadline = time.monotonic() + 30
    while len(list(started.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stdout + stderr
    first = stdout.splitlines()[0]
    assert "2 ran (2 interrupted, 1 not started)" in first, stdout
    assert "failed" not in stdout and "killed" not in stdout
    assert "interrupted: run the same command again to resume" in stdout
    assert not (tmp_path / "results" / "t" / "logs").exists()
