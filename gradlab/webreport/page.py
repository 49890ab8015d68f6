"""Building the report: read the runs, draw their figures as inline SVG, render the template,
write the page atomically."""

from __future__ import annotations

import functools
import io
import multiprocessing
import re
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2
import matplotlib
import numpy as np
from markupsafe import Markup, escape
from matplotlib.collections import QuadMesh

from gradlab.errors import GradlabError
from gradlab.plots import METADATA, RUN_FIGURES, draw_figures, group_figures, run_figures
from gradlab.report import summary_rows
from gradlab.results import (
    REPORT_PAGE,
    Run,
    atomic_writer,
    cannot_write,
    find_runs,
    is_run_dir,
    read_run,
)
from gradlab.sweep import default_jobs, read_sweep_record
from gradlab.webreport import content

DEFAULT_NAME = REPORT_PAGE  # in PATH, without --out
FIGURE_FORMAT = "svg"  # text stays text (sharp at any zoom)
FIGURE_DPI = 100  # of the images inside an SVG: heatmap cells, rasterized
PARALLEL_FROM = 8  # runs: fewer are drawn in this process (a worker takes ~1 s to start)
# Drawing is most of a report's time: about 0.2 s of CPU per figure. Unless --figures names
# them, a page draws at most this many figures of runs: every figure of each run up to 30
# runs; for more, the first figures of FIGURE_PRIORITY that fit (at least the gradient
# figure), so that 100 runs build in under 30 s on 2 cores (benchmarks/report_size.py).
FIGURE_BUDGET = 150
FIGURE_PRIORITY = (  # every name of plots.RUN_FIGURES, the most telling first
    "gradient_by_layer",
    "loss",
    "spectrum",
    "gradient_heatmap",
    "saturation",
    "clipping",
)
# matplotlib names the parts of an SVG by a hash salted with a random value unless this is
# set: the same runs then give the same page, byte for byte
_SAVE_STYLE = {"svg.hashsalt": "gradlab"}
CSS_PX_PER_INCH = 96  # a figure's width on the page, at most: its own size
# what an SVG inside an HTML page does without: the XML prolog and doctype (everything before
# <svg), the namespace declarations (HTML gives <svg> and xlink:href theirs) and the metadata
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)
_NAMESPACES = re.compile(r' (?:xmlns(?::xlink)?|version)="[^"]*"')
_METADATA_BLOCK = re.compile(r"<metadata>.*?</metadata>", re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)  # a mathtext label's source, again
_LINE_BREAK = re.compile(r"(?<=[> ])\n[ ]*")  # after a tag or a space
_TAG = re.compile(r"<[^>]+>")
_REFERENCE = re.compile(r'(\bid="|url\(#|href="#)')  # an id, and the two ways to refer to one


@dataclass
class Report:
    """The page and what went wrong on the way (also listed on the page)."""

    html: str
    warnings: list[str]


def write_report(
    path, out=None, jobs: int | None = None, figures: Sequence[str] | None = None
) -> tuple[Path, list[str]]:
    """Build the report of the runs at or below ``path`` and write it atomically to ``out``
    (default ``path/report.html``); returns the file written and the warnings. Raises
    GradlabError when there are no runs or the file cannot be written (nothing is written)."""
    report = build_report(path, jobs, figures)
    out = Path(out) if out is not None else Path(path) / DEFAULT_NAME
    if out.is_dir():
        raise GradlabError(f"cannot write the report {out}: it is a folder; give a file name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(out) as handle:
            handle.write(report.html)
    except OSError as error:
        raise cannot_write(out, error, "report") from None
    return out, report.warnings


def build_report(path, jobs: int | None = None, figures: Sequence[str] | None = None) -> Report:
    """The HTML page of the runs at or below ``path`` (a run, a folder of runs, a sweep); the
    runs' figures (those named in ``figures``, default ``default_figures``) are drawn in
    ``jobs`` processes (default: one per core)."""
    path = Path(path)
    if not find_runs([path]):  # also: a path that does not exist
        raise GradlabError(f"no gradlab runs in {path} (looked for meta.json + config.yaml)")
    root = path.resolve()
    summary = summary_rows([path])
    runs = {row["path"]: read_run(row["path"]) for row in summary.rows}
    counts = figure_counts(list(runs.values()))
    chosen = figures is not None
    figures = tuple(figures) if chosen else default_figures(counts)
    sweep = None if is_run_dir(path) else read_sweep_record(path)
    kind = "run" if is_run_dir(path) else "sweep" if sweep is not None else "runs"
    problems = {key: run.csv_problems() for key, run in runs.items()}
    readable = [run for key, run in runs.items() if not problems[key]]
    drawn, (group_plates, group_warnings) = _draw(
        list(runs.values()), readable, jobs, str(path), figures
    )
    warnings, sections = [], []
    for index, row in enumerate(summary.rows, 1):
        run = runs[row["path"]]
        plates, figure_problems = drawn.pop(row["path"])  # (the page keeps only its copy)
        trouble = problems[row["path"]] + figure_problems
        section = content.run_section(index, row, run, root, trouble)
        section.figures = [inline(plate, f"r{index}-{plate.name}") for plate in plates]
        warnings += [f"{section.path}: {problem}" for problem in section.problems]
        sections.append(section)
    warnings += group_warnings
    group_plates = [inline(plate, f"all-{plate.name}") for plate in group_plates]
    columns, rows = content.table(summary, runs)
    statuses, verdicts = content.filter_choices(rows)
    html = _template().render(
        title=root.name,
        kind=kind,
        header=content.header(path, kind, list(runs.values()), sweep, summary.keys),
        columns=columns,
        rows=rows,
        statuses=statuses,
        verdicts=verdicts,
        group_figures=group_plates,
        figures=figures,
        figures_left_out=[name for name, n in counts.items() if n and name not in figures],
        figures_chosen=chosen,
        figure_budget=FIGURE_BUDGET,
        runs=sections,
    )
    return Report(html, warnings)


def figure_counts(runs: list[Run]) -> dict[str, int]:
    """How many of ``runs`` each figure of RUN_FIGURES applies to (a spectrum: those that
    measured one), in RUN_FIGURES' order."""
    return {
        name: sum(applies is None or applies(run) for run in runs)
        for name, (_, applies) in RUN_FIGURES.items()
    }


def default_figures(counts: dict[str, int]) -> tuple[str, ...]:
    """The figures drawn for each run when ``--figures`` is not given, from ``figure_counts``:
    the longest start of FIGURE_PRIORITY (of the figures that apply to some run) whose
    figures number at most FIGURE_BUDGET (at least one), in RUN_FIGURES' order."""
    chosen, total = [], 0
    for name in FIGURE_PRIORITY:
        if counts[name] == 0:  # (a spectrum that no run measured)
            continue
        if chosen and total + counts[name] > FIGURE_BUDGET:
            break
        chosen.append(name)
        total += counts[name]
    return tuple(name for name in counts if name in chosen)


def _draw(runs: list[Run], readable: list[Run], jobs: int | None, where: str, names: tuple):
    """Each run's figures (of ``names``) and the problems met drawing them, by the run's path,
    and the comparison figures of the ``readable`` runs (when there are two) with the
    warnings met drawing them (naming ``where``). Drawn in ``jobs`` worker processes
    (default: one per core) when there are enough runs to pay for starting them (each imports
    matplotlib), else here; the comparisons go first, being the longest job, so that they run
    beside the runs' figures, not after them."""
    jobs = jobs or default_jobs()
    if jobs == 1 or len(runs) < PARALLEL_FROM:
        groups = draw_group(readable, where) if len(readable) >= 2 else ([], [])
        return {str(run.path): draw_run(run, names) for run in runs}, groups
    # spawn, not fork: this process holds OpenBLAS's threads, which fork would not copy
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(runs)), mp_context=context) as pool:
        compare = [str(run.path) for run in readable]
        groups = pool.submit(draw_group, compare, where) if len(readable) >= 2 else None
        drawn = pool.map(functools.partial(draw_run, names=names), [str(r.path) for r in runs])
        drawn = {str(run.path): result for run, result in zip(runs, drawn, strict=True)}
        return drawn, groups.result() if groups else ([], [])


def draw_group(runs: list[Run | str], where: str) -> tuple[list[content.Plate], list[str]]:
    """The comparison figures of ``runs`` (or their folders: in a worker process) and the
    warnings met drawing them."""
    warnings = []
    runs = [read_run(run) if isinstance(run, str) else run for run in runs]
    return _plates(group_figures(runs), warnings, where), warnings


def draw_run(run: Run | str, names: tuple | None = None) -> tuple[list[content.Plate], list[str]]:
    """A run's figures (of ``names``, default all; the run, or its folder: in a worker
    process) and the problems met."""
    run = read_run(run) if isinstance(run, str) else run
    problems = []
    return _plates(run_figures(run, names), problems, "figure"), problems


def _plates(figures: dict, warnings: list, where: str) -> list[content.Plate]:
    """Draw ``figures`` (name -> builder) as SVG markup; failures become ``warnings``."""

    def embed(name, figure) -> content.Plate:
        for axes in figure.axes:  # a heatmap's cells as one image, not a path per cell
            for mesh in axes.collections:
                if isinstance(mesh, QuadMesh):
                    mesh.set_rasterized(True)
        buffer = io.BytesIO()
        # a diverged run's losses near 1e300 overflow the log-axis tick locator (see plots)
        with matplotlib.rc_context(_SAVE_STYLE), np.errstate(over="ignore"):
            figure.savefig(
                buffer, format=FIGURE_FORMAT, dpi=FIGURE_DPI, metadata=METADATA[FIGURE_FORMAT]
            )
        svg = _compact(buffer.getvalue())
        width = round(figure.get_figwidth() * CSS_PX_PER_INCH)  # as the SVG is drawn
        return content.Plate(name, content.caption(name), svg, width)

    return draw_figures(figures, embed, warnings, where)


def _compact(svg: bytes) -> str:
    """matplotlib's SVG as an element of an HTML page: from ``<svg`` on, without namespace
    declarations, metadata, comments and layout whitespace (a newline after a tag or a
    space, and the indent after it)."""
    text = _PROLOG.sub("", svg.decode("utf-8"), count=1)
    root, rest = text.split(">", 1)  # the <svg ...> tag, and all inside it
    text = f"{_NAMESPACES.sub('', root)}>{rest}"
    text = _COMMENT.sub("", _METADATA_BLOCK.sub("", text, count=1))
    return _LINE_BREAK.sub("", text)


def inline(plate: content.Plate, scope: str) -> content.Plate:
    """A figure's SVG for the page: each id (and each reference to one) prefixed with
    ``scope``, unique on the page, since all figures share one document and one figure's
    clip path must not stand in for another's; labelled with its caption for screen readers.

    Marked safe for the template: matplotlib writes it, escaping every text and attribute
    value (a run name in a title arrives as ``&lt;script&gt;``); only inside tags is anything
    rewritten, so no text a config or a file name brought in is touched."""
    svg = _TAG.sub(lambda tag: _REFERENCE.sub(rf"\g<1>{scope}-", tag.group(0)), plate.svg)
    label = f' role="img" aria-label="{escape(plate.caption)}"'
    return replace(plate, svg=Markup(svg.replace("<svg", "<svg" + label, 1)))


def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("gradlab.webreport", "templates"),
        autoescape=True,  # every value from a config, a file or a folder name is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("report.html.j2")
