"""`gradlab summary`: one row per run, or per point over seeds, as a table, CSV or JSON.

How values are written (the same rule in every format unless said):
- config values exactly as given: the shortest text that reads back as the same number
  (10.149, 1e-05; 4 for 4.0, as in sweep folder names), never rounded;
- measured values (M, losses, accuracy): 4 significant digits in the table, as `gradlab run`
  prints them (trailing zeros dropped, so 1 is 1.000); a spread over seeds 2; CSV and JSON
  keep full precision (the shortest text that reads back bit-identical);
- the table names a config key by its last part (weight_scale) unless another config key or
  a column has that name too (momentum -> train.momentum, eps -> batchnorm.eps); CSV and JSON
  always use full dotted keys.

The CSV loads with the csv module and pandas and with ``numpy.genfromtxt(path, names=True,
delimiter=",", dtype=None, encoding=None)``, which knows no quoting and drops the dots from
names (model.depth -> modeldepth). So no cell holds a comma, quote, '#' or line break (they
are percent-encoded, %2C and so on: urllib.parse.unquote restores the text), a missing number
is nan, and rows put text before numbers in a column that mixes them (batch_size full, 16,
64): numpy >= 2.3's genfromtxt fails when an integer column meets text further down.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

from gradlab.analysis import (
    differing_keys,
    factor_summary,
    flatten,
    order_key,
    shortest_suffixes,
)
from gradlab.config import config_from_dict
from gradlab.errors import GradlabError
from gradlab.formatting import config_text, number_text
from gradlab.initial_theory import theory_at_init, width_theory_applies
from gradlab.results import find_runs, read_run, to_jsonable

FORMATS = ("table", "csv", "json")
RESULT_COLUMNS = (
    "M_init",
    "M_final",
    "M_theory",
    "verdict",
    "verdict_final",
    "train_loss",
    "test_loss",
    "test_accuracy",
)
MEASURED = tuple(column for column in RESULT_COLUMNS if not column.startswith("verdict"))
INCOMPLETE = "/incomplete"  # status suffix of a run without summary.json
_OWN_COLUMNS = ("name", "status", "path", "seeds", "count", *RESULT_COLUMNS)
_CSV_UNSAFE = re.compile(r'[%,"#\r\n]')


@dataclass
class Summary:
    """The rows of a summary and what the table needs to name their columns."""

    keys: list[str]  # the config keys that vary (without the seed when grouped), dotted
    rows: list[dict]  # one per run, or per point when grouped
    all_keys: set[str]  # every config key of the runs: short names must not be ambiguous
    grouped: bool = False


def summary_rows(paths, group_by_seed: bool = False) -> Summary:
    """The rows for every run at or below ``paths``; with ``group_by_seed`` one row per point
    (runs whose configs are equal but for the seed)."""
    run_paths = find_runs(paths)
    if not run_paths:
        raise GradlabError(f"no gradlab runs found in {', '.join(map(str, paths))}")
    runs = [read_run(path) for path in run_paths]
    keys = differing_keys([run.config for run in runs], ignore=("name", "log.every"))
    keys.sort(key=lambda key: key == "seed")  # seed last: the seeds of a point together
    # depth 2 before 10; text before numbers (genfromtxt, see above)
    runs.sort(key=lambda run: order_key(flatten(run.config), keys, text_first=True))
    names = [run.name for run in runs]
    if len(set(names)) < len(names):  # e.g. one config run with several --set: use the folders
        names = [run.path.name for run in runs]
    rows = [_run_row(run, name, keys) for run, name in zip(runs, names, strict=True)]
    all_keys = {key for run in runs for key in flatten(run.config)}
    if group_by_seed:
        seeds = [flatten(run.config).get("seed") for run in runs]
        point_keys = [key for key in keys if key != "seed"]
        return Summary(point_keys, _group_by_seed(point_keys, rows, seeds), all_keys, True)
    return Summary(keys, rows, all_keys)


def _run_row(run, name: str, keys: list[str]) -> dict:
    summary = run.summary
    if summary is None:  # killed (meta.json says running) or failed: what the files still hold
        factor_init, theory = _from_files(run)
        factors, final = {"init": factor_init or {}}, {}
    else:
        factors, final = summary.get("gradient_factor", {}), summary.get("final") or {}
        theory = summary.get("theory") or {}
    flat = flatten(run.config)
    return {
        "name": name,
        "status": run.status + (INCOMPLETE if summary is None else ""),
        **{key: flat.get(key) for key in keys},
        "M_init": factors.get("init", {}).get("delta"),
        "M_final": factors.get("final", {}).get("delta"),
        "M_theory": theory.get("factor") if theory.get("applicable") else None,
        "verdict": factors.get("init", {}).get("regime", "unknown"),
        "verdict_final": factors.get("final", {}).get("regime", "unknown"),
        "train_loss": final.get("train_loss"),
        "test_loss": final.get("test_loss"),
        "test_accuracy": final.get("test_accuracy"),
        "path": str(run.path),
    }


def _from_files(run) -> tuple[dict | None, dict]:
    """(factor at init, theory) of a run without summary.json, by the functions that write
    summary.json: analysis.factor_summary on step 0 of layers.csv (complete: every layer) and
    initial_theory.theory_at_init, which regenerates the data from the seed. (None, {}) if
    unknown."""
    try:
        config = config_from_dict(run.config)
    except GradlabError:
        return None, {}
    try:
        layer_steps = run.layers["step"]
    except ValueError:  # a cell of layers.csv that is not a number
        return None, {}
    if layer_steps.size == 0 or (layer_steps == 0).sum() != config.model.depth:
        return None, {}
    _, delta_norms = run.layer_matrix("delta_norm")  # row 0 is step 0
    _, weight_grad_norms = run.layer_matrix("weight_grad_norm")
    factor = factor_summary(
        delta_norms[0],
        weight_grad_norms[0],
        config.analysis.fit_skip,
        config.analysis.tol,
        width=config.model.width,
        width_theory=width_theory_applies(config),
    )
    try:
        return factor, theory_at_init(config)
    except GradlabError:  # its data file is gone or changed: the factor without the theory
        return factor, {}


def _group_by_seed(keys: list[str], rows: list[dict], seeds: list) -> list[dict]:
    """One row per point: the seeds, their count, and mean, sample std (ddof=1, as pandas) and
    count of each measured value over the seeds where it is a finite number."""
    points: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):  # rows are sorted by the point keys, then the seed
        points.setdefault(tuple(repr(row[key]) for key in keys), []).append(index)
    grouped = []
    for indices in points.values():
        members = [rows[i] for i in indices]
        point = {key: members[0][key] for key in keys}
        point["seeds"] = [seeds[i] for i in indices]
        point["count"] = len(members)
        point["status"] = _tally(row["status"] for row in members)
        for column in RESULT_COLUMNS:
            if column not in MEASURED:
                point[column] = _tally(row[column] for row in members)
                continue
            values = [v for row in members if _is_number(v := row[column]) and math.isfinite(v)]
            point[f"{column}_mean"] = statistics.fmean(values) if values else None
            point[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else None
            point[f"{column}_count"] = len(values)
        grouped.append(point)
    return grouped


def _tally(values) -> str:
    """'completed' when all agree, else each value with its count: 'completed:2 diverged:1'."""
    counts = Counter(values)
    if len(counts) == 1:
        return next(iter(counts))
    return " ".join(f"{value}:{count}" for value, count in counts.most_common())


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _measured_text(value, digits: int = 4) -> str:
    """A measured value in the table: ``digits`` significant digits, '' when missing."""
    return number_text(value, f".{digits}g")


def format_summary(summary: Summary, fmt: str = "table") -> str:
    """Render a summary; csv and json keep full dotted keys, the run path and (grouped) each
    measured value's mean, std and count."""
    keys, rows = summary.keys, summary.rows
    if fmt == "json":
        return json.dumps(to_jsonable(rows), indent=2) + "\n"
    if fmt == "csv":
        return _csv(keys, rows)
    if fmt != "table":
        raise GradlabError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    columns = table_columns(summary)
    table = [[column.header for column in columns]]
    table += [[column.text(row) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in table
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


class Column(NamedTuple):
    """A column of the summary table: its header, the row field it shows (the field's raw
    value is what a sortable table sorts by) and the cell's text."""

    header: str
    field: str
    text: Callable[[dict], str]


def table_columns(summary: Summary) -> list[Column]:
    """The table's columns, as ``gradlab summary`` prints them (and ``gradlab report`` shows
    them): name and status (a point's count and status when grouped), the varying config keys
    by their shortest unambiguous names, then the results."""
    keys, grouped = summary.keys, summary.grouped
    labels = shortest_suffixes(keys, summary.all_keys, reserved=_OWN_COLUMNS)
    columns = [
        Column(label, key, _config_cell(key)) for label, key in zip(labels, keys, strict=True)
    ]
    status = Column("status", "status", itemgetter("status"))
    if grouped:  # a point has no name; its count of runs instead
        columns += [Column("count", "count", lambda row: str(row["count"])), status]
    else:
        columns = [Column("name", "name", itemgetter("name")), status, *columns]
    for column in RESULT_COLUMNS:
        if column not in MEASURED:
            columns.append(Column(column, column, itemgetter(column)))
        elif grouped:
            columns.append(Column(column, f"{column}_mean", partial(_spread_text, column=column)))
        else:
            columns.append(Column(column, column, partial(_measured_cell, column=column)))
    return columns


def _measured_cell(row: dict, column: str) -> str:
    return _measured_text(row[column])


def _config_cell(key: str):
    return lambda row: config_text(row[key])


def _spread_text(row: dict, column: str) -> str:
    """'0.6345 ± 0.0012'; '(2/3)' added when only 2 of the 3 seeds have a finite value."""
    mean, std, count = (row[f"{column}_{part}"] for part in ("mean", "std", "count"))
    text = _measured_text(mean)
    if std is not None:
        text += f" ± {_measured_text(std, 2)}"
    if 0 < count < row["count"]:
        text += f" ({count}/{row['count']})"
    return text


def _csv(keys: list[str], rows: list[dict]) -> str:
    columns = list(rows[0]) if rows else []
    numeric = {
        column: all(_is_number(row[column]) for row in rows if row[column] is not None)
        for column in columns
    }
    lines = [",".join(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            if value is None:
                cells.append("nan" if numeric[column] else "")
            elif column in keys:
                cells.append(_csv_text(config_text(value)))
            elif isinstance(value, float):
                cells.append(number_text(value))  # exact; nan/inf read back as floats
            elif isinstance(value, list):  # the seeds of a point
                cells.append(" ".join(_csv_text(config_text(item)) for item in value))
            else:
                cells.append(_csv_text(str(value)))
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _csv_text(text: str) -> str:
    """Percent-encode what genfromtxt or the csv module would split or quote."""
    return _CSV_UNSAFE.sub(lambda match: f"%{ord(match.group()):02X}", text)


def summarize(paths, fmt: str = "table", group_by_seed: bool = False) -> str:
    """The text `gradlab summary PATH... --format FMT [--group-by-seed]` prints."""
    return format_summary(summary_rows([Path(path) for path in paths], group_by_seed), fmt)
