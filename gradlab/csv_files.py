"""gradlab's CSV files: appended a whole row at a time as a run goes (``CsvLog``), cut back to
a checkpoint's step when a run resumes, and read back as float columns. The file formats
(columns) are ``gradlab.results``'s; this module only writes and reads rows."""

import csv
import io
import math
from pathlib import Path

import numpy as np

from gradlab.atomic import atomic_write_text
from gradlab.errors import GradlabError
from gradlab.formatting import number_text


class CsvLog:
    """A CSV file appended whole rows at a time; ``flush`` makes them durable to readers.

    With ``keep_through`` the file exists (a run being resumed): its rows of later steps, and
    a row cut by a kill, are dropped first (the file replaced atomically), then appended to.
    """

    def __init__(self, path: Path, columns: tuple[str, ...], keep_through: int | None = None):
        self.columns = columns
        self._pending = io.StringIO()
        if keep_through is None:
            self._handle = open(path, "w", encoding="utf-8", newline="")
            self._pending.write(",".join(columns) + "\n")
        else:
            atomic_write_text(path, _rows_through(path, columns, keep_through))
            self._handle = open(path, "a", encoding="utf-8", newline="")
        self.flush()

    def append(self, values) -> None:
        self._pending.write(",".join(number_text(v) for v in values) + "\n")

    def append_lines(self, lines) -> None:
        """Whole lines already formatted (without their newline)."""
        self._pending.write("".join([line + "\n" for line in lines]))

    def flush(self) -> None:
        """One write of all pending whole lines, then flush to the OS (survives SIGKILL)."""
        text = self._pending.getvalue()
        if text:
            self._handle.write(text)
            self._handle.flush()
            self._pending = io.StringIO()

    def close(self) -> None:
        self.flush()
        self._handle.close()


def _rows_through(path: Path, columns: tuple[str, ...], step: int) -> str:
    """The header and the whole rows of steps <= ``step`` of a gradlab CSV (rows are in step
    order); GradlabError when the file is missing or has other columns."""
    header = ",".join(columns)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]  # whole lines only
    except OSError as error:
        raise GradlabError(f"cannot resume: {path} unreadable ({error.strerror})") from None
    if not lines or lines[0] != header:
        raise GradlabError(f"cannot resume: {path} does not start with the header {header}")
    kept = [header]
    for line in lines[1:]:
        if int(line.partition(",")[0]) > step:
            break
        kept.append(line)
    return "\n".join(kept) + "\n"


def spectrum_rows_through(path: Path, step: int) -> list[str]:
    """The rows of spectrum.csv (without its header) measured at ``step`` or before."""
    if not path.exists():
        return []
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return [row for row in rows if row and int(row.split(",", 1)[0]) <= step]


def read_csv_columns(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Columns of a gradlab CSV as float arrays; a trailing partial line is ignored, and so
    is a row with the wrong number of cells. Columns the file lacks are all nan. A cell that
    is not a number: a ValueError that names the file."""
    data = {column: [] for column in columns}
    if not path.exists():
        return {column: np.zeros(0) for column in columns}
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a row cut by a kill mid-write
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return {column: np.zeros(0) for column in columns}
    index = {name: i for i, name in enumerate(header)}
    table = _numeric_table(text.partition("\n")[2], len(header))
    if table is not None:  # every row complete and numeric: numpy's C parser, the fast path
        rows = table.shape[0]
        return {
            c: table[:, index[c]].copy() if c in index else np.full(rows, math.nan) for c in columns
        }
    for row in reader:
        if len(row) != len(header):
            continue
        for column in columns:
            cell = row[index[column]] if column in index else ""
            try:
                data[column].append(float(cell) if cell else math.nan)
            except ValueError as error:
                raise ValueError(f"{path.name} unreadable: {error}") from None
    return {column: np.asarray(values, dtype=float) for column, values in data.items()}


def _numeric_table(body: str, width: int) -> np.ndarray | None:
    """The CSV rows in ``body`` as a (rows, width) float array, or None unless every row has
    ``width`` numeric cells (an empty cell or a short row: the caller's slower path)."""
    if not body.strip():
        return np.zeros((0, width))
    try:
        table = np.loadtxt(
            io.StringIO(body), delimiter=",", dtype=np.float64, ndmin=2, comments=None
        )
    except ValueError:
        return None
    return table if table.shape[1] == width else None
