"""How far the same runs computed in different environments (BLAS kernels, threads) drift.

Usage: python docs/compare_runs.py FOLDER FOLDER [FOLDER ...]

Each FOLDER holds the same runs (e.g. `docs/make_figures.sh --runs-only --out FOLDER` under
different OPENBLAS_CORETYPE); a run is compared across the folders that hold it at the same
relative path. Prints a Markdown table, one row per run: how many folders hold it, the
largest relative difference of the step-0 rows of metrics.csv and layers.csv (the network at
initialization; with the column and the size of the value there), of the last logged rows,
and M at init, M at the end and the final test loss over the folders: one value when they
are bit-identical, else the range and its relative width.
"""

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """(column names, all values as float64 with '' as nan) of a run's CSV file."""
    with open(path, encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    values = np.array([[float(cell) if cell else math.nan for cell in row] for row in rows])
    return header, values.reshape(len(rows), len(header))


@dataclass(frozen=True)
class Difference:
    """The largest relative difference between two tables, and where it is."""

    relative: float = 0.0  # |a - b| / max(|a|, |b|); inf when the rows do not match up
    column: str = ""
    magnitude: float = 0.0  # |a| there: a large relative difference of ~1e-16 is noise

    def __str__(self) -> str:
        if self.relative == 0:
            return "identical"
        if math.isinf(self.relative):
            return "different steps"
        return f"{self.relative:.0e} ({self.column} ~{self.magnitude:.0e})"


def largest_difference(columns: list[str], first: np.ndarray, second: np.ndarray) -> Difference:
    """Largest |a - b| / max(|a|, |b|) over the entries; nan equals nan."""
    if first.shape != second.shape:
        return Difference(math.inf)
    same = (first == second) | (np.isnan(first) & np.isnan(second))
    if same.all():
        return Difference()
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.abs(first - second) / np.maximum(np.abs(first), np.abs(second))
    relative = np.where(same, 0.0, np.nan_to_num(relative, nan=math.inf))
    row, column = np.unravel_index(np.argmax(relative), relative.shape)
    return Difference(float(relative[row, column]), columns[column], abs(first[row, column]))


def row_differences(runs: list[Path], name: str) -> tuple[Difference, Difference]:
    """Largest relative differences of ``name``'s step-0 rows and of its last step's rows."""
    columns, first = read_csv(runs[0] / name)
    at_init, at_end = Difference(), Difference()
    for run in runs[1:]:
        values = read_csv(run / name)[1]
        init = largest_difference(columns, first[first[:, 0] == 0], values[values[:, 0] == 0])
        if values.size == 0 or first.size == 0 or values[-1, 0] != first[-1, 0]:
            end = Difference(math.inf)  # a run that stopped at another step
        else:
            last = first[-1, 0]
            end = largest_difference(
                columns, first[first[:, 0] == last], values[values[:, 0] == last]
            )
        at_init = max(at_init, init, key=lambda difference: difference.relative)
        at_end = max(at_end, end, key=lambda difference: difference.relative)
    return at_init, at_end


def spread(values: list) -> str:
    """'x' when all equal, else 'min .. max (relative spread s)'; None as '-'."""
    if any(value is None for value in values):
        return "-" if all(value is None for value in values) else "missing in some"
    low, high = min(values), max(values)
    if low == high:
        return f"{low:.10g}"
    relative = (high - low) / max(abs(low), abs(high))
    return f"{low:.4g} .. {high:.4g} ({relative:.0e})"


def summary_values(run: Path) -> tuple:
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    factor = summary.get("gradient_factor") or {}
    divergence = summary.get("divergence")
    status = summary.get("status", "?")
    if divergence:
        status = f"{status} at {divergence['step']}"
    return (
        status,
        (factor.get("init") or {}).get("delta"),
        (factor.get("final") or {}).get("delta"),
        (summary.get("final") or {}).get("test_loss"),
    )


def compare(folders: list[Path]) -> list[str]:
    """The Markdown table's lines: a row per run found in at least two of the folders."""
    lines = [
        "| run | folders | step 0 rows | last step rows | status | M at init | M at the end "
        "| test loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    relatives = {
        meta.parent.relative_to(folder) for folder in folders for meta in folder.rglob("meta.json")
    }
    for relative in sorted(relatives):
        runs = [folder / relative for folder in folders]
        runs = [run for run in runs if (run / "summary.json").is_file()]
        if len(runs) < 2:
            continue
        differences = [row_differences(runs, name) for name in ("metrics.csv", "layers.csv")]
        at_init = max((pair[0] for pair in differences), key=lambda item: item.relative)
        at_end = max((pair[1] for pair in differences), key=lambda item: item.relative)
        status, m_init, m_final, test_loss = zip(
            *(summary_values(run) for run in runs), strict=True
        )
        status_text = status[0] if len(set(status)) == 1 else " / ".join(status)
        cells = [
            str(relative),
            str(len(runs)),
            str(at_init),
            str(at_end),
            status_text,
            spread(list(m_init)),
            spread(list(m_final)),
            spread(list(test_loss)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__.strip().splitlines()[2])
    folders = [Path(argument) for argument in argv]
    for folder in folders:
        if not folder.is_dir():
            raise SystemExit(f"compare_runs: {folder} is not a folder")
    print("\n".join(compare(folders)))


if __name__ == "__main__":
    main(sys.argv[1:])
