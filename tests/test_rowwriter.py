"""The CSV rows of a run written by a child process (``gradlab.rowwriter``): the same bytes
as writing them here, and no row lost or run left half-recorded when the child fails."""

import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gradlab import rowwriter
from gradlab.errors import GradlabError
from gradlab.results import LAYER_COLUMNS, METRIC_COLUMNS, RunWriter, read_run

TRICKY = [5e-324, 1.2345e-310, -0.0, 0.1, 1 / 3, math.inf, -math.inf, math.nan, 1.7e308]
STATS = LAYER_COLUMNS[2:]


def _log_steps(writer, steps=5, depth=4):
    """Log ``steps`` steps of tricky numbers, with missing metrics cells, as the runner does."""
    rng = np.random.default_rng(0)
    for step in range(steps):
        with np.errstate(over="ignore"):  # 1.7e308 times a factor > 1 is inf: fine here
            stats = {name: rng.choice(TRICKY, size=depth) * rng.normal() for name in STATS}
        stats["saturation"] = np.array([0.0, 0.25, 1.0, math.nan])[:depth]
        row = {"step": step, "train_loss": TRICKY[step % len(TRICKY)], "lr": 0.1}
        if step % 2 == 0:
            row["test_loss"] = np.float64(0.5)  # numpy floats too
        writer.log_metrics(row)
        writer.log_layers(step, stats)
        writer.flush()


def _writer(path, background):
    path.mkdir()
    return RunWriter(path, "name: x\n", {"seed": 0}, background=background)


def test_child_writes_the_same_bytes(tmp_path):
    here, child = _writer(tmp_path / "here", False), _writer(tmp_path / "child", True)
    assert here.rows is None and child.rows is not None
    for writer in (here, child):
        _log_steps(writer)
        writer.close(status="completed")
    for name in ("metrics.csv", "layers.csv"):
        expected = (tmp_path / "here" / name).read_bytes()
        assert (tmp_path / "child" / name).read_bytes() == expected, name
        assert expected.count(b"\n") > 5
    layers = read_run(tmp_path / "child").layers
    assert layers["step"].size == 5 * 4 and np.isnan(layers["saturation"][3])


def _wait_for_lines(path, lines):
    deadline = time.monotonic() + 30
    while path.read_text().count("\n") < lines:
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.01)


def test_rows_are_on_disk_after_each_flush(tmp_path):
    """Readers of a running run see each flushed step as soon as the child has read it,
    while the run goes on."""
    writer = _writer(tmp_path / "run", True)
    _log_steps(writer, steps=1)
    _wait_for_lines(tmp_path / "run" / "layers.csv", 1 + 4)
    _wait_for_lines(tmp_path / "run" / "metrics.csv", 1 + 1)
    writer.close(status="completed")


def test_a_dead_child_fails_the_run_with_its_reason(tmp_path):
    writer = _writer(tmp_path / "run", True)
    _log_steps(writer, steps=2)
    writer.rows._process.kill()
    writer.rows._process.wait()
    with pytest.raises(GradlabError, match=r"writing metrics\.csv and layers\.csv failed"):
        for _ in range(100):  # a pipe takes a few writes to notice its reader is gone
            writer.log_layers(9, {name: np.zeros(4) for name in STATS})
            writer.flush()
    writer.close(status="completed")  # raised once (by flush): close records it
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "failed" and "writing metrics.csv" in meta["error"]


def test_a_child_that_ends_badly_fails_the_run_at_close(tmp_path, monkeypatch):
    """The child's last words (here: a message it cannot read) reach the error."""
    writer = _writer(tmp_path / "run", True)
    writer.rows._pending += rowwriter.HEADER.pack(b"?", 0, 0, 0)
    with pytest.raises(GradlabError, match="unknown message"):
        writer.close(status="completed")
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["status"] == "failed"


def test_without_a_child_process_the_rows_are_written_here(tmp_path, monkeypatch):
    def refuse(*args):
        raise OSError("no processes left")

    monkeypatch.setattr("gradlab.results.RowWriterProcess", refuse)
    writer = _writer(tmp_path / "run", True)
    assert writer.rows is None
    _log_steps(writer, steps=2)
    writer.close(status="completed")
    assert read_run(tmp_path / "run").layers["step"].size == 8


def test_child_keeps_every_whole_message_when_input_ends_mid_message(tmp_path):
    """The training process killed while sending: what arrived whole is written."""
    metrics, layers = tmp_path / "metrics.csv", tmp_path / "layers.csv"
    metrics.write_text(",".join(METRIC_COLUMNS) + "\n")
    layers.write_text(",".join(LAYER_COLUMNS) + "\n")
    block = np.arange(2 * len(STATS), dtype=np.float64).reshape(len(STATS), 2).tobytes()
    whole = rowwriter.HEADER.pack(b"L", 7, len(STATS), len(block)) + block
    cut = rowwriter.HEADER.pack(b"L", 8, len(STATS), len(block)) + block[:40]
    child = subprocess.run(
        [sys.executable, "-I", "-S", rowwriter.__file__, str(metrics), str(layers)],
        input=whole + cut,  # no flush message: end of input flushes
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    lines = layers.read_text().splitlines()
    assert lines[1:] == [
        "7,1," + ",".join(repr(float(2 * k)) for k in range(len(STATS))),
        "7,2," + ",".join(repr(float(2 * k + 1)) for k in range(len(STATS))),
    ]


def test_child_ignores_ctrl_c(tmp_path):
    """Ctrl-C is for the training process, which finishes its step and closes the child."""
    writer = _writer(tmp_path / "run", True)
    _log_steps(writer, steps=1)
    _wait_for_lines(tmp_path / "run" / "layers.csv", 1 + 4)  # the child is up and serving
    writer.rows._process.send_signal(signal.SIGINT)
    _log_steps(writer, steps=2)
    writer.close(status="interrupted")
    assert read_run(tmp_path / "run").layers["step"].size == 3 * 4


def test_the_child_needs_no_numpy():
    """It runs as a plain script of the standard library (so it starts fast)."""
    code = (
        "import runpy, sys\n"
        f"runpy.run_path({rowwriter.__file__!r}, run_name='not_main')\n"
        "assert 'numpy' not in sys.modules and 'gradlab' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-I", "-S", "-c", code], check=True, timeout=30)


def test_runs_write_their_rows_through_the_child(write_config, tmp_path, monkeypatch):
    from gradlab.runner import run

    started = []

    class Counting(rowwriter.RowWriterProcess):
        def __init__(self, *args):
            super().__init__(*args)
            started.append(self._process.pid)

    monkeypatch.setattr("gradlab.results.RowWriterProcess", Counting)
    result = run(write_config({}), out=tmp_path / "run")
    assert len(started) == 1
    assert result.status == "completed" and result.layers["step"].size > 0
