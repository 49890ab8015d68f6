"""What the report page holds, as plain data for the template: the header, the summary table
(cells with their sort values and colour classes) and one section per run."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gradlab import __version__, blas
from gradlab.analysis import flatten
from gradlab.figures.common import factor_of, theory_record
from gradlab.formatting import config_text, number_text
from gradlab.report import Summary, table_columns
from gradlab.results import CORE_FILES, DONE_STATUSES, Run
from gradlab.vocabulary import REGIMES, regime_of

# the summary columns whose values are coloured by a regime, and where the regime comes from
_REGIME_OF_ROW = {"M_init": "verdict", "M_final": "verdict_final"}
_REGIME_COLUMNS = ("verdict", "verdict_final")
_NO_BLAS = {"library": None, "version": None, "kernel": None, "threads": None}


@dataclass
class Cell:
    text: str
    sort: str | None  # the exact number a numeric cell sorts by; None: sort by the text
    css: str = ""


@dataclass
class Row:
    index: int  # 1-based, the run's section: #run=<index>
    status: str
    verdict: str
    cells: list[Cell]


@dataclass
class Plate:
    """One embedded figure: its file name in ``gradlab plot``, a caption and its SVG markup."""

    name: str
    caption: str
    svg: str
    width_px: int  # at most this wide on the page: its own size, 96 px an inch


@dataclass
class RunSection:
    index: int
    name: str
    path: str  # relative to the report's folder
    status: str
    problems: list[str]
    sentences: list[tuple[str, str, str]]  # (when, regime, the verdict sentence)
    theory: str
    config_yaml: str
    divergence: list[tuple[str, str]]
    figures: list[Plate] = field(default_factory=list)


def caption(name: str) -> str:
    """'compare_gradient_by_layer' -> 'compare gradient by layer'."""
    return name.replace("_", " ")


def table(summary: Summary, runs: dict[str, Run]) -> tuple[list[dict], list[Row]]:
    """The columns of ``gradlab summary`` (header, field, numeric) and one Row per summary row,
    in its order. ``runs`` maps a row's path to its Run (for its verdict tolerance)."""
    columns = table_columns(summary)
    rows = []
    for index, row in enumerate(summary.rows, 1):
        tol = flatten(runs[row["path"]].config).get("analysis.tol", 0.05)
        cells = [
            _cell(column.field, row.get(column.field), column.text(row), row, tol)
            for column in columns
        ]
        rows.append(Row(index, row["status"], row["verdict"], cells))
    numeric = [any(row.cells[i].sort is not None for row in rows) for i in range(len(columns))]
    headers = [
        {"header": column.header, "field": column.field, "numeric": numeric[i]}
        for i, column in enumerate(columns)
    ]
    return headers, rows


def _cell(field_name: str, value, text: str, row: dict, tol) -> Cell:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    css = ["num"] if is_number else []
    if field_name in _REGIME_OF_ROW:
        css.append(f"regime-{row[_REGIME_OF_ROW[field_name]]}")
    elif field_name == "M_theory":
        tol = tol if isinstance(tol, int | float) else 0.05
        css.append(f"regime-{regime_of(value, tol)}")
    elif field_name in _REGIME_COLUMNS:
        css.append(f"regime-{value}")
    elif field_name == "status":
        css.append(f"status-{str(value).split('/')[0]}")
    sort = number_text(value) if is_number else None
    return Cell(text, sort, " ".join(css))


def filter_choices(rows: list[Row]) -> tuple[list[str], list[str]]:
    """The statuses and the verdicts present, for the filters (verdicts in vocabulary order)."""
    statuses = sorted({row.status for row in rows})
    verdicts = [regime for regime in REGIMES if regime in {row.verdict for row in rows}]
    verdicts += sorted({row.verdict for row in rows} - set(REGIMES))
    return statuses, verdicts


def header(path: Path, kind: str, runs: list[Run], sweep: dict | None, keys: list[str]) -> dict:
    """What was run (the sweep spec, the folder or the run), when, and with what. ``path`` is
    shown as given (an absolute path would tell where the page was made)."""
    statuses = Counter(run.status for run in runs)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    if kind == "sweep":
        points = sweep.get("points")
        planned = f" of {len(points)} points" if isinstance(points, list) else ""
        what = f"sweep {sweep.get('name')}: {len(runs)} runs{planned} ({counts})"
    elif kind == "run":
        what = f"run {runs[0].name} ({runs[0].status})"
    else:
        what = f"{len(runs)} runs ({counts})"
    spec = None
    if sweep is not None:
        spec = _yaml(sweep.get("spec"))
        if sweep.get("command_line_set"):
            spec += "# --set on the command line, for every point:\n"
            spec += _yaml({"set": sweep["command_line_set"]})
    started = sorted(str(run.meta["started_at"]) for run in runs if run.meta.get("started_at"))
    ended = sorted(str(run.meta["ended_at"]) for run in runs if run.meta.get("ended_at"))
    return {
        "what": what,
        "path": str(path),
        "spec_path": (sweep or {}).get("spec_path"),
        "spec": spec,
        "varied": keys,
        "started": started[0] if started else None,
        "ended": ended[-1] if ended else None,
        "environments": sorted(Counter(_environment(run.meta) for run in runs).items()),
        "gradlab": __version__,
    }


def _environment(meta: dict) -> str:
    """A run's versions and BLAS as one phrase (from its meta.json)."""
    runtime = meta.get("blas")
    runtime = {**_NO_BLAS, **runtime} if isinstance(runtime, dict) else None
    blas_text = blas.describe(runtime) if runtime else "BLAS not recorded"
    return (
        f"gradlab {meta.get('gradlab', '?')}, numpy {meta.get('numpy', '?')}, "
        f"Python {meta.get('python', '?')}; {blas_text}"
    )


def _yaml(value) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


def run_section(index: int, row: dict, run: Run, root: Path, problems: list[str]) -> RunSection:
    """A run's section, without its figures: its verdict sentences, theory, resolved config
    and divergence record, with ``problems`` (unreadable or missing files, figures not drawn).
    Its name and status are those of its ``row`` in the summary table."""
    problems = [*run.problems, *_missing_files(run), *problems]
    sentences = []
    try:  # from summary.json, or from layers.csv for a run without one
        init, final = factor_of(run, "init"), factor_of(run, "final")
    except ValueError:  # layers.csv unreadable: among the problems already
        init, final = {}, {}
    if init.get("sentence"):
        sentences.append(("at init", init.get("regime", "unknown"), init["sentence"]))
    if final.get("sentence") and final.get("step") != init.get("step"):
        when = f"at step {number_text(final.get('step'), '.0f')}"
        sentences.append((when, final.get("regime", "unknown"), final["sentence"]))
    divergence = (run.summary or {}).get("divergence") or {}
    return RunSection(
        index=index,
        name=row["name"],
        path=relative(run.path, root),
        status=row["status"],
        problems=problems,
        sentences=sentences,
        theory=_theory_text(theory_record(run)),
        config_yaml=_yaml(run.config) if run.config else "(config.yaml unreadable)\n",
        divergence=[(str(key), config_text(value)) for key, value in divergence.items()]
        if isinstance(divergence, dict)
        else [],
    )


def _theory_text(theory: dict | None) -> str:
    """The theory's M at init and its basis, or why there is none."""
    if theory is None:
        return "none: this version of gradlab cannot read the run's config"
    factor = theory.get("factor")
    reason = theory.get("reason") or ""
    if theory.get("applicable") and isinstance(factor, int | float) and math.isfinite(factor):
        return f"M = {number_text(factor, '.4g')} ({theory.get('regime')}); {reason}"
    return f"none: {reason or 'no prediction'}"


def _missing_files(run: Run) -> list[str]:
    """Run files that are not there (summary.json only for a finished run)."""
    expected = [name for name in CORE_FILES if name != "summary.json"]
    if run.status in DONE_STATUSES:
        expected.append("summary.json")
    return [f"{name} missing" for name in expected if not (run.path / name).exists()]


def relative(path: Path, root: Path) -> str:
    """``path`` below ``root`` ('.' for the root itself), else as it is."""
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)
