"""`gradlab plot`: every figure for normal, diverged, steps-0, underflowing, depth-1, broken and
incomplete runs, folders of runs (comparison) and a two-key sweep (phase diagram)."""

import copy
import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from gradlab import plots
from gradlab.cli import cli
from gradlab.config import config_from_dict
from gradlab.errors import GradlabError
from gradlab.results import read_run
from gradlab.runner import run_config

TINY = {
    "data": {"n_train": 64, "n_test": 32, "input_dim": 8},
    "model": {"depth": 5, "width": 8},
    "train": {"steps": 10, "batch_size": 32, "lr": 0.1},
    "log": {"every": 2, "eval_every": 5},
}
RUN_FIGURES = ("gradient_by_layer", "gradient_heatmap", "loss", "clipping", "saturation")
GROUP_FIGURES = ("compare_gradient_by_layer", "compare_loss")
PHASE_FIGURES = ("phase_factor", "phase_test_loss")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _make(path, overrides=(), name="run"):
    config = config_from_dict({"name": name, **copy.deepcopy(TINY)}, list(overrides))
    return run_config(config, out=path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each kind of run once per module; ``runs["folder"]`` holds the single runs."""
    folder = tmp_path_factory.mktemp("runs")
    made = {
        "normal": _make(folder / "normal", ["train.clip.mode=norm", "train.clip.threshold=0.05"]),
        "diverged": _make(
            folder / "diverged",
            ["model.activation=relu", "model.init.weight_scale=30", "train.lr=100"],
        ),
        "steps0": _make(folder / "steps0", ["train.steps=0"]),
        "underflow": _make(
            folder / "underflow",
            ["model.depth=60", "dtype=float32", "model.init.weight_scale=0.5"],
        ),
        "depth1": _make(folder / "depth1", ["model.depth=1"]),
    }
    norms = tmp_path_factory.mktemp("norms")
    for norm in ("none", "batch", "layer"):
        made[f"norm_{norm}"] = _make(norms / norm, [f"model.norm={norm}"])
    sweep = tmp_path_factory.mktemp("sweep")
    for weight_scale in (1, 16):
        for depth in (4, 6):
            overrides = [f"model.init.weight_scale={weight_scale}", f"model.depth={depth}"]
            _make(sweep / f"ws{weight_scale}_d{depth}_s0", overrides)
    _make(sweep / "ws1_d4_s1", ["model.init.weight_scale=1", "model.depth=4", "seed=1"])
    made.update(folder=folder, norms=norms, sweep=sweep)
    return made


@pytest.fixture(scope="module")
def plotted(runs):
    """plot_paths on the folder of single runs and on the sweep folder, once."""
    return {
        "folder": plots.plot_paths([runs["folder"]]),
        # the sweep's own runs are drawn like any other: only its group figures here (speed)
        "sweep": plots.plot_group(
            [read_run(path) for path in sorted(runs["sweep"].iterdir())], runs["sweep"] / "plots"
        ),
    }


def _check_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    image = matplotlib.image.imread(path)  # (height, width, channels) in [0, 1]
    assert image.shape[0] >= 400 and image.shape[1] >= 600, path
    assert np.ptp(image[..., :3]) > 0.5, f"{path} is blank"


def test_the_runs_are_what_the_tests_need(runs):
    assert runs["diverged"].status == "diverged"
    assert runs["diverged"].summary["status"] == "diverged"
    assert not np.all(np.isfinite(runs["diverged"].metrics["train_loss"][-1:]))
    underflow = runs["underflow"].layers["weight_grad_norm"]
    assert np.any(underflow == 0) and np.any(underflow > 0)
    np.testing.assert_array_equal(runs["steps0"].metrics["step"], [0])
    assert np.any(runs["normal"].metrics["clip_factor"] < 1)


@pytest.mark.parametrize("kind", ["normal", "diverged", "steps0", "underflow", "depth1"])
def test_every_run_figure_is_a_valid_png(runs, plotted, kind):
    written, warnings = plotted["folder"]
    assert warnings == []
    for name in RUN_FIGURES:
        path = runs[kind].path / "plots" / f"{name}.png"
        assert path in written
        _check_png(path)
    assert not list((runs[kind].path / "plots").glob("*.tmp"))  # atomic writes left no temp


def test_folder_of_runs_gets_comparison_figures(runs, plotted):
    written, _ = plotted["folder"]
    for name in GROUP_FIGURES:
        _check_png(runs["folder"] / "plots" / f"{name}.png")
    assert not any(path.name.startswith("phase") for path in written)  # many keys vary
    assert len(written) == 5 * len(RUN_FIGURES) + len(GROUP_FIGURES)


def test_two_key_sweep_gets_a_phase_diagram(runs, plotted):
    written, warnings = plotted["sweep"]
    assert warnings == []
    for name in GROUP_FIGURES + PHASE_FIGURES:
        path = runs["sweep"] / "plots" / f"{name}.png"
        assert path in written
        _check_png(path)


def test_phase_grid_averages_seeds_and_draws_the_theory_contour(runs):
    sweep = [read_run(path) for path in sorted(runs["sweep"].glob("ws*"))]
    keys = plots.phase_keys(sweep)
    assert keys == ("model.depth", "model.init.weight_scale")
    depths, scales, grid = plots.phase_grid(sweep, keys, plots._measured_factor)
    assert depths == [4, 6] and scales == [1, 16]
    seeds = [run for run in sweep if run.config["model"]["depth"] == 4]
    seeds = [run for run in seeds if run.config["model"]["init"]["weight_scale"] == 1]
    assert len(seeds) == 2
    expected = np.mean([plots._measured_factor(run) for run in seeds])
    assert grid[0, 0] == pytest.approx(expected)
    figure = plots.phase_diagram(sweep, keys, "factor")
    ax = figure.axes[0]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["theory: M = 1"]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def test_comparison_legend_names_the_differing_key(runs):
    norm_runs = [runs[f"norm_{norm}"] for norm in ("none", "batch", "layer")]
    assert plots.run_labels(norm_runs) == ["norm=none", "norm=batch", "norm=layer"]
    assert plots.phase_keys(norm_runs) is None  # a string key: no phase diagram
    figure = plots.compare_gradient_by_layer(norm_runs)
    assert [t.get_text() for t in figure.legends[0].get_texts()] == plots.run_labels(norm_runs)


@pytest.mark.parametrize("kind", ["normal", "diverged", "steps0", "underflow", "depth1"])
def test_every_figure_has_title_labels_and_a_legend_for_several_lines(runs, kind):
    run = runs[kind]
    for name, build in plots._run_figures(run).items():
        figure = build()
        panels = [panel for panel in figure.axes if panel.get_label() != "<colorbar>"]
        ax = panels[0]  # panels share x: the bottom one carries its label
        assert ax.get_title() and panels[-1].get_xlabel(), (kind, name)
        assert all(panel.get_ylabel() for panel in panels), (kind, name)
        if len([line for line in ax.get_lines() if not line.get_label().startswith("_")]) > 1:
            assert ax.get_legend() is not None, (kind, name)


def test_gradient_figure_shows_fit_and_theory_and_skips_zeros(runs):
    figure = plots.gradient_by_layer(runs["underflow"])
    ax = figure.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert any(label.startswith("fit at init, M = ") for label in labels)
    assert any(label.startswith("theory, M = ") for label in labels)
    assert "vanishing" in ax.get_title()
    assert ax.get_yscale() == "log"
    low, high = ax.get_ylim()
    assert 0 < low < high < np.inf


def test_clipping_title_reports_the_fraction_clipped(runs):
    title = plots.clipping(runs["normal"]).axes[0].get_title()
    assert "clip mode norm, threshold 0.05" in title and "% of logged steps clipped" in title
    assert "clipping off" in plots.clipping(runs["steps0"]).axes[0].get_title()


def test_clipping_figure_shows_the_cosine_when_clipping_is_on(runs):
    figure = plots.clipping(runs["normal"])
    norms, cosine = figure.axes
    assert "gradient norm" in norms.get_ylabel() and "cosine" in cosine.get_ylabel()
    logged = np.isfinite(runs["normal"].metrics["clip_cosine"])
    np.testing.assert_allclose(
        cosine.lines[0].get_ydata(), runs["normal"].metrics["clip_cosine"][logged]
    )
    assert len(plots.clipping(runs["steps0"]).axes) == 1  # clipping off: no cosine panel


def test_unreadable_and_incomplete_runs_are_skipped_with_warnings(runs, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text('{"status": "completed"}')
    (broken / "config.yaml").write_text("model: [unclosed\n")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    for name in ("config.yaml", "metrics.csv", "layers.csv"):
        (incomplete / name).write_bytes((runs["normal"].path / name).read_bytes())
    (incomplete / "meta.json").write_text(json.dumps({"status": "running"}))
    with open(incomplete / "layers.csv", "a") as handle:
        handle.write("12,1,0.5")  # a row cut by a kill
    written, warnings = plots.plot_paths([tmp_path])
    assert any("broken" in w and "unreadable" in w for w in warnings)
    assert any("incomplete" in w and "running" in w for w in warnings)
    assert {path.parent for path in written} == {incomplete / "plots"}
    for path in written:
        _check_png(path)


def test_a_run_killed_before_its_first_log_is_skipped(runs, tmp_path):
    run = tmp_path / "killed"
    run.mkdir()
    (run / "config.yaml").write_bytes((runs["normal"].path / "config.yaml").read_bytes())
    (run / "meta.json").write_text(json.dumps({"status": "running"}))
    written, warnings = plots.plot_paths([run])
    assert written == [] and "nothing logged" in warnings[-1]


def test_figures_without_any_data_still_draw(runs):
    run = read_run(runs["steps0"].path)
    for column in ("step", "train_loss", "test_loss", "grad_norm"):
        run.metrics[column] = np.full(1, np.nan)
    run.layers = {column: np.zeros(0) for column in run.layers}
    for name, build in plots._run_figures(run).items():
        assert build().axes[0].texts, name  # a "no ... logged" note instead of a curve


def test_plot_paths_errors(tmp_path):
    with pytest.raises(GradlabError, match="no gradlab runs"):
        plots.plot_paths([tmp_path])
    with pytest.raises(GradlabError, match="no such file"):
        plots.plot_paths([tmp_path / "missing"])
    with pytest.raises(GradlabError, match="format"):
        plots.plot_paths([tmp_path], fmt="jpg")


def test_cli_plot_pdf_into_out(runs, tmp_path):
    result = CliRunner().invoke(
        cli, ["plot", str(runs["depth1"].path), "--format", "pdf", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    printed = result.output.split()
    assert sorted(printed) == sorted(str(tmp_path / "o" / f"{n}.pdf") for n in RUN_FIGURES)
    for path in printed:
        assert Path(path).read_bytes().startswith(b"%PDF-")


def test_cli_plot_svg_into_out(runs, tmp_path):
    out = tmp_path / "o"
    result = CliRunner().invoke(
        cli, ["plot", str(runs["steps0"].path), "--format", "svg", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    expected = {out / f"{name}.svg" for name in RUN_FIGURES}
    assert set(map(type(out), result.output.split())) == expected
    for path in expected:
        root = ElementTree.parse(path).getroot()
        assert root.tag.endswith("svg")


def test_cli_plot_without_runs_exits_2(tmp_path):
    result = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert result.exit_code == 2
    assert "no gradlab runs" in result.output and len(result.output.strip().splitlines()) == 1
    assert CliRunner().invoke(cli, ["plot"]).exit_code == 2  # PATH is required
    assert CliRunner().invoke(cli, ["plot", "--help"]).exit_code == 0


def test_help_does_not_import_matplotlib():
    code = (
        "import sys\n"
        "from gradlab.cli import main\n"
        "sys.argv = ['gradlab', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "plot" in result.stdout


def test_losses_near_the_float_limit_do_not_warn_in_any_figure(runs, tmp_path):
    """A diverging run's last finite losses reach ~1e306: log axes must not overflow."""
    import shutil

    huge = tmp_path / "huge"
    shutil.copytree(runs["normal"].path, huge, ignore=shutil.ignore_patterns("plots"))
    lines = (huge / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("train_loss")
    for row, line in enumerate(lines[1:], start=1):
        cells = line.split(",")
        cells[column] = repr(10.0 ** min(306, 50 * row))
        lines[row] = ",".join(cells)
    (huge / "metrics.csv").write_text("\n".join(lines) + "\n")
    shutil.copytree(runs["steps0"].path, tmp_path / "small", ignore=shutil.ignore_patterns("plots"))
    written, warnings = plots.plot_paths([tmp_path])  # pytest turns any warning into an error
    assert warnings == []
    assert {path.stem for path in written} >= {"loss", "compare_loss"}
