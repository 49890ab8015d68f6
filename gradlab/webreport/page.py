"""Building the report: read the runs, draw their figures into data URIs, render the template,
write the page atomically."""

from __future__ import annotations

import base64
import io
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jinja2
import matplotlib
import numpy as np
from matplotlib.collections import QuadMesh

from gradlab.errors import GradlabError
from gradlab.plots import METADATA, draw_figures, group_figures, run_figures
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
# matplotlib names the parts of an SVG by a hash salted with a random value unless this is
# set: the same runs then give the same page, byte for byte
_SAVE_STYLE = {"svg.hashsalt": "gradlab"}
_METADATA_BLOCK = re.compile(rb"<metadata>.*?</metadata>", re.DOTALL)
_LINE_BREAK = re.compile(rb"(?<=[> ])\n[ ]*")  # after a tag or a space


@dataclass
class Report:
    """The page and what went wrong on the way (also listed on the page)."""

    html: str
    warnings: list[str]


def write_report(path, out=None, jobs: int | None = None) -> tuple[Path, list[str]]:
    """Build the report of the runs at or below ``path`` and write it atomically to ``out``
    (default ``path/report.html``); returns the file written and the warnings. Raises
    GradlabError when there are no runs or the file cannot be written (nothing is written)."""
    report = build_report(path, jobs)
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


def build_report(path, jobs: int | None = None) -> Report:
    """The HTML page of the runs at or below ``path`` (a run, a folder of runs, a sweep); the
    runs' figures are drawn in ``jobs`` processes (default: one per core)."""
    path = Path(path)
    if not find_runs([path]):  # also: a path that does not exist
        raise GradlabError(f"no gradlab runs in {path} (looked for meta.json + config.yaml)")
    root = path.resolve()
    summary = summary_rows([path])
    runs = {row["path"]: read_run(row["path"]) for row in summary.rows}
    sweep = None if is_run_dir(path) else read_sweep_record(path)
    kind = "run" if is_run_dir(path) else "sweep" if sweep is not None else "runs"
    warnings, sections, readable = [], [], []
    drawn = _draw_runs(list(runs.values()), jobs)
    for index, row in enumerate(summary.rows, 1):
        run = runs[row["path"]]
        problems = _csv_problems(run)
        if not problems:
            readable.append(run)
        plates, figure_problems = drawn[row["path"]]
        section = content.run_section(index, row, run, root, problems + figure_problems)
        section.figures = plates
        warnings += [f"{section.path}: {problem}" for problem in section.problems]
        sections.append(section)
    group_plates = []
    if len(readable) >= 2:
        group_plates = _plates(group_figures(readable), warnings, str(path))
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
        runs=sections,
    )
    return Report(html, warnings)


def _draw_runs(runs: list[Run], jobs: int | None) -> dict[str, tuple[list, list[str]]]:
    """Each run's figures and the problems met drawing them, by the run's path: in ``jobs``
    worker processes (default: one per core) when there are enough runs to pay for starting
    them (each imports matplotlib), else here."""
    jobs = jobs or default_jobs()
    if jobs == 1 or len(runs) < PARALLEL_FROM:
        return {str(run.path): draw_run(run) for run in runs}
    # spawn, not fork: this process holds OpenBLAS's threads, which fork would not copy
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(jobs, len(runs)), mp_context=context) as pool:
        drawn = pool.map(draw_run, [str(run.path) for run in runs])
        return {str(run.path): result for run, result in zip(runs, drawn, strict=True)}


def draw_run(run: Run | str) -> tuple[list[content.Plate], list[str]]:
    """A run's figures (the run, or its folder: in a worker process) and the problems met."""
    run = read_run(run) if isinstance(run, str) else run
    problems = []
    return _plates(run_figures(run), problems, "figure"), problems


def _csv_problems(run: Run) -> list[str]:
    """metrics.csv and layers.csv that cannot be parsed (a cell that is not a number)."""
    problems = []
    for name in ("metrics", "layers"):
        try:
            getattr(run, name)
        except (ValueError, OSError) as error:
            problems.append(f"{name}.csv unreadable: {error}")
    return problems


def _plates(figures: dict, warnings: list, where: str) -> list[content.Plate]:
    """Draw ``figures`` (name -> builder) into data URIs; failures become ``warnings``."""

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
        data = base64.b64encode(_compact(buffer.getvalue())).decode("ascii")
        uri = f"data:image/svg+xml;base64,{data}"
        return content.Plate(name, content.caption(name), uri)

    return draw_figures(figures, embed, warnings, where)


def _compact(svg: bytes) -> bytes:
    """matplotlib's SVG without its metadata block and its layout whitespace (a newline after
    a tag or a space, and the indent after it), 10-15% smaller."""
    svg = _METADATA_BLOCK.sub(b"", svg, count=1)
    return _LINE_BREAK.sub(b"", svg)


def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("gradlab.webreport", "templates"),
        autoescape=True,  # every value from a config, a file or a folder name is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("report.html.j2")
