"""`gradlab plot`: every figure for normal, diverged, steps-0, underflowing, depth-1, broken and
incomplete runs, folders of runs (comparison) and a two-key sweep (phase diagram)."""

import copy
import io
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure

from gradlab import plots
from gradlab.cli import cli
from gradlab.config import config_from_dict
from gradlab.errors import GradlabError
from gradlab.figures.common import MINOR_TICKS_UP_TO, STYLE, PlainLogFormatter, log_y
from gradlab.figures.common import fmt as plots_fmt
from gradlab.results import read_run
from gradlab.run_report import format_run_report
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
SVG_TEXT = "{http://www.w3.org/2000/svg}text"


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
    written, warnings, _ = plotted["folder"]
    assert warnings == []
    for name in RUN_FIGURES:
        path = runs[kind].path / "plots" / f"{name}.png"
        assert path in written
        _check_png(path)
    assert not list((runs[kind].path / "plots").glob("*.tmp"))  # atomic writes left no temp


def test_folder_of_runs_gets_comparison_figures(runs, plotted):
    written, _, _ = plotted["folder"]
    for name in GROUP_FIGURES:
        _check_png(runs["folder"] / "plots" / f"{name}.png")
    assert not any(path.name.startswith("phase") for path in written)  # many keys vary
    assert len(written) == 5 * len(RUN_FIGURES) + len(GROUP_FIGURES)


def test_two_key_sweep_gets_a_phase_diagram(runs, plotted):
    written, warnings, _ = plotted["sweep"]
    assert warnings == []
    for name in GROUP_FIGURES + PHASE_FIGURES:
        path = runs["sweep"] / "plots" / f"{name}.png"
        assert path in written
        _check_png(path)


def test_phase_grid_averages_seeds_and_draws_the_theory_contour(runs):
    sweep = [read_run(path) for path in sorted(runs["sweep"].glob("ws*"))]
    keys = plots.phase_keys(sweep)
    assert keys == ("model.depth", "model.init.weight_scale")
    depths, scales, grid = plots.phase_grid(sweep, keys, plots.measured_factor)
    assert depths == [4, 6] and scales == [1, 16]
    seeds = [run for run in sweep if run.config["model"]["depth"] == 4]
    seeds = [run for run in seeds if run.config["model"]["init"]["weight_scale"] == 1]
    assert len(seeds) == 2
    expected = np.mean([run.summary["gradient_factor"]["init"]["delta"] for run in seeds])
    assert grid[0, 0] == pytest.approx(expected)
    figure = plots.phase_diagram(sweep, keys, "factor")
    ax = figure.axes[0]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["theory: M = 1"]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    np.testing.assert_array_equal(figure.gradlab_shown["grid"], grid)


def test_comparison_legend_names_the_differing_key(runs):
    norm_runs = [runs[f"norm_{norm}"] for norm in ("none", "batch", "layer")]
    assert plots.run_labels(norm_runs) == ["norm=none", "norm=batch", "norm=layer"]
    assert plots.phase_keys(norm_runs) is None  # a string key: no phase diagram
    figure = plots.compare_gradient_by_layer(norm_runs)
    expected = [  # groups in order of their labels, each with summary.json's M at init
        f"norm={norm}: M = {runs[f'norm_{norm}'].summary['gradient_factor']['init']['delta']:.4g}"
        for norm in ("batch", "layer", "none")
    ]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == expected


@pytest.mark.parametrize("build", [plots.compare_gradient_by_layer, plots.compare_loss])
def test_a_comparison_of_too_many_runs_has_no_legend_and_says_so(runs, build, monkeypatch):
    """A legend of 100 runs does not fit the figure (matplotlib then gives up its layout)."""
    norm_runs = [runs[f"norm_{norm}"] for norm in ("none", "batch", "layer")]
    lines = len(build(norm_runs).legends[0].get_texts())  # three groups, each named
    assert lines >= 3
    monkeypatch.setattr("gradlab.figures.compare.MAX_LEGEND_LINES", lines - 1)
    figure = build(norm_runs)
    assert not figure.legends
    assert figure.axes[0].get_title().endswith(f"\n({lines} curves: too many for a legend)")


@pytest.mark.parametrize("kind", ["normal", "diverged", "steps0", "underflow", "depth1"])
def test_every_figure_has_title_labels_and_a_legend_for_several_lines(runs, kind):
    run = runs[kind]
    for name, build in plots.run_figures(run).items():
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
    assert any(label.startswith("fit, M = ") for label in labels)
    assert any(label.startswith("theory, M = ") for label in labels)
    assert "vanishing" in figure.get_suptitle()
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
    written, warnings, _ = plots.plot_paths([tmp_path])
    assert any("broken" in w and "unreadable" in w for w in warnings)
    assert any("incomplete" in w and "running" in w for w in warnings)
    assert {path.parent for path in written} == {incomplete / "plots"}
    for path in written:
        _check_png(path)


@pytest.mark.parametrize(
    ("damaged", "drawn"),
    [
        ("metrics.csv", {"gradient_by_layer", "gradient_heatmap", "saturation"}),
        ("layers.csv", {"loss", "clipping"}),
    ],
)
def test_a_cell_that_is_not_a_number_is_a_warning_and_the_rest_is_drawn(
    runs, tmp_path, damaged, drawn
):
    """A damaged metrics.csv or layers.csv: one warning naming the file, each figure that
    needs it not drawn (and said so), the others drawn; no comparison includes the run."""
    folder = tmp_path / "runs"
    for name in ("ws1_d4_s0", "ws16_d4_s0"):
        shutil.copytree(runs["sweep"] / name, folder / name, ignore=shutil.ignore_patterns("plots"))
    path = folder / "ws1_d4_s0" / damaged
    lines = path.read_text().splitlines()
    lines[2] = "zz," + lines[2].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")
    written, warnings, _ = plots.plot_paths([folder])
    unreadable = f"{damaged} unreadable: could not convert string to float: 'zz'"
    assert warnings[0] == f"{path.parent}: {unreadable}"
    assert all(unreadable in warning for warning in warnings)
    assert len(warnings) == 1 + len(RUN_FIGURES) - len(drawn)
    assert {p.stem for p in written if p.parent == path.parent / "plots"} == drawn
    assert not (folder / "plots").exists()  # one readable run left: nothing to compare


def test_a_run_killed_before_its_first_log_is_skipped(runs, tmp_path):
    run = tmp_path / "killed"
    run.mkdir()
    (run / "config.yaml").write_bytes((runs["normal"].path / "config.yaml").read_bytes())
    (run / "meta.json").write_text(json.dumps({"status": "running"}))
    written, warnings, _ = plots.plot_paths([run])
    assert written == [] and "nothing logged" in warnings[-1]


def test_figures_without_any_data_still_draw(runs):
    run = read_run(runs["steps0"].path)
    for column in ("step", "train_loss", "test_loss", "grad_norm"):
        run.metrics[column] = np.full(1, np.nan)
    run.layers = {column: np.zeros(0) for column in run.layers}
    for name, build in plots.run_figures(run).items():
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
        # text kept as text (svg.fonttype none), editable: no glyph outlines
        assert list(root.iter(SVG_TEXT)) and b"DejaVuSans-" not in path.read_bytes()
    texts = [
        "".join(node.itertext()) for node in ElementTree.parse(out / "loss.svg").iter(SVG_TEXT)
    ]
    assert f"{runs['steps0'].name}: loss" in "".join(texts)


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
    written, warnings, _ = plots.plot_paths([tmp_path])  # pytest turns any warning into an error
    assert warnings == []
    assert {path.stem for path in written} >= {"loss", "compare_loss"}


# ---- one M everywhere, figures fit for a slide -------------------------------------------

# sigmoid sigma_w; 16 units are too few for mean field: 10.149 (critical) measures 1.08 here
REGIME_SCALES = {"vanishing": 2, "stable": 9, "exploding": 14}


@pytest.fixture(scope="module")
def regimes(tmp_path_factory):
    """Tiny sigmoid runs of each regime (width 16: the mean-field caveat applies); plain SGD
    at lr 0.5 makes the exploding one collapse by tens of decades within six steps."""
    folder = tmp_path_factory.mktemp("regimes")
    made = {}
    for regime, scale in REGIME_SCALES.items():
        overrides = [
            f"model.init.weight_scale={scale}",
            "model.depth=12",
            "model.width=16",
            "train.steps=6",
            "train.lr=0.5",
            "train.optimizer=sgd",
        ]
        made[regime] = _make(folder / regime, overrides, name=regime)
    return made


def _init_factor(run):
    return run.summary["gradient_factor"]["init"]


def test_the_regime_runs_cover_every_verdict(regimes):
    assert {_init_factor(run)["regime"] for run in regimes.values()} == set(REGIME_SCALES)
    for regime, run in regimes.items():
        assert _init_factor(run)["regime"] == regime


@pytest.mark.parametrize("regime", list(REGIME_SCALES))
def test_gradient_figure_shows_the_m_and_verdict_of_summary_json(regimes, regime):
    run = regimes[regime]
    recorded = _init_factor(run)
    figure = plots.gradient_by_layer(run)
    shown = figure.gradlab_shown
    assert shown["M"] == recorded["delta"] and shown["regime"] == recorded["regime"]
    assert shown["theory"] == run.summary["theory"]["factor"]
    title = figure.get_suptitle()
    assert f"M at init = {recorded['delta']:.4g} " in title
    assert title.split("\n")[1].endswith(f": {recorded['regime']}")
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert f"fit, M = {recorded['delta']:.4g}" in labels
    # the mean-field caveat: once in analysis, in summary.json's sentence and in the figure
    assert recorded["caveat"] == "width 16 < 32: mean-field theory assumes wide layers"
    assert recorded["sentence"].endswith(recorded["caveat"]) and recorded["caveat"] in title
    report = format_run_report(run)  # what `gradlab run` prints: the same M, verdict, caveat
    assert f"at init: {recorded['sentence']}\n" in report
    assert f"M_init={recorded['delta']:.4g} " in report


def test_a_run_without_summary_json_shows_the_same_m(regimes, tmp_path):
    """A killed run has no summary.json: the figure fits M with the same function."""
    import shutil

    for regime, run in regimes.items():
        copy_path = tmp_path / regime
        shutil.copytree(run.path, copy_path, ignore=shutil.ignore_patterns("plots"))
        (copy_path / "summary.json").unlink()
        shown = plots.gradient_by_layer(read_run(copy_path)).gradlab_shown
        assert shown["M"] == _init_factor(run)["delta"], regime
        assert shown["regime"] == _init_factor(run)["regime"]
        assert shown["caveat"] == _init_factor(run)["caveat"]
        assert shown["theory"] == run.summary["theory"]["factor"]  # recomputed, no training


def test_comparison_figures_show_summary_json_m_in_numeric_order(regimes):
    runs = [regimes[regime] for regime in ("exploding", "stable", "vanishing")]
    figure = plots.compare_gradient_by_layer(runs)
    # numeric order (2 < 9 < 14), not text order ("14" < "2" < "9")
    expected = {f"$\\sigma_w$={scale:g}": None for scale in sorted(REGIME_SCALES.values())}
    for run in runs:
        label = f"$\\sigma_w$={run.config['model']['init']['weight_scale']:g}"
        expected[label] = _init_factor(run)["delta"]
    assert figure.gradlab_shown["factors"] == expected
    assert list(figure.gradlab_shown["factors"]) == list(expected)  # the legend's order
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert legend == [f"{label}: M = {factor:.4g}" for label, factor in expected.items()]


def test_exploding_run_keeps_the_init_profile_readable(regimes):
    """Later steps collapse by tens of decades: the init panel and the heatmap's colours are
    chosen from the init profile, which stays visible instead of a flat line."""
    run = regimes["exploding"]
    _, deltas = run.layer_matrix("delta_norm")
    _, weight_grads = run.layer_matrix("weight_grad_norm")
    init = np.log10(np.concatenate([deltas[0], weight_grads[0]]))
    assert np.log10(np.nanmin(deltas[1:])) < init.min() - 12  # the collapse really happened
    figure = plots.gradient_by_layer(run)
    init_ax, training_ax = figure.axes
    low, high = np.log10(init_ax.get_ylim())
    assert low <= init.min() and high >= init.max()  # the whole init profile is drawn
    assert high - low <= np.ptp(init) + 1  # ... and fills the panel
    assert np.log10(training_ax.get_ylim()[0]) < np.log10(np.nanmin(deltas[1:]))
    heatmap = plots.layer_heatmap(run, "weight_grad_norm")
    vmin, vmax = np.log10(heatmap.gradlab_shown["colour_limits"])
    grads = np.log10(weight_grads[0])
    assert vmin <= grads.min() and grads.max() <= vmax
    assert vmax - vmin <= max(12, np.ptp(grads)) + 1e-9
    assert "below" in heatmap.axes[0].get_title()  # the collapsed cells are explained


def test_layers_and_steps_get_integer_ticks(regimes, runs):
    run = regimes["stable"]  # 12 layers, 6 steps
    figure = plots.gradient_by_layer(run)
    loss = plots.loss_curves(run)
    for axis in (figure.axes[0].xaxis, figure.axes[1].xaxis, loss.axes[0].xaxis):
        ticks = axis.get_ticklocs()
        assert len(ticks) >= 2 and np.all(ticks == np.round(ticks)), ticks
    assert np.all(np.diff(loss.axes[0].xaxis.get_ticklocs()) >= 1)
    one_layer = plots.gradient_by_layer(runs["depth1"]).axes[0]
    assert list(one_layer.get_xticks()) == [1]


def test_log_axes_have_plain_tick_labels(runs):
    formatter = PlainLogFormatter()
    assert formatter(0.01) == "0.01" and formatter(1.0) == "1" and formatter(1000.0) == "1000"
    # powers of ten far from 1 in superscripts, as plain text (not mathtext)
    assert formatter(1e-7) == "10\u207b\u2077" and formatter(1e40) == "10\u2074\u2070"
    assert formatter(1e-300) == "10\u207b\u00b3\u2070\u2070"
    ax = plots.loss_curves(runs["normal"]).axes[0]
    assert ax.get_yscale() == "log"
    assert isinstance(ax.yaxis.get_major_formatter(), PlainLogFormatter)


@pytest.mark.parametrize("decades", [4, MINOR_TICKS_UP_TO + 2])
def test_a_log_axis_wider_than_six_decades_has_no_minor_ticks(decades):
    """Eight minor ticks per decade are clutter (and drawing time) on a wide axis; matplotlib
    itself leaves them out only beyond 10 decades."""
    ax = Figure().add_subplot()
    assert log_y(ax, [np.logspace(-decades, 0, 20)])
    minor = ax.yaxis.get_minorticklocs()
    assert (len(minor) == 0) == (decades > MINOR_TICKS_UP_TO), minor


def test_comparison_labels_are_distinct_in_a_mixed_folder(runs):
    mixed = [runs[kind] for kind in ("normal", "diverged", "steps0", "underflow", "depth1")]
    labels = plots.run_labels(mixed)  # eight keys differ, every run is named "run"
    assert labels == ["normal", "diverged", "steps0", "underflow", "depth1"]  # the folders
    named = [read_run(run.path) for run in mixed[:2]]
    named[0].config["name"], named[1].config["name"] = "clipped", "diverging"
    assert plots.run_labels(named) == ["clipped", "diverging"]  # many keys: the run names


def test_seeds_are_drawn_as_a_mean_with_a_band(runs):
    sweep = [read_run(path) for path in sorted(runs["sweep"].glob("ws*"))]  # 5 runs, 4 points
    for build in (plots.compare_gradient_by_layer, plots.compare_loss):
        figure = build(sweep)
        ax = figure.axes[0]
        assert "band: min to max" in ax.get_title()
        assert len(ax.collections) >= 1  # the band of the point with two seeds
    factors = plots.compare_gradient_by_layer(sweep).gradlab_shown["factors"]
    assert len(factors) == 4
    seeds = [run for run in sweep if run.path.name.startswith("ws1_d4")]
    assert factors["$L$=4, $\\sigma_w$=1"] == pytest.approx(
        np.mean([_init_factor(run)["delta"] for run in seeds])
    )


def test_phase_diagram_boundary_runs_between_cells_and_legend_outside(runs):
    sweep = [read_run(path) for path in sorted(runs["sweep"].glob("ws*"))]
    keys = plots.phase_keys(sweep)
    figure = plots.phase_diagram(sweep, keys, "factor")
    ax = figure.axes[0]
    (boundary,) = [c for c in ax.collections if c.get_label() == "theory: M = 1"]
    for segment in boundary.get_segments():  # cell centres (labels) sit on integers
        (x0, y0), (x1, y1) = segment
        assert (x0 == x1 and x0 % 1 == 0.5) or (y0 == y1 and y0 % 1 == 0.5), segment
    figure.draw_without_rendering()
    legend_box = figure.legends[0].get_window_extent()
    assert not legend_box.overlaps(ax.get_window_extent())
    assert ax.get_xlabel() == "depth $L$" and ax.get_ylabel() == "weight scale $\\sigma_w$"


def test_batchnorm_loss_figure_shows_train_eval_loss(runs):
    metrics = runs["norm_batch"].metrics
    logged = np.isfinite(metrics["train_eval_loss"])
    lines = plots.loss_curves(runs["norm_batch"]).axes[0].get_lines()
    (line,) = [line for line in lines if "train set" in line.get_label()]
    assert "running averages" in line.get_label()
    np.testing.assert_array_equal(line.get_ydata(), metrics["train_eval_loss"][logged])
    labels = [line.get_label() for line in plots.loss_curves(runs["norm_none"]).axes[0].lines]
    assert labels == ["train", "test"]


def test_cli_plot_dpi(runs, tmp_path):
    run = runs["steps0"].path
    result = CliRunner().invoke(cli, ["plot", str(run), "--out", str(tmp_path), "--dpi", "40"])
    assert result.exit_code == 0, result.output
    height, width, _ = matplotlib.image.imread(tmp_path / "loss.png").shape
    assert (width, height) == (256, 192)  # 6.4 x 4.8 inches
    plots.save_figure(plots.loss_curves(runs["steps0"]), tmp_path / "default.png", "png")
    height, width, _ = matplotlib.image.imread(tmp_path / "default.png").shape
    assert (width, height) == (960, 720)  # 150 dpi unless told
    assert CliRunner().invoke(cli, ["plot", str(run), "--dpi", "0"]).exit_code == 2


def test_cli_plot_unwritable_out_exits_2_in_one_line(runs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    targets = [blocker / "sub"] + ([Path("/proc/x")] if Path("/proc").is_dir() else [])
    for target in targets:
        result = CliRunner().invoke(cli, ["plot", str(runs["steps0"].path), "--out", str(target)])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert "cannot write figure" in result.output and str(target) in result.output


@pytest.fixture(scope="module")
def spectrum_runs(tmp_path_factory):
    """A Gaussian and an orthogonal tanh run that measured their Jacobian spectrum."""
    folder = tmp_path_factory.mktemp("spectrum")
    common = ["analysis.spectrum.enabled=true", "model.activation=tanh", "model.width=16"]
    common += ["analysis.spectrum.at=init_and_end"]
    return [
        _make(folder / scheme, [*common, f"model.init.scheme={scheme}"], name=scheme)
        for scheme in ("normal", "orthogonal")
    ]


def test_spectrum_figures_drawn_only_for_runs_that_measured_it(spectrum_runs, runs, tmp_path):
    written, warnings, _ = plots.plot_paths([spectrum_runs[0].path.parent], out=tmp_path / "s")
    names = {path.name for path in written}
    assert warnings == []
    assert {"spectrum.png", "compare_spectrum.png"} <= names
    assert len(list((tmp_path / "s").rglob("spectrum.png"))) == 2
    assert plots.spectrum_density(runs["normal"]) is None  # no spectrum.csv: no figure
    assert plots.compare_spectrum([runs["normal"], spectrum_runs[0]], ["a", "b"]) is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "step,sample,x,singular_value\n0,0,1,0.5\n",
            "spectrum.csv: step 0 has rows without a sample >= 0 and a rank >= 1",
        ),
        (
            "step,sample,rank,singular_value\nzz,0,1,0.5\n",
            "spectrum.csv unreadable: could not convert string to float: 'zz'",
        ),
    ],
)
def test_a_damaged_spectrum_csv_is_a_warning_that_names_it(spectrum_runs, tmp_path, text, error):
    damaged = tmp_path / "damaged"
    shutil.copytree(spectrum_runs[0].path, damaged)
    (damaged / "spectrum.csv").write_text(text)
    written, warnings, _ = plots.plot_paths([damaged], out=tmp_path / "plots")
    assert warnings == [f"{damaged}: spectrum not drawn (ValueError: {error})"]
    assert {path.name for path in written} == {f"{name}.png" for name in RUN_FIGURES}


def test_spectrum_density_shows_every_measured_step_and_the_isometry_marker(spectrum_runs):
    figure = plots.spectrum_density(spectrum_runs[1])
    assert figure.gradlab_shown["steps"] == [0, 10]
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    assert any(list(line.get_xdata()) == [1.0, 1.0] for line in ax.get_lines())  # s = 1
    summary = spectrum_runs[1].summary["spectrum"]["init"]
    assert f"var {summary['var_sq']:.3g}" in ax.get_title()
    overlay = plots.compare_spectrum(spectrum_runs, ["Gaussian", "orthogonal"])
    labels = overlay.axes[0].get_legend_handles_labels()[1]
    assert labels[0].startswith("Gaussian: var s²") and "isometry" in labels[-1]


def test_runs_differing_in_their_schedule_get_the_update_ratio_comparison(tmp_path, runs):
    warm = [
        _make(tmp_path / f"warmup{steps}", [f"train.schedule.warmup_steps={steps}"])
        for steps in (0, 4)
    ]
    written, warnings, _ = plots.plot_group(warm, tmp_path / "plots")
    assert warnings == []
    assert [path.name for path in written] == [
        *(f"{name}.png" for name in GROUP_FIGURES),
        "compare_update_ratio.png",
    ]
    assert plots.compare_update_ratio(warm).gradlab_shown["labels"] == [
        "warmup_steps=0",
        "warmup_steps=4",
    ]
    figure = plots.compare_update_ratio([*warm, runs["diverged"]])  # and a diverged run
    assert len(figure.axes) == 4  # three panels and the colour bar of the layers
    # runs that do not differ in their schedule: the figures they always had, no more
    norms = [read_run(runs["norms"] / norm) for norm in ("none", "batch")]
    assert "compare_update_ratio" not in plots.group_figures(norms)


@pytest.fixture(scope="module")
def trainability_sweep(tmp_path_factory):
    """Weight scale x depth on a tiny .npz classification file (real data: train_accuracy)."""
    folder = tmp_path_factory.mktemp("trainability")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)), rng.integers(0, 3, size=60)
    np.savez(folder / "data.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    base = {
        "data": {"source": "file", "path": str(folder / "data.npz"), "task": "multiclass"},
        "model": {"width": 6, "activation": "tanh", "init": {"bias_scale": 0.2236}},
        "train": {"steps": 5, "batch_size": 20},
        "log": {"every": 5, "eval_every": 5},
    }
    runs = []
    for weight_scale in (1.0, 2.0):
        for depth in (2, 4):
            overrides = [f"model.init.weight_scale={weight_scale}", f"model.depth={depth}"]
            config = config_from_dict({"name": f"w{weight_scale}_d{depth}", **base}, overrides)
            runs.append(run_config(config, out=folder / config.name))
    return folder, [read_run(run.path) for run in runs]


def test_weight_scale_by_depth_on_real_data_gets_the_trainability_figure(trainability_sweep):
    folder, runs = trainability_sweep
    written, warnings, notes = plots.plot_group(runs, folder / "plots")
    assert warnings == []
    _check_png(folder / "plots" / "trainability.png")
    assert folder / "plots" / "trainability.json" in written
    report = json.loads((folder / "plots" / "trainability.json").read_text())
    accuracies = {
        (point["weight_scale"], point["depth"]): point["train_accuracy"]
        for point in report["points"]
    }
    for run in runs:
        key = (run.config["model"]["init"]["weight_scale"], run.config["model"]["depth"])
        assert accuracies[key] == run.summary["final"]["train_accuracy"]
    assert report["threshold"] == pytest.approx(2 / 3)  # halfway from chance 1/3 to 1
    separation = report["separation"]
    assert separation["points"] == 4 and 0 <= separation["misclassified"] <= 4
    assert set(report["misclassified_at"]) == {"1", "2", "6"}
    assert len(notes) == 1 and notes[0].startswith("trainability: trainable = final training")
    assert f"k = {plots_fmt(separation['k'])} " in notes[0]
    # the curve's xi_c is theory's at each weight scale, infinite values as null
    curve = report["curve"]
    assert curve["weight_scale"][0] == 1.0 and curve["weight_scale"][-1] == 2.0
    assert len(curve["xi_c"]) == len(curve["weight_scale"])


def test_trainability_figure_needs_weight_scale_and_depth_and_a_training_accuracy(
    runs, plotted, trainability_sweep
):
    written, _, notes = plotted["sweep"]  # synthetic data: no training accuracy
    assert not any(path.stem == "trainability" for path in written) and notes == []
    _, real = trainability_sweep
    same_depth = [run for run in real if run.config["model"]["depth"] == 2]
    assert not plots.trainability_applies(same_depth, plots.phase_keys(same_depth))


def test_gradlab_plot_prints_what_figures_report(monkeypatch, tmp_path):
    """The CLI prints each file, then each figure's report line (the fitted k); the line's
    content is tested above, on the library (drawing every run's figures here would be slow)."""
    note = "trainability: trainable = ...; depth <= k xi_c separates best at k = 2"
    written = [tmp_path / "trainability.png", tmp_path / "trainability.json"]
    monkeypatch.setattr(
        plots, "plot_paths", lambda *args, **kwargs: plots.Plotted(written, [], [note])
    )
    result = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [*map(str, written), note]


def _svg_texts(figure: Figure) -> list[tuple[str, str]]:
    """(text, font family) of each text run of ``figure`` saved as SVG, as gradlab saves it."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        figure.savefig(buffer, format="svg")
    runs = []
    for node in ElementTree.fromstring(buffer.getvalue()).iter():
        if node.tag.endswith(("}text", "}tspan")) and node.text:
            family = re.search(r"font-family: ?([^;]+)", node.get("style", ""))
            runs.append((node.text, family.group(1) if family else ""))
    return runs


def test_every_figure_writes_its_text_in_a_font_a_browser_can_show(
    runs, spectrum_runs, trainability_sweep, tmp_path
):
    """Every text run of every kind of figure is in DejaVu Sans (or its fallbacks), never in
    a mathtext font such as STIXNonUnicode, whose glyphs (a \\mathcal L) sit at private code
    points that a browser shows as boxes; the lecture's symbols are Unicode."""
    sweep = [read_run(meta.parent) for meta in sorted(runs["sweep"].glob("*/meta.json"))]
    warm = [
        _make(tmp_path / f"warmup{steps}", [f"train.schedule.warmup_steps={steps}"])
        for steps in (0, 4)
    ]
    figures = {
        **plots.run_figures(runs["normal"]),
        "spectrum": lambda: plots.spectrum_density(spectrum_runs[1]),
        **plots.group_figures(sweep),
        "compare_spectrum": lambda: plots.compare_spectrum(spectrum_runs, ["a", "b"]),
        "compare_update_ratio": lambda: plots.compare_update_ratio(warm),
        "trainability": lambda: plots.trainability_figure(trainability_sweep[1]),
    }
    assert {"phase_factor", "compare_loss"} <= set(figures)
    seen = set()
    for name, build in figures.items():
        texts = _svg_texts(build())
        assert texts, name
        families = {family.split(",")[0].strip("'") for _, family in texts if family}
        assert families <= {"DejaVu Sans"}, (name, families)
        seen.update(text for text, _ in texts)
    joined = " ".join(seen)
    for symbol in ("|δₗ|", "|∂ℒ/∂Wₗ|", "∝ Mᴸ⁻ˡ", "|ΔWₗ| / |Wₗ|", "∂xᴸ/∂x¹"):
        assert symbol in joined, symbol


def test_dollar_signs_in_a_config_value_are_shown_as_written(tmp_path):
    """A value is not mathtext: a data file 'cost $1$.npz' stays so in the legend."""
    rng = np.random.default_rng(0)
    made = []
    for k in (1, 2):
        x, y = rng.normal(size=(48, 4)), rng.integers(0, 2, size=48)
        path = tmp_path / f"cost ${k}$.npz"
        np.savez(path, x_train=x[:32], y_train=y[:32], x_test=x[32:], y_test=y[32:])
        data = {"source": "file", "path": str(path), "task": "binary"}
        config = config_from_dict({**copy.deepcopy(TINY), "name": f"r{k}", "data": data})
        made.append(run_config(config, out=tmp_path / f"r{k}"))
    labels = plots.run_labels(made)  # matplotlib's escape of a dollar sign
    assert [label.rsplit("/", 1)[-1] for label in labels] == [r"cost \$1\$.npz", r"cost \$2\$.npz"]
    legend = " ".join(text for text, _ in _svg_texts(plots.compare_loss(made)))
    assert "cost $1$.npz" in legend and "cost $2$.npz" in legend
