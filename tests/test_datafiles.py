"""Real data: .npz and .csv files and scikit-learn's digits, end to end through `gradlab run`;
every kind of bad data is one line naming the file, exit 2, nothing written."""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from gradlab import datafiles
from gradlab.cli import cli
from gradlab.config import config_from_dict, config_to_dict, dump_config_yaml, load_config
from gradlab.data import load_dataset
from gradlab.errors import ConfigError, GradlabError
from gradlab.runner import prepare_data
from gradlab.sweep import expand_sweep

NO_SKLEARN = "scikit-learn is not installed (pip install 'gradlab[datasets]'; CI installs it)"

BASE = {
    "data": {"source": "file", "task": "multiclass"},
    "model": {"depth": 3, "width": 8},
    "train": {"steps": 4, "batch_size": 8},
    "log": {"every": 2, "eval_every": 2},
}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def labelled(rng, rows, features=5, classes=3):
    """(x, y): y the argmax of a random linear map of x (learnable), labels 0..classes-1."""
    x = rng.standard_normal((rows, features))
    y = np.argmax(x @ rng.standard_normal((features, classes)), axis=1)
    return x, y


def write_npz(path, rows=(40, 16), features=5, classes=3, **replace):
    rng = np.random.default_rng(0)
    x_train, y_train = labelled(rng, rows[0], features, classes)
    x_test, y_test = labelled(rng, rows[1], features, classes)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(replace)
    np.savez(path, **{name: value for name, value in arrays.items() if value is not None})
    return path


def write_csv(path, rows=50, target_first=True):
    """Columns label, a, b, c (the target first: not the default last column)."""
    x, y = labelled(np.random.default_rng(1), rows, 3, 2)
    cells = [[str(t)] + [repr(float(v)) for v in row] for t, row in zip(y, x, strict=True)]
    lines = ["label,a,b,c"] + [",".join(row) for row in cells]
    path.write_text("\n".join(lines) + "\n")
    return path, x, y


def write_config(folder, data=None, name="real.yaml", **sections):
    mapping = yaml.safe_load(yaml.safe_dump(BASE))
    mapping["data"].update(data or {})
    for section, values in sections.items():
        mapping.setdefault(section, {}).update(values)
    path = folder / name
    path.write_text(yaml.safe_dump(mapping))
    return path


def run_ok(config_path, out, *extra):
    result = invoke("run", config_path, "--out", out, "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return (
        yaml.safe_load((out / "config.yaml").read_text()),
        json.loads((out / "meta.json").read_text()),
    )


# ---- end to end --------------------------------------------------------------------------


def test_npz_run_end_to_end_records_the_file_and_repeats_bit_for_bit(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    data_file = write_npz(tmp_path / "mine.npz", rows=(40, 16), features=5, classes=3)
    config_path = write_config(folder, {"path": "../mine.npz", "normalize_inputs": True})
    config, meta = run_ok(config_path, tmp_path / "a")
    assert config["data"]["path"] == str(data_file)  # relative to the config file, absolute
    assert (config["data"]["input_dim"], config["data"]["classes"]) == (5, 3)
    assert (config["data"]["n_train"], config["data"]["n_test"]) == (40, 16)  # capped
    content = data_file.read_bytes()
    assert meta["data"] == {
        "source": "file",
        "path": str(data_file),
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["status"] == "completed" and 0 <= summary["final"]["test_accuracy"] <= 1
    run_ok(config_path, tmp_path / "b")
    for name in ("config.yaml", "metrics.csv", "layers.csv", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_csv_run_end_to_end_with_a_named_target_and_caps(tmp_path):
    data_file, _, _ = write_csv(tmp_path / "table.csv", rows=50)
    data = {"path": "table.csv", "target": "label", "task": "binary", "n_train": 30}
    config, meta = run_ok(write_config(tmp_path, data), tmp_path / "r")
    assert config["data"]["input_dim"] == 3
    assert (config["data"]["n_train"], config["data"]["n_test"]) == (30, 10)  # 0.2 of 50 held out
    assert meta["data"]["sha256"] == hashlib.sha256(data_file.read_bytes()).hexdigest()
    metrics = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 3  # header, steps 0, 2, 4


def test_csv_split_is_seeded_and_holds_every_row_once(tmp_path):
    _, x, y = write_csv(tmp_path / "table.csv", rows=50)
    mapping = {
        "data": {
            "source": "file",
            "path": str(tmp_path / "table.csv"),
            "target": "label",
            "task": "binary",
        },
        "train": {"batch_size": 8},
    }

    def split(seed):
        config, table = prepare_data(config_from_dict({**mapping, "seed": seed}))
        dataset = load_dataset(config, np.random.default_rng(seed), table)
        return dataset

    first, again, other = split(0), split(0), split(1)
    assert np.array_equal(first.x_train, again.x_train) and np.array_equal(
        first.x_test, again.x_test
    )
    assert not np.array_equal(first.x_train, other.x_train)
    rows = np.concatenate([first.x_train, first.x_test])
    labels = np.concatenate([first.y_train[:, 0], first.y_test[:, 0]])
    order, expected = np.lexsort(rows.T), np.lexsort(x.T)
    assert np.array_equal(rows[order], x[expected]) and np.array_equal(labels[order], y[expected])
    assert first.x_test.shape == (10, 3)


def test_normalization_and_targets_as_the_loss_wants_them(tmp_path):
    write_npz(tmp_path / "d.npz", rows=(40, 16))
    mapping = {
        "data": {
            "source": "file",
            "path": str(tmp_path / "d.npz"),
            "task": "multiclass",
            "normalize_inputs": True,
        },
        "train": {"loss": "mse", "batch_size": 8},
    }
    config, table = prepare_data(config_from_dict(mapping))
    dataset = load_dataset(config, np.random.default_rng(0), table)
    np.testing.assert_allclose(dataset.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(dataset.x_train.std(axis=0), 1, atol=1e-4)
    assert dataset.y_train.shape == (40, 3)  # one-hot for mse
    assert set(dataset.y_train.sum(axis=1)) == {1.0}


def test_digits_run_end_to_end(tmp_path):
    pytest.importorskip("sklearn", reason=NO_SKLEARN)
    data = {"source": "digits", "n_train": 200, "n_test": 100, "normalize_inputs": True}
    config, meta = run_ok(write_config(tmp_path, data), tmp_path / "r")
    assert (config["data"]["input_dim"], config["data"]["classes"]) == (64, 10)
    assert (config["data"]["n_train"], config["data"]["n_test"]) == (200, 100)
    assert meta["data"]["source"] == "digits" and meta["data"]["scikit_learn"]
    assert meta["data"]["sha256"] is None or len(meta["data"]["sha256"]) == 64
    table = datafiles.read_table(load_config(tmp_path / "real.yaml").data)
    assert table.x.shape == (1797, 64) and table.y.max() == 9 and table.x.max() == 16.0


def test_digits_without_scikit_learn_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    result = invoke("run", write_config(tmp_path, {"source": "digits"}), "--out", tmp_path / "r")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: data.source 'digits' needs scikit-learn, which is not installed: "
        "pip install 'gradlab[datasets]'"
    )
    assert not (tmp_path / "r").exists()


def test_synthetic_configs_are_unchanged_by_the_data_keys():
    config = config_from_dict({})
    assert (config.data.input_dim, config.data.classes) == (32, 2)
    assert config.data.source == "synthetic" and config.data.path is None
    assert prepare_data(config) == (config, None)
    assert "input_dim: 32\n" in dump_config_yaml(config)


# ---- bad data: one line naming the file, exit 2, nothing written -------------------------


def _object_array():
    return np.array([[1, "a"]], dtype=object)


BAD_NPZ = {
    "missing array": ({"x_test": None}, {}, "has no array 'x_test'"),
    "nan in x": ({"x_train": np.full((40, 5), np.nan)}, {}, "x_train holds nan at row 1, column 1"),
    "inf in y": (
        {"y_test": np.full(16, np.inf)},
        {"task": "regression"},
        "y_test holds inf at row 1",
    ),
    "rows differ": ({"y_train": np.zeros(39, int)}, {}, "x_train has 40 rows but y_train has 39"),
    "features differ": (
        {"x_test": np.zeros((16, 4))},
        {},
        "x_train has 5 features per row but x_test has 4",
    ),
    "label out of range": (
        {"y_train": np.full(40, 2)},
        {"task": "binary"},
        "y_train has label 2 at row 1, out of range: data.task binary needs 0/1",
    ),
    "negative label": ({"y_test": -np.ones(16)}, {}, "y_test has label -1 at row 1, out of range"),
    "non-integer label": ({"y_train": np.full(40, 0.5)}, {}, "y_train has label 0.5 at row 1"),
    "2-D targets": ({"y_train": np.zeros((40, 2))}, {}, "y_train has shape (40, 2)"),
    "text array": (
        {"x_train": np.array([["a"] * 5] * 40)},
        {},
        "array 'x_train' holds <U1 values, not numbers",
    ),
    "object array": ({"x_train": _object_array()}, {}, "array 'x_train' holds object values"),
    "too big": ({}, {"max_bytes": 1000}, "its arrays take 2,688 bytes as float64"),
    "input_dim differs": (
        {},
        {"input_dim": 32},
        "has 5 features per example, but data.input_dim is 32",
    ),
    "classes differ": ({}, {"classes": 4}, "has 3 classes (labels 0..K-1), but data.classes is 4"),
}


@pytest.mark.parametrize("case", BAD_NPZ, ids=list(BAD_NPZ))
def test_bad_npz_is_one_line_naming_the_file_exit_2_nothing_written(case, tmp_path):
    arrays, data, fragment = BAD_NPZ[case]
    data_file = write_npz(tmp_path / "bad.npz", **arrays)
    _check_refused(tmp_path, {"path": str(data_file), **data}, f"{data_file}: ", fragment)


CSV_CELLS = "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,0\n"
BAD_CSV = {
    "empty file": ("", {}, "is empty; a .csv needs a header row"),
    "header only": ("a,b,label\n", {}, "has a header but no data rows"),
    "no header": ("1,2,0\n3,4,1\n", {}, "the first row holds numbers; a .csv needs a header row"),
    "missing column": (
        CSV_CELLS,
        {"target": "lable"},
        "has no column 'lable' (data.target); did you mean 'label'?",
    ),
    "non-numeric column": (
        CSV_CELLS.replace("3,4,1", "3,red,1"),
        {},
        "column 'b' is not numeric ('red' on line 3)",
    ),
    "empty cell": (
        CSV_CELLS.replace("3,4,1", "3,,1"),
        {},
        "column 'b' has an empty cell on line 3",
    ),
    "short row": (CSV_CELLS.replace("3,4,1", "3,1"), {}, "line 3 has 2 cells, the header 3"),
    "nan": (CSV_CELLS.replace("3,4,1", "3,nan,1"), {}, "the data holds nan at row 2, column 'b'"),
    "inf target": (
        CSV_CELLS.replace("3,4,1", "3,4,inf"),
        {"task": "regression"},
        "column 'label' holds inf at row 2",
    ),
    "label out of range": (
        CSV_CELLS.replace("3,4,1", "3,4,7"),
        {"task": "binary"},
        "the target column has label 7 at row 2, out of range",
    ),
    "one column": ("label\n0\n1\n", {}, "has one column"),
    "duplicate column": ("a,a,label\n1,2,0\n3,4,1\n", {}, "column 'a' appears twice"),
    "one row": ("a,b,label\n1,2,0\n", {}, "has 1 row; a train/test split needs at least 2"),
    "too big": (CSV_CELLS, {"max_bytes": 100}, "its arrays take 120 bytes as float64"),
    "not UTF-8": ("a,b,label\n1,2,\xff\n", {}, "is not a text file (not UTF-8)"),
    "batch too big": (CSV_CELLS, {}, "train.batch_size: must be <= the 4 training examples of"),
}


@pytest.mark.parametrize("case", BAD_CSV, ids=list(BAD_CSV))
def test_bad_csv_is_one_line_naming_the_file_exit_2_nothing_written(case, tmp_path):
    text, data, fragment = BAD_CSV[case]
    data_file = tmp_path / "bad.csv"
    data_file.write_bytes(text.encode("latin-1"))
    prefix = "" if case == "batch too big" else f"{data_file}: "
    _check_refused(tmp_path, {"path": str(data_file), "task": "binary", **data}, prefix, fragment)


@pytest.mark.parametrize("case", ["missing", "directory", "not a zip"])
def test_missing_or_unreadable_file_is_one_line_exit_2(case, tmp_path):
    data_file = tmp_path / "gone.npz"
    if case == "directory":
        data_file.mkdir()
    if case == "not a zip":
        data_file.write_text("x_train\n")
    problem = {
        "missing": "no such data file",
        "directory": "is a directory, not a data file",
        "not a zip": "is not a .npz archive (not a zip file)",
    }[case]
    _check_refused(tmp_path, {"path": str(data_file)}, f"{data_file}: ", problem)


def _check_refused(tmp_path, data, prefix, fragment):
    out = tmp_path / "run"
    result = invoke("run", write_config(tmp_path, data), "--out", out)
    message = result.output.strip()
    assert result.exit_code == 2, message
    assert message.startswith(f"Error: {prefix}") and fragment in message, message
    assert "\n" not in message
    assert not out.exists()


# ---- config: the data keys and paths -----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"source": "file"}, "data.path: data.source 'file' needs a path"),
        ({"source": "file", "path": "x.txt"}, "x.txt' is neither a .npz nor a .csv file"),
        ({"path": "x.npz"}, "data.path: is for data.source 'file', got '"),
        ({"source": "digits", "target": "y"}, "data.target: is for data.source 'file'"),
        (
            {"source": "file", "path": "x.npz", "target": "y"},
            "data.target: names a column of a .csv",
        ),
        ({"source": "digits", "noise": 0.1}, "data.noise: is a knob of the synthetic teacher"),
        ({"source": "sintetic"}, "did you mean 'synthetic'?"),
        ({"test_fraction": 1}, "data.test_fraction: must be in (0, 1), got 1"),
        ({"input_dim": "x"}, "data.input_dim: must be an integer >= 1 or null, got 'x'"),
    ],
)
def test_data_keys_are_checked_with_the_config(data, fragment):
    with pytest.raises(ConfigError, match=None) as raised:
        config_from_dict({"data": data})
    assert fragment in str(raised.value)


def test_paths_are_relative_to_the_config_file_and_set_to_the_current_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    config_path = write_config(folder, {"path": "data/d.npz"})
    assert load_config(config_path).data.path == str(folder / "data" / "d.npz")
    monkeypatch.chdir(tmp_path)
    config = load_config(config_path, ["data.path=other.csv"])
    assert config.data.path == str(tmp_path / "other.csv")


def test_a_sweeps_points_share_the_file_read_once_before_anything_is_written(tmp_path, monkeypatch):
    folder = tmp_path / "sweeps"
    folder.mkdir()
    data_file = write_npz(tmp_path / "d.npz")
    reads = []
    read_table = datafiles.read_table
    monkeypatch.setattr(
        datafiles, "read_table", lambda data: reads.append(data) or read_table(data)
    )
    spec = {
        "name": "s",
        "config": {**BASE, "data": {**BASE["data"], "path": "../d.npz"}},
        "grid": {"model.depth": [2, 3], "data.n_train": [10, 1000]},
    }
    sweep = expand_sweep(spec, spec_path=folder / "s.yaml", out=tmp_path / "out")
    assert len(reads) == 1
    assert {p.config.data.path for p in sweep.points} == {str(data_file)}
    assert [p.config.data.n_train for p in sweep.points] == [10, 40, 10, 40]
    assert {p.config.data.input_dim for p in sweep.points} == {5}
    write_npz(data_file, x_test=np.zeros((16, 4)))
    with pytest.raises(GradlabError, match="x_train has 5 features per row but x_test has 4"):
        expand_sweep(spec, spec_path=folder / "s.yaml", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_sweep_run_written_before_the_data_keys_existed_is_still_done(tmp_path):
    from gradlab.sweep import plan_sweep

    spec = {"name": "s", "config": {"model": {"depth": 2}}, "seeds": [0]}
    sweep = expand_sweep(spec, out=tmp_path / "out")
    point = sweep.points[0]
    old = config_to_dict(point.config)
    for key in ("source", "path", "target", "test_fraction", "max_bytes"):
        del old["data"][key]
    folder = tmp_path / "out" / point.name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    (folder / "meta.json").write_text(json.dumps({"status": "completed"}))
    assert [p.state for p in plan_sweep(sweep).points] == ["done"]
    old["model"]["depth"] = 3  # a real difference is still one
    (folder / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    with pytest.raises(GradlabError, match=r"model\.depth: 2 in the spec, 3 on disk"):
        plan_sweep(sweep)


def test_the_trainability_sweep_spans_its_grid_on_digits(tmp_path):
    pytest.importorskip("sklearn", reason=NO_SKLEARN)
    spec = Path(__file__).parent.parent / "configs" / "sweeps" / "trainability.yaml"
    from gradlab.sweep import load_sweep

    points = load_sweep(spec, out=tmp_path).points
    assert len(points) == 130
    variances = sorted({p.config.model.init.weight_scale**2 for p in points})
    np.testing.assert_allclose(variances, np.arange(1, 4.01, 0.25), atol=2e-4)
    assert sorted({p.config.model.depth for p in points}) == list(range(10, 101, 10))
    config = points[0].config
    assert config.model.activation == "tanh" and config.data.source == "digits"
    assert config.model.init.bias_scale**2 == pytest.approx(0.05, abs=1e-4)
    assert (config.data.input_dim, config.data.classes, config.data.task) == (64, 10, "multiclass")
    assert {p.config.train.steps for p in points} == {800}


def test_a_killed_run_on_a_data_file_gets_its_theory_from_the_file_while_it_exists(tmp_path):
    from gradlab.report import summarize

    data_file = write_npz(tmp_path / "d.npz")
    out = tmp_path / "r"
    run_ok(write_config(tmp_path, {"path": "d.npz"}), out)
    recorded = json.loads((out / "summary.json").read_text())["theory"]["factor"]
    (out / "summary.json").unlink()  # as if killed before the end
    (out / "meta.json").write_text(json.dumps({"status": "running"}))
    row = json.loads(summarize([out], "json"))[0]
    assert row["M_theory"] == recorded and row["M_init"] is not None
    data_file.unlink()
    row = json.loads(summarize([out], "json"))[0]
    assert row["M_theory"] is None and row["M_init"] is not None
