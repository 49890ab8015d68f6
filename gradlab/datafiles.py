"""Real data: a .npz or .csv file, or scikit-learn's 8x8 digits, read and checked.

- ``.npz``: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``; x of shape (n, ...)
  (trailing axes are flattened: (n, 8, 8) images become 64 features), y of shape (n,) or
  (n, 1). Numbers only (bool, integer or float; no Python objects).
- ``.csv``: a header row of column names, then one row of numbers per example; the target
  is ``data.target`` (default: the last column), every other column is a feature.
  ``data.test_fraction`` of the rows are held out (a seeded split).
- ``digits``: ``sklearn.datasets.load_digits`` (1,797 images of 64 pixels 0..16, 10
  classes, shipped inside scikit-learn: no download), split like a .csv.

Every problem is one GradlabError line naming the file and what is wrong, raised before the
run writes anything: a missing file, array or column, a non-numeric column, an empty file,
NaN or inf, shapes that do not match, targets that do not fit ``data.task`` (labels 0..K-1
for multiclass, 0/1 for binary), more than ``data.max_bytes`` of arrays (float64), checked
from the .npz headers or the .csv's rows and columns before the numbers are read.

``resolve_config`` fills in what the data decide (input_dim, classes, and n_train/n_test
capped at the rows there are); ``split`` draws the train and test rows from the run's data
generator. Uses numpy and the standard library (scikit-learn only for ``digits``).
"""

import csv
import dataclasses
import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradlab.config_checks import did_you_mean
from gradlab.errors import GradlabError

NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
DIGITS_INSTALL = "pip install 'gradlab[datasets]'"
_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats


@dataclass(frozen=True, eq=False)
class Table:
    """The examples of a data source, checked, in float64. ``x_test``/``y_test`` are the
    file's own test set (.npz), or None when ``split`` holds out rows of ``x``/``y``."""

    x: np.ndarray  # (n, input_dim)
    y: np.ndarray  # (n,) targets
    x_test: np.ndarray | None  # (n_test, input_dim)
    y_test: np.ndarray | None  # (n_test,)
    name: str  # the file (or "scikit-learn's digits") as messages name it
    record: dict  # meta.json's "data": source, path, bytes, sha256

    @property
    def input_dim(self) -> int:
        return self.x.shape[1]

    def test_rows(self, test_fraction: float) -> int:
        """Rows ``split`` holds out of ``x`` (at least one, and one left for training)."""
        n = self.x.shape[0]
        if n < 2:
            raise GradlabError(f"{self.name}: has {n} row; a train/test split needs at least 2")
        return min(max(1, round(n * test_fraction)), n - 1)

    def sizes(self, test_fraction: float) -> tuple[int, int]:
        """(training rows, test rows) available."""
        if self.x_test is not None:
            return self.x.shape[0], self.x_test.shape[0]
        held_out = self.test_rows(test_fraction)
        return self.x.shape[0] - held_out, held_out


def read_table(data) -> Table | None:
    """The checked examples of ``data`` (a DataConfig); None for ``synthetic``."""
    if data.source == "synthetic":
        return None
    if data.source == "digits":
        table = _read_digits(data.max_bytes)
    else:
        path = Path(data.path)
        if not path.is_file():
            problem = "is a directory, not a data file" if path.is_dir() else "no such data file"
            raise GradlabError(f"{path}: {problem}")
        try:
            if path.suffix.lower() == ".npz":
                table = _read_npz(path, data.max_bytes)
            else:
                table = _read_csv(path, data.target, data.max_bytes)
        except OSError as error:
            raise _fail(path, f"cannot read the file ({error.strerror or error})") from None
    _check_targets(table, data.task)
    return table


def _fail(name, problem: str) -> GradlabError:
    return GradlabError(f"{name}: {problem}")


def _too_big(name, size: int, max_bytes: int) -> GradlabError:
    return _fail(
        name,
        f"its arrays take {size:,} bytes as float64 ({size / 2**30:.3g} GiB), more than "
        f"data.max_bytes ({max_bytes:,}); raise data.max_bytes if this machine has the memory",
    )


def file_record(path: Path, source: str = "file") -> dict:
    """meta.json's record of a data file: its absolute path, size in bytes and SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return {
        "source": source,
        "path": str(Path(path).absolute()),
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
    }


# ---- .npz --------------------------------------------------------------------------------


def _read_npz(path: Path, max_bytes: int) -> Table:
    try:
        with zipfile.ZipFile(path) as archive:
            headers = _npz_headers(path, archive)
    except zipfile.BadZipFile:
        raise _fail(path, "is not a .npz archive (not a zip file)") from None
    size = sum(math.prod(shape) * 8 for shape, _ in headers.values())
    if size > max_bytes:
        raise _too_big(path, size, max_bytes)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in NPZ_ARRAYS}
    except ValueError as error:  # a corrupt member
        raise _fail(path, f"cannot read its arrays ({error})") from None
    x, x_test = (_features(path, name, arrays[name]) for name in ("x_train", "x_test"))
    y, y_test = (_targets(path, name, arrays[name]) for name in ("y_train", "y_test"))
    for part, inputs, targets in (("train", x, y), ("test", x_test, y_test)):
        if inputs.shape[0] != targets.shape[0]:
            raise _fail(
                path,
                f"x_{part} has {inputs.shape[0]} rows but y_{part} has {targets.shape[0]}",
            )
    if x.shape[1] != x_test.shape[1]:
        raise _fail(
            path, f"x_train has {x.shape[1]} features per row but x_test has {x_test.shape[1]}"
        )
    return Table(x, y, x_test, y_test, str(path), file_record(path))


def _npz_headers(path: Path, archive: zipfile.ZipFile) -> dict:
    """{array name: (shape, dtype)} of the four arrays, from the .npy headers alone."""
    members = {name.removesuffix(".npy"): name for name in archive.namelist()}
    headers = {}
    for name in NPZ_ARRAYS:
        if name not in members:
            found = ", ".join(sorted(members)) or "none"
            raise _fail(
                path,
                f"has no array '{name}' (arrays: {found}); a .npz needs {', '.join(NPZ_ARRAYS)}",
            )
        with archive.open(members[name]) as member:
            try:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(member)
            except ValueError as error:
                raise _fail(path, f"array '{name}' is not a numpy array ({error})") from None
        if dtype.kind not in _NUMERIC_KINDS:
            raise _fail(path, f"array '{name}' holds {dtype} values, not numbers")
        headers[name] = (shape, dtype)
    return headers


def _features(path, name: str, array: np.ndarray) -> np.ndarray:
    """x as (n, features) float64: trailing axes flattened; no rows or features is an error."""
    if array.ndim < 2:
        raise _fail(path, f"{name} has shape {array.shape}; expected (examples, features)")
    flat = array.reshape(array.shape[0], -1).astype(np.float64)
    if flat.shape[0] == 0 or flat.shape[1] == 0:
        raise _fail(path, f"{name} is empty (shape {array.shape})")
    _check_finite(path, name, flat)
    return flat


def _targets(path, name: str, array: np.ndarray) -> np.ndarray:
    """y as (n,) float64 from (n,) or (n, 1)."""
    if not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        raise _fail(path, f"{name} has shape {array.shape}; expected one target per row, (n,)")
    flat = array.reshape(-1).astype(np.float64)
    _check_finite(path, name, flat)
    return flat


def _check_finite(path, name: str, array: np.ndarray, columns: list[str] | None = None) -> None:
    """No NaN or inf: the first one found is named by its row (1-based) and column."""
    bad = ~np.isfinite(array)
    if not bad.any():
        return
    row, *column = np.argwhere(bad)[0]
    where = f"row {row + 1}"
    if column:
        label = f"'{columns[column[0]]}'" if columns else str(column[0] + 1)
        where += f", column {label}"
    raise _fail(
        path,
        f"{name} holds {array[tuple(np.argwhere(bad)[0])]} at {where}; "
        "gradlab needs finite numbers",
    )


# ---- .csv --------------------------------------------------------------------------------


def _read_csv(path: Path, target: str | None, max_bytes: int) -> Table:
    if path.stat().st_size == 0:
        raise _fail(path, "is empty; a .csv needs a header row and one row per example")
    header, rows = _csv_shape(path)
    target_index = _target_column(path, header, target)
    size = rows * len(header) * 8
    if size > max_bytes:
        raise _too_big(path, size, max_bytes)
    try:
        table = np.loadtxt(
            path,
            delimiter=",",
            skiprows=1,
            dtype=np.float64,
            ndmin=2,
            encoding="utf-8",
            comments=None,
            quotechar='"',
        )
    except ValueError:
        raise _csv_problem(path, header) from None
    if table.shape[1] != len(header):
        raise _csv_problem(path, header)
    features = [i for i in range(len(header)) if i != target_index]
    x, y = table[:, features], table[:, target_index]
    _check_finite(path, "the data", x, [header[i] for i in features])
    _check_finite(path, f"column '{header[target_index]}'", y)
    return Table(x, y, None, None, str(path), file_record(path))


def _csv_shape(path: Path) -> tuple[list[str], int]:
    """(the header's names, the number of data rows), blank lines left out."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next((row for row in reader if row), None)
            rows = sum(1 for row in reader if row)
    except UnicodeDecodeError:
        raise _fail(path, "is not a text file (not UTF-8)") from None
    except csv.Error as error:
        raise _fail(path, f"is not a valid .csv ({error})") from None
    if header is None:
        raise _fail(path, "is empty; a .csv needs a header row and one row per example")
    header = [name.strip() for name in header]
    if all(_is_number(name) for name in header):
        raise _fail(path, "the first row holds numbers; a .csv needs a header row of column names")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise _fail(path, f"column '{duplicates[0]}' appears twice in the header")
    if len(header) < 2:
        raise _fail(path, "has one column; it needs feature columns and a target column")
    if rows == 0:
        raise _fail(path, "has a header but no data rows")
    return header, rows


def _target_column(path: Path, header: list[str], target: str | None) -> int:
    if target is None:
        return len(header) - 1
    if target not in header:
        raise _fail(
            path,
            f"has no column '{target}' (data.target){did_you_mean(target, header)} "
            f"(columns: {', '.join(header)})",
        )
    return header.index(target)


def _csv_problem(path: Path, header: list[str]) -> GradlabError:
    """The first row of the .csv numpy could not read, in words (streamed: read on failure)."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(row for row in reader if row)  # the header
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            if len(row) != len(header):
                return _fail(path, f"line {line} has {len(row)} cells, the header {len(header)}")
            for name, cell in zip(header, row, strict=True):
                if not cell.strip():
                    return _fail(path, f"column '{name}' has an empty cell on line {line}")
                if not _is_number(cell):
                    return _fail(
                        path,
                        f"column '{name}' is not numeric ({cell.strip()[:30]!r} on line {line}); "
                        "gradlab reads numbers only",
                    )
    return _fail(path, "cannot be read as numbers")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---- digits ------------------------------------------------------------------------------


def _read_digits(max_bytes: int) -> Table:
    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ImportError:
        raise GradlabError(
            f"data.source 'digits' needs scikit-learn, which is not installed: {DIGITS_INSTALL}"
        ) from None
    name = "scikit-learn's digits"
    x, y = load_digits(return_X_y=True)
    if x.size * 8 + y.size * 8 > max_bytes:
        raise _too_big(name, x.size * 8 + y.size * 8, max_bytes)
    shipped = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    if shipped.is_file():
        record = file_record(shipped, "digits")
    else:  # a scikit-learn that keeps the images elsewhere: say which one it was
        record = {"source": "digits", "path": None, "bytes": None, "sha256": None}
    record["scikit_learn"] = sklearn.__version__
    x = np.asarray(x, dtype=np.float64)
    return Table(x, np.asarray(y, dtype=np.float64), None, None, name, record)


# ---- targets, the config, the split ------------------------------------------------------


def _check_targets(table: Table, task: str) -> None:
    """The targets fit ``task``: labels 0..K-1 (multiclass, K >= 2) or 0/1 (binary)."""
    if task == "regression":
        return
    if table.y_test is None:
        named = [("the target column", table.y)]
    else:
        named = [("y_train", table.y), ("y_test", table.y_test)]
    allowed = "0/1 labels" if task == "binary" else "integer labels 0..K-1"
    high = 1 if task == "binary" else math.inf
    for name, y in named:
        bad = (y != np.round(y)) | (y < 0) | (y > high)
        if bad.any():
            row = int(np.argmax(bad))
            raise _fail(
                table.name,
                f"{name} has label {y[row]:g} at row {row + 1}, out of range: data.task "
                f"{task} needs {allowed}",
            )
    if task == "multiclass" and data_classes(table) < 2:
        raise _fail(table.name, "every label is 0; data.task multiclass needs at least 2 classes")


def data_classes(table: Table) -> int:
    """K for labels 0..K-1: one more than the largest label of train and test."""
    largest = table.y.max() if table.y_test is None else max(table.y.max(), table.y_test.max())
    return int(largest) + 1


def resolve_config(config, table: Table | None):
    """``config`` with what the data decide: input_dim and (multiclass) classes from the
    data, n_train and n_test capped at the rows there are. A config that sets input_dim or
    classes to something else is an error naming both."""
    if table is None:
        return config
    data = config.data
    decided = {"input_dim": (table.input_dim, "features per example")}
    if data.task == "multiclass":
        decided["classes"] = (data_classes(table), "classes (labels 0..K-1)")
    for key, (found, what) in decided.items():
        given = getattr(data, key)
        if given is not None and given != found:
            raise GradlabError(
                f"{table.name}: has {found} {what}, but data.{key} is {given}; remove "
                f"data.{key} (it comes from the data) or set it to {found}"
            )
    n_train, n_test = table.sizes(data.test_fraction)
    n_train, n_test = min(data.n_train, n_train), min(data.n_test, n_test)
    batch_size = config.train.batch_size
    if batch_size != "full" and batch_size > n_train:
        raise GradlabError(
            f"train.batch_size: must be <= the {n_train} training examples of {table.name}, "
            f"got {batch_size}; use 'full' for full-batch gradient descent"
        )
    resolved = {key: found for key, (found, _) in decided.items()}
    data = dataclasses.replace(data, n_train=n_train, n_test=n_test, **resolved)
    return dataclasses.replace(config, data=data)


def split(table: Table, data, rng: np.random.Generator):
    """(x_train, y_train, x_test, y_test): a .csv's or digits' rows shuffled by ``rng`` and
    ``test_rows`` of them held out; a .npz's own sets shuffled; each cut to data.n_train and
    data.n_test rows. ``rng`` is the run's data generator: same seed, same split."""
    if table.x_test is None:
        order = rng.permutation(table.x.shape[0])
        held_out = table.test_rows(data.test_fraction)
        train, test = order[held_out:], order[:held_out]
        x_test, y_test = table.x, table.y
    else:
        train = rng.permutation(table.x.shape[0])
        test = rng.permutation(table.x_test.shape[0])
        x_test, y_test = table.x_test, table.y_test
    train, test = train[: data.n_train], test[: data.n_test]
    return table.x[train], table.y[train], x_test[test], y_test[test]
