"""`gradlab summary`: one row per run, as an aligned table, CSV (for pandas) or JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from gradlab.analysis import differing_keys, flatten, short_key
from gradlab.errors import GradlabError
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


def summary_rows(paths) -> tuple[list[str], list[dict]]:
    """(varying config keys, rows) for every run at or below ``paths``."""
    run_paths = find_runs(paths)
    if not run_paths:
        raise GradlabError(f"no gradlab runs found in {', '.join(map(str, paths))}")
    runs = [read_run(path) for path in run_paths]
    keys = differing_keys([run.config for run in runs], ignore=("name", "log.every"))
    runs.sort(key=lambda run: _sort_key(flatten(run.config), keys))  # depth 2 before 10
    names = [run.name for run in runs]
    if len(set(names)) < len(names):  # e.g. one config run with several --set: use the folders
        names = [run.path.name for run in runs]
    rows = []
    for run, name in zip(runs, names, strict=True):
        summary = run.summary or {}
        factors = summary.get("gradient_factor", {})
        theory = summary.get("theory") or {}
        final = summary.get("final") or {}
        flat = flatten(run.config)
        rows.append(
            {
                "name": name,
                "status": run.status,
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
        )
    return keys, rows


def _sort_key(flat: dict, keys: list[str]) -> tuple:
    """Order runs by their varying values: numbers numerically, before text; missing last."""
    parts = []
    for key in keys:
        value = flat.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            parts.append((0, float(value), ""))
        else:
            parts.append((1 if value is not None else 2, 0.0, str(value)))
    return tuple(parts)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else format(value, ".4g")
    return str(value)


def format_summary(keys: list[str], rows: list[dict], fmt: str = "table") -> str:
    """Render summary rows; csv and json keep full dotted keys and the run path."""
    if fmt == "json":
        return json.dumps(to_jsonable(rows), indent=2) + "\n"
    columns = ["name", "status", *keys, *RESULT_COLUMNS]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([*columns, "path"])
        for row in rows:
            writer.writerow([_csv_cell(row[column]) for column in [*columns, "path"]])
        return buffer.getvalue()
    if fmt != "table":
        raise GradlabError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    short = [short_key(key) for key in keys]
    headers = [
        "name",
        "status",
        *(s if short.count(s) == 1 else k for s, k in zip(short, keys, strict=True)),
    ]
    headers += list(RESULT_COLUMNS)
    table = [headers] + [[_cell(row[column]) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in table
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision for pandas; 'nan'/'inf' read back as floats
    return value


def summarize(paths, fmt: str = "table") -> str:
    """The text `gradlab summary PATH... --format FMT` prints."""
    keys, rows = summary_rows([Path(path) for path in paths])
    return format_summary(keys, rows, fmt)
