import copy
import os

# One BLAS thread per test process, set before numpy is first imported: the networks here are
# small, and OpenBLAS threads spin against each other (10x slower) on a busy 2-core machine.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import pytest  # noqa: E402
import yaml  # noqa: E402

# A run small enough for unit tests (well under a second), yet deep enough to fit M.
SMALL = {
    "name": "small",
    "data": {"n_train": 128, "n_test": 64, "input_dim": 8},
    "model": {"depth": 6, "width": 16},
    "train": {"steps": 20, "batch_size": 32, "lr": 0.1},
    "log": {"every": 5, "eval_every": 10},
}


@pytest.fixture
def write_config(tmp_path):
    """Write a config mapping (SMALL updated with ``changes``) to a YAML file; returns its path."""

    def write(changes=None, name="config.yaml", base=SMALL):
        mapping = yaml.safe_load(yaml.safe_dump(base))
        for key_path, value in (changes or {}).items():
            target = mapping
            *parents, leaf = key_path.split(".")
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(mapping))
        return path

    return write


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run inside tmp_path so the default results/ folder lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def small_config():
    """A fresh copy of SMALL, for tests that build configs in Python."""
    return copy.deepcopy(SMALL)
