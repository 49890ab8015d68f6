"""`gradlab report`: the page of a sweep, of one run and of damaged runs; escaping; bad input;
and (marked ``browser``) the page as headless Chromium renders it."""

import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from gradlab import plots
from gradlab.cli import cli
from gradlab.report import summarize
from gradlab.webreport import build_report
from gradlab.webreport import page as page_module

TINY = {
    "data": {"n_train": 64, "n_test": 32, "input_dim": 8},
    "model": {"width": 8},
    "train": {"steps": 6, "batch_size": 32, "lr": 0.1},
    "log": {"every": 2, "eval_every": 3},
}
# depth first: the summary's own order (depth, then weight scale) is not the order of M
GRID = {"model.depth": [4, 6], "model.init.weight_scale": [1, 16]}
# the figures of a run without a Jacobian spectrum, in plots.run_figures' order
RUN_FIGURES = ("gradient_by_layer", "gradient_heatmap", "loss", "clipping", "saturation")
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
    """A real sweep of four tiny runs (two jobs), shared by the tests of this module."""
    folder = tmp_path_factory.mktemp("sweep")
    spec = folder / "tiny.yaml"
    spec.write_text(yaml.safe_dump({"name": "tiny", "config": TINY, "grid": GRID}))
    result = invoke("sweep", spec, "--out", folder / "tiny", "--jobs", 2, "--quiet")
    assert result.exit_code == 0, result.output
    return folder / "tiny"


@pytest.fixture(scope="module")
def page(sweep_root):
    """The sweep's report, written by the CLI to its default place."""
    result = invoke("report", sweep_root)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(sweep_root / "report.html")
    return (sweep_root / "report.html").read_text(encoding="utf-8")


@pytest.fixture
def few_figures(monkeypatch):
    """Only the loss figure per run and one comparison: drawing is what a report costs, and
    these tests are about the rest."""

    def only(figures, name):
        return {key: build for key, build in figures.items() if key == name}

    page_module = "gradlab.webreport.page"
    monkeypatch.setattr(
        f"{page_module}.run_figures",
        lambda run, names=None: only(plots.run_figures(run, names), "loss"),
    )
    monkeypatch.setattr(
        f"{page_module}.group_figures", lambda runs: only(plots.group_figures(runs), "compare_loss")
    )


class Page(HTMLParser):
    """The parts of a report page the tests look at: the summary table (headers; rows with
    their attributes and cell texts, in order), the figures of each section, the attributes
    of the run sections, every URL-bearing attribute and the number of scripts."""

    def __init__(self, html: str):
        super().__init__()
        self.headers, self.rows, self.urls, self.scripts = [], [], [], 0
        self.figures: dict[str, list[str]] = {}  # section id -> figure names
        self.sections: dict[str, dict] = {}  # run section id -> its attributes
        self._table, self._section, self._cell = None, None, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script"
        self.urls += [attrs[name] for name in ("src", "href", "action") if name in attrs]
        if tag == "table":
            self._table = attrs.get("id")
        elif tag == "th" and self._table == "summary-table":
            self.headers.append(attrs["data-key"])
        elif tag == "tr" and self._table == "summary-table" and "data-run" in attrs:
            self.rows.append({"cells": [], **attrs})
        elif tag == "td" and self._table == "summary-table":
            self._cell = []
        elif tag == "section" and re.fullmatch(r"figures|run=\d+", attrs.get("id", "")):
            self._section = attrs["id"]
            self.figures[self._section] = []
            self.sections[self._section] = attrs
        elif tag == "figure" and self._section:
            self.figures[self._section].append(attrs["data-figure"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        if tag == "td" and self._cell is not None:
            self.rows[-1]["cells"].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_the_sweep_page_has_its_header_table_figures_and_runs(page, sweep_root):
    parsed = Page(page)
    assert len(parsed.rows) == 4  # one row per run
    assert parsed.headers[:4] == ["name", "status", "depth", "weight_scale"]
    assert {"M_init", "M_theory", "verdict"} <= set(parsed.headers)
    # the sweep's comparison figures and phase diagram, then each run's own five figures
    assert parsed.figures["figures"] == [
        "compare_gradient_by_layer",
        "compare_loss",
        "phase_factor",
        "phase_test_loss",
    ]
    for index in range(1, 5):
        assert parsed.figures[f"run={index}"] == list(RUN_FIGURES)
    # the header: the sweep, its spec, the versions and the BLAS the runs recorded
    meta = json.loads(next(sweep_root.glob("*/meta.json")).read_text())
    assert "sweep tiny: 4 runs of 4 points (4 completed)" in page
    assert "grid:\n  model.depth:\n  - 4\n  - 6\n" in page  # the spec, as YAML
    assert f"numpy {meta['numpy']}" in page
    assert f"kernel {meta['blas']['kernel'] or 'unknown'}" in page
    # nothing on the page refers to a file or a host: the figures are inline SVG
    assert parsed.scripts == 1
    assert all(url.startswith("#") for url in parsed.urls)
    assert not re.search(r"https?://", page)


def test_each_figure_is_inline_svg_whose_ids_are_its_own(page):
    """All figures share one document: every id on the page is unique, and every reference
    inside a figure (a clip path, a marker) points into that same figure."""
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    figures = re.findall(
        r'<figure data-figure="(\w+)"[^>]*>(<svg .*?</svg>)<figcaption>', page, re.S
    )
    assert len(figures) == 4 + 4 * len(RUN_FIGURES)
    for name, svg in figures:
        assert svg.startswith(f'<svg role="img" aria-label="{name.replace("_", " ")}"')
        own = set(re.findall(r'\bid="([^"]+)"', svg))
        used = set(re.findall(r'(?:url\(#|href="#)([^")]+)', svg))
        assert used and used <= own, name
    # at most its own size: the two-panel figure is wider than a one-panel one
    widths = dict(re.findall(r'<figure data-figure="(\w+)" style="max-width: (\d+)px">', page))
    assert int(widths["gradient_by_layer"]) == 960 and int(widths["loss"]) == 614


def test_the_table_shows_what_gradlab_summary_prints(page, sweep_root):
    """Same columns, same rows in the same order, same cell texts (no empty cells here)."""
    printed = [line.split() for line in summarize([sweep_root]).splitlines()]
    parsed = Page(page)
    assert printed[0] == parsed.headers
    assert printed[1:] == [[cell for cell in row["cells"] if cell] for row in parsed.rows]
    assert [row["data-run"] for row in parsed.rows] == ["1", "2", "3", "4"]


def test_m_cells_carry_the_sort_value_and_the_verdict_colour(page, sweep_root):
    summary = json.loads(summarize([sweep_root], "json"))
    for row in summary:
        cell = re.search(
            r'<td class="num regime-(\w+)" data-sort="([^"]+)">'
            + re.escape(f"{row['M_init']:.4g}"),
            page,
        )
        assert cell is not None, row["name"]
        assert cell.group(1) == row["verdict"]
        assert float(cell.group(2)) == row["M_init"]  # exact, for sorting


def test_the_same_runs_give_the_same_page_byte_for_byte(sweep_root, page, monkeypatch):
    """Also when the figures are drawn in worker processes (as for a large sweep)."""
    monkeypatch.setattr("gradlab.webreport.page.PARALLEL_FROM", 2)
    assert build_report(sweep_root, jobs=2).html == page


def test_one_run_gets_the_page_of_that_run_alone(sweep_root, tmp_path):
    run = tmp_path / "one"
    shutil.copytree(next(sweep_root.glob("depth=4,weight_scale=1*")), run)
    result = invoke("report", run, "--out", tmp_path / "pages" / "one.html")  # a new folder
    assert result.exit_code == 0, result.output
    html = (tmp_path / "pages" / "one.html").read_text()
    parsed = Page(html)
    assert len(parsed.rows) == 1
    assert "figures" not in parsed.figures  # nothing to compare
    assert parsed.figures["run=1"] == list(RUN_FIGURES)
    assert "run depth=4,weight_scale=1 (completed)" in html
    assert "vanishing: the gradient shrinks x0.17" in html  # its verdict sentence
    assert "model:\n  depth: 4\n" in html  # its resolved config


def test_a_run_with_its_report_inside_may_still_be_replaced(sweep_root, tmp_path, few_figures):
    run = tmp_path / "one"
    shutil.copytree(next(sweep_root.glob("depth=4,weight_scale=1*")), run)
    assert invoke("report", run).exit_code == 0
    assert (run / "report.html").is_file()  # the default place: inside the run
    config = tmp_path / "config.yaml"
    config.write_text((run / "config.yaml").read_text())
    result = invoke("run", config, "--out", run, "--force", "--quiet")
    assert result.exit_code == 0, result.output


def test_missing_and_corrupt_files_are_listed_and_the_other_runs_shown(
    sweep_root, tmp_path, few_figures
):
    root = tmp_path / "damaged"
    shutil.copytree(sweep_root, root)
    points = sorted(path for path in root.iterdir() if (path / "meta.json").is_file())
    (points[0] / "metrics.csv").unlink()
    header = (points[1] / "layers.csv").read_text().splitlines()[0]
    with open(points[1] / "layers.csv", "a") as handle:  # a whole row, of text
        handle.write(",".join(["garbage"] * len(header.split(","))) + "\n")
    (points[1] / "summary.json").unlink()
    (points[2] / "summary.json").write_text("{not json")
    result = CliRunner().invoke(cli, ["report", str(root)])
    assert result.exit_code == 0, result.output
    html = (root / "report.html").read_text()
    parsed = Page(html)
    assert len(parsed.rows) == 4
    names = [path.name for path in points]
    assert f"{names[0]}: metrics.csv missing" in result.stderr
    assert f"{names[1]}: layers.csv unreadable" in result.stderr
    assert f"{names[1]}: summary.json missing" in result.stderr
    assert f"{names[2]}: summary.json unreadable" in result.stderr
    problems = html[html.index('id="problems"') : html.index('id="summary"')]
    assert all(name in problems for name in names[:3])
    assert names[3] not in problems
    # every run keeps its figures; the comparisons are drawn from the readable runs
    assert all(parsed.figures[f"run={index}"] == ["loss"] for index in range(1, 5))
    assert parsed.figures["figures"] == ["compare_loss"]


def test_a_damaged_spectrum_csv_is_a_warning_and_the_page_is_written(sweep_root, tmp_path):
    """A run whose spectrum.csv has a cell that is not a number: the report names the file in
    a warning (on stderr and on the page) instead of ending in a traceback."""
    folder = tmp_path / "runs"
    for name in ("depth=4,weight_scale=1", "depth=4,weight_scale=16"):
        shutil.copytree(sweep_root / name, folder / name)
    damaged = folder / "depth=4,weight_scale=1"
    (damaged / "spectrum.csv").write_text("step,sample,rank,singular_value\nzz,0,1,0.5\n")
    out = tmp_path / "page.html"
    result = CliRunner().invoke(cli, ["report", str(folder), "--out", str(out), "-j", "1"])
    assert result.exit_code == 0, result.output
    message = "spectrum not drawn (ValueError: spectrum.csv unreadable: could not convert"
    assert message in result.output and "Traceback" not in result.output
    assert message in out.read_text()


def test_script_in_a_config_value_or_a_run_name_is_escaped(sweep_root, tmp_path, few_figures):
    root = tmp_path / "hostile"
    shutil.copytree(sweep_root, root)
    for index, point in enumerate(sorted(p for p in root.iterdir() if (p / "meta.json").is_file())):
        config = yaml.safe_load((point / "config.yaml").read_text())
        config["name"] = f'<script>alert({index})</script> url(#a) id="b"'
        config["model"]["note"] = f'"><script>alert("note{index}")</script>'
        (point / "config.yaml").write_text(yaml.safe_dump(config))
    html = build_report(root).html
    assert html.count("<script") == 1  # the page's own
    assert "&lt;script&gt;alert(0)&lt;/script&gt; url(#a) id=&#34;b&#34;" in html
    # in a figure's title, as matplotlib escapes SVG text; the ids' prefixes leave text alone
    assert '&lt;script&gt;alert(0)&lt;/script&gt; url(#a) id="b"' in html
    assert "&#34;&gt;&lt;script&gt;alert(&#34;note1&#34;)&lt;/script&gt;" in html
    assert "note" in Page(html).headers  # a varied key: a column


def test_figures_picks_the_figures_of_each_run_and_the_page_says_so(sweep_root, page, tmp_path):
    out = tmp_path / "page.html"
    result = invoke("report", sweep_root, "--out", out, "--figures", " loss,gradient_by_layer")
    assert result.exit_code == 0, result.output
    html = out.read_text()
    parsed = Page(html)
    for index in range(1, 5):  # in gradlab plot's order, not the option's
        assert parsed.figures[f"run={index}"] == ["gradient_by_layer", "loss"]
    assert len(parsed.figures["figures"]) == 4  # the comparisons are not per run: all drawn
    # spectrum is not named: no run measured a Jacobian spectrum, it would not be drawn
    assert (
        "(<code>--figures</code>); not drawn: gradient_heatmap, clipping, saturation</dd>" in html
    )
    assert "not drawn" not in page  # without --figures, 4 runs: every figure


class FakeRun:
    """Stands in for a Run in default_figures: only whether it measured a spectrum."""

    def __init__(self, spectrum: bool):
        self.spectrum = {"step": np.zeros(int(spectrum))}


@pytest.mark.parametrize(
    ("n_runs", "with_spectrum", "expected"),
    [
        (1, 0, RUN_FIGURES),
        (30, 0, RUN_FIGURES),  # 150 figures: all
        (31, 0, ("gradient_by_layer", "gradient_heatmap", "loss", "saturation")),
        (50, 0, ("gradient_by_layer", "gradient_heatmap", "loss")),
        (51, 0, ("gradient_by_layer", "loss")),
        (75, 0, ("gradient_by_layer", "loss")),
        (76, 0, ("gradient_by_layer",)),
        (1000, 0, ("gradient_by_layer",)),  # at least the gradient figure
        (25, 25, (*RUN_FIGURES, "spectrum")),  # the spectrum counts where it was measured
        (40, 10, ("gradient_by_layer", "gradient_heatmap", "loss", "spectrum")),
        (50, 1, ("gradient_by_layer", "loss", "spectrum")),
    ],
)
def test_a_page_draws_at_most_150_figures_of_runs_the_most_telling_first(
    n_runs, with_spectrum, expected
):
    assert sorted(page_module.FIGURE_PRIORITY) == sorted(plots.RUN_FIGURES)
    runs = [FakeRun(index < with_spectrum) for index in range(n_runs)]
    assert page_module.default_figures(page_module.figure_counts(runs)) == expected


def test_a_page_of_more_runs_says_which_figures_it_left_out_and_how_to_get_them(
    sweep_root, page, tmp_path, monkeypatch
):
    """Drawing is what a report costs: the page of the 4-run sweep under a budget of 8
    figures has the gradient and loss figures of each run, the header says why and how to get
    the rest; --figures all draws them all."""
    monkeypatch.setattr(page_module, "FIGURE_BUDGET", 8)
    out = tmp_path / "page.html"
    assert invoke("report", sweep_root, "--out", out, "--jobs", 1).exit_code == 0
    html = out.read_text()
    assert all(names == ["gradient_by_layer", "loss"] for names in _run_figures(html))
    left_out = "Not drawn on this page (see the header): gradient_heatmap, clipping, saturation;"
    assert html.count(left_out) == 4  # in each run's section
    assert (
        "(4 runs: a page draws at most 8 figures of runs unless <code>--figures</code> names "
        "them; <code>--figures all</code> draws every one); not drawn: gradient_heatmap, "
        "clipping, saturation</dd>" in html
    )
    assert invoke("report", sweep_root, "--out", out, "--figures", "all").exit_code == 0
    html = out.read_text()
    assert all(names == list(RUN_FIGURES) for names in _run_figures(html))
    assert "not drawn" not in html


def _run_figures(html: str) -> list[list[str]]:
    figures = Page(html).figures
    runs = [figures[key] for key in figures if key.startswith("run=")]
    assert len(runs) == 4
    return runs


def test_report_help_names_the_default_figures():
    help_text = " ".join(invoke("report", "--help").output.split())
    priority = ", ".join(page_module.FIGURE_PRIORITY)
    assert f"at most {page_module.FIGURE_BUDGET} figures of runs" in help_text
    assert f"the first of {priority} that fit" in help_text


@pytest.mark.parametrize(
    ("figures", "expected"),
    [("lss", "unknown figure 'lss'; did you mean 'loss'?"), (" , ", "no figure named")],
)
def test_an_unknown_figure_is_one_line_exit_2(sweep_root, tmp_path, figures, expected):
    out = tmp_path / "page.html"
    result = CliRunner().invoke(
        cli, ["report", str(sweep_root), "--out", str(out), "--figures", figures]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: --figures: {expected} (allowed: gradient_by_layer, gradient_heatmap, loss, "
        "clipping, saturation, spectrum; or all)"
    ]
    assert not out.exists()


def test_no_runs_or_a_missing_path_is_one_line_exit_2(tmp_path):
    for path in (tmp_path, tmp_path / "nowhere"):
        result = CliRunner().invoke(cli, ["report", str(path)])
        assert result.exit_code == 2
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert str(path) in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_an_unwritable_out_is_one_line_exit_2(sweep_root, tmp_path, where, few_figures):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "report.html" if where == "under_a_file" else tmp_path
    result = CliRunner().invoke(cli, ["report", str(sweep_root), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot write the report {out}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]


def test_open_launches_the_written_page(sweep_root, tmp_path, monkeypatch, few_figures):
    opened = []
    monkeypatch.setattr("click.launch", lambda url, **options: opened.append(url))
    out = tmp_path / "page.html"
    assert invoke("report", sweep_root, "--out", out, "--open").exit_code == 0
    assert opened == [str(out)]


@pytest.mark.slow
def test_a_wheel_ships_the_template(tmp_path):
    """A non-editable install finds the template: it is package data."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(root)],
        check=True,
        capture_output=True,
    )
    names = zipfile.ZipFile(next(tmp_path.glob("gradlab-*.whl"))).namelist()
    templates = root / "gradlab" / "webreport" / "templates"
    for path in templates.iterdir():
        assert f"gradlab/webreport/templates/{path.name}" in names


# ---- in a real browser ---------------------------------------------------------------------


def _browser():
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def _chromium(page: Path, fragment: str, *mode: str) -> str:
    """Run headless Chromium on ``page#fragment`` with ``mode`` (--dump-dom, --screenshot=);
    no network: every host name resolves to nothing."""
    with tempfile.TemporaryDirectory() as profile:
        command = [
            _browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",  # the page's script, and image decoding, run first
            *mode,
            f"{page.resolve().as_uri()}#{fragment}",
        ]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, cwd=profile
        )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.mark.browser
@pytest.mark.skipif(
    _browser() is None,
    reason=f"no headless browser on PATH ({', '.join(BROWSERS)}): apt-get install chromium",
)
def test_the_page_in_headless_chromium(page, sweep_root, tmp_path):
    html_path = sweep_root / "report.html"
    summary = {row["name"]: row for row in json.loads(summarize([sweep_root], "json"))}
    source_order = [row["cells"][0] for row in Page(page).rows]
    by_m = sorted(source_order, key=lambda name: summary[name]["M_init"])
    assert by_m != source_order  # so that sorting has something to do
    # sorted by M (the URL asks for it, the script does it), run 3 picked
    dom = _chromium(html_path, "sort=M_init&run=3", "--dump-dom")
    rendered = Page(dom)
    assert [row["cells"][0] for row in rendered.rows] == by_m
    assert 'aria-sort="ascending"' in dom
    # the picked run's section is shown, with every figure drawn by the browser
    section = rendered.sections["run=3"]
    assert "shown" in section["class"].split()
    assert section["data-figures-shown"] == str(len(RUN_FIGURES))
    assert all("shown" not in rendered.sections[f"run={i}"]["class"] for i in (1, 2, 4))
    assert not re.search(r"https?://", dom)
    # descending, and a filter by verdict
    verdict = summary[by_m[0]]["verdict"]
    dom = _chromium(html_path, f"sort=-M_init&verdict={verdict}", "--dump-dom")
    rendered = Page(dom)
    assert [row["cells"][0] for row in rendered.rows] == by_m[::-1]
    kept = [row["cells"][0] for row in rendered.rows if "hidden" not in row]
    assert kept == [name for name in by_m[::-1] if summary[name]["verdict"] == verdict]
    # a screenshot is a picture, not a blank page (headless Chromium draws a page scrolled to
    # a run blank, so the top of the page: the header, the table and the first figures)
    shot = tmp_path / "shot.png"
    _chromium(html_path, "sort=M_init", f"--screenshot={shot}", "--window-size=1200,900")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    assert len(colours) > 50, len(colours)
