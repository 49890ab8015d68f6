"""Building the report: read the runs, draw their figures into data URIs, render the template,
write the page atomically."""

from __future__ import annotations

import base64
import io
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
from gradlab.sweep import read_sweep_record
from gradlab.webreport import content

DEFAULT_NAME = REPORT_PAGE  # in PATH, without --out
FIGURE_FORMAT = "svg"  # text stays text, and line plots are smaller than as PNG
FIGURE_DPI = 100  # of the images inside an SVG: heatmap cells, rasterized
_MIME = {"svg": "image/svg+xml", "png": "image/png"}
# matplotlib names the parts of an SVG by a hash salted with a random value unless this is
# set: the same runs then give the same page, byte for byte
_SAVE_STYLE = {"svg.hashsalt": "gradlab"}


@dataclass
class Report:
    """The page and what went wrong on the way (also listed on the page)."""

    html: str
    warnings: list[str]


def write_report(path, out=None) -> tuple[Path, list[str]]:
    """Build the report of the runs at or below ``path`` and write it atomically to ``out``
    (default ``path/report.html``); returns the file written and the warnings. Raises
    GradlabError when there are no runs or the file cannot be written (nothing is written)."""
    report = build_report(path)
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


def build_report(path) -> Report:
    """The HTML page of the runs at or below ``path`` (a run, a folder of runs, a sweep)."""
    path = Path(path)
    if not find_runs([path]):  # also: a path that does not exist
        raise GradlabError(f"no gradlab runs in {path} (looked for meta.json + config.yaml)")
    root = path.resolve()
    summary = summary_rows([path])
    runs = {row["path"]: read_run(row["path"]) for row in summary.rows}
    sweep = None if is_run_dir(path) else read_sweep_record(path)
    kind = "run" if is_run_dir(path) else "sweep" if sweep is not None else "runs"
    warnings, sections, readable = [], [], []
    for index, row in enumerate(summary.rows, 1):
        run = runs[row["path"]]
        problems = _csv_problems(run)
        if not problems:
            readable.append(run)
        plates = _plates(run_figures(run), problems, "figure")
        section = content.run_section(index, row, run, root, problems)
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
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        uri = f"data:{_MIME[FIGURE_FORMAT]};base64,{data}"
        return content.Plate(name, content.caption(name), uri)

    return draw_figures(figures, embed, warnings, where)


def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("gradlab.webreport", "templates"),
        autoescape=True,  # every value from a config, a file or a folder name is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("report.html.j2")
