"""``gradlab plot``: draw the figures of run directories and save them atomically.

Imported only by ``gradlab plot`` (matplotlib is slow to import). Figures are built on
``matplotlib.figure.Figure`` objects, never through pyplot, so no global figure state and no
GUI backend is involved; PNG goes through Agg. The figures themselves live in
``gradlab.figures`` by family. A run that cannot be read or drawn is skipped with a warning
instead of stopping the other figures; a figure that cannot be written is an error.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from gradlab.config_checks import did_you_mean
from gradlab.errors import GradlabError
from gradlab.figures.common import DPI, STYLE, measured_factor
from gradlab.figures.compare import compare_gradient_by_layer, compare_loss, run_labels
from gradlab.figures.phase import phase_diagram, phase_grid, phase_keys
from gradlab.figures.run import clipping, gradient_by_layer, layer_heatmap, loss_curves
from gradlab.figures.schedule import compare_update_ratio, differ_in_schedule
from gradlab.figures.spectrum import compare_spectrum, spectrum_density
from gradlab.figures.trainability import applies as trainability_applies
from gradlab.figures.trainability import trainability_figure
from gradlab.results import Run, atomic_write_json, atomic_writer, find_runs, read_run

FORMATS = ("png", "pdf", "svg")
# Embedded dates would make the same figure differ byte for byte between two calls.
METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}

__all__ = [
    "FORMATS",
    "RUN_FIGURES",
    "Plotted",
    "clipping",
    "compare_gradient_by_layer",
    "compare_loss",
    "compare_spectrum",
    "compare_update_ratio",
    "draw_figures",
    "figure_names",
    "gradient_by_layer",
    "group_figures",
    "layer_heatmap",
    "loss_curves",
    "measured_factor",
    "phase_diagram",
    "phase_grid",
    "phase_keys",
    "plot_group",
    "plot_paths",
    "plot_run",
    "run_figures",
    "run_labels",
    "save_figure",
    "spectrum_density",
    "trainability_applies",
    "trainability_figure",
]


class Plotted(NamedTuple):
    """What ``plot_paths`` did: the files written, why anything was skipped, and what a
    figure has to say beyond its picture (e.g. the fitted k of the trainability figure)."""

    written: list[Path]
    warnings: list[str]
    notes: list[str]


# ---- entry point -----------------------------------------------------------------------


def plot_paths(paths: Iterable, fmt: str = "png", out=None, dpi: int = DPI) -> Plotted:
    """Draw every figure for the runs at or below ``paths``.

    Each run's figures go to ``<run>/plots/`` (or under ``out``, mirroring the runs' layout
    below their common folder). With two or more readable runs, comparison figures (and a
    phase diagram when exactly two numeric config keys vary) go to ``<folder>/plots/`` (or
    ``out``). ``dpi`` sets the resolution of PNG (and of images inside PDF and SVG). Raises
    GradlabError when there are no runs, ``fmt`` is unknown or a figure cannot be written.
    """
    if fmt not in FORMATS:
        raise GradlabError(f"unknown figure format {fmt!r}; choose one of {', '.join(FORMATS)}")
    paths = [Path(path) for path in paths]
    run_dirs = find_runs(paths)
    if not run_dirs:
        shown = ", ".join(str(path) for path in paths)
        raise GradlabError(f"no gradlab runs in {shown} (looked for meta.json + config.yaml)")
    out = Path(out) if out is not None else None
    root = Path(os.path.commonpath(run_dirs))
    written, warnings, notes, runs = [], [], [], []
    for run_dir in run_dirs:
        try:
            run = read_run(run_dir)
        except Exception as error:  # any unreadable file: skip this run, keep the others
            warnings.append(f"{run_dir}: skipped, unreadable ({type(error).__name__}: {error})")
            continue
        # a CSV that cannot be read: the figures of the other are drawn, no comparison has it
        csv_problems = run.csv_problems()
        warnings.extend(f"{run_dir}: {problem}" for problem in [*run.problems, *csv_problems])
        if not csv_problems:
            if run.metrics["step"].size == 0 and run.layers["step"].size == 0:
                warnings.append(f"{run_dir}: skipped, nothing logged to plot")
                continue
            runs.append(run)
        target = run_dir / "plots" if out is None else out / run_dir.relative_to(root)
        result = plot_run(run, target, fmt, dpi)
        written += result.written
        warnings += result.warnings
        notes += result.notes
    if len(runs) >= 2:
        folder = Path(os.path.commonpath([path.resolve() for path in paths]))
        if folder in {run.path for run in runs}:  # one run given, others below it
            folder = folder.parent
        result = plot_group(runs, folder / "plots" if out is None else out, fmt, dpi)
        written += result.written
        warnings += result.warnings
        notes += result.notes
    return Plotted(written, warnings, notes)


def plot_run(run: Run, directory, fmt: str = "png", dpi: int = DPI) -> Plotted:
    """The figures of one run, into ``directory`` (the spectrum only if it was measured)."""
    warnings, notes = [], []
    figures = run_figures(run)
    written = _draw_all(figures, Path(directory), fmt, dpi, warnings, notes, str(run.path))
    return Plotted(written, warnings, notes)


def plot_group(runs: Sequence[Run], directory, fmt: str = "png", dpi: int = DPI) -> Plotted:
    """Comparison figures of several runs (and the phase diagram when it applies)."""
    warnings, notes = [], []
    figures = group_figures(list(runs))
    written = _draw_all(figures, Path(directory), fmt, dpi, warnings, notes, str(directory))
    return Plotted(written, warnings, notes)


def _measured_spectrum(run: Run) -> bool:
    try:
        return bool(run.spectrum["step"].size)
    except ValueError:  # a damaged spectrum.csv: drawing the figure reports what is wrong
        return True


# The figures of one run, in order: file name -> (draws it from the run, whether it applies)
RUN_FIGURES = {
    "gradient_by_layer": (gradient_by_layer, None),
    "gradient_heatmap": (lambda run: layer_heatmap(run, "weight_grad_norm"), None),
    "loss": (loss_curves, None),
    "clipping": (clipping, None),
    "saturation": (lambda run: layer_heatmap(run, "saturation"), None),
    "spectrum": (spectrum_density, _measured_spectrum),  # only if the run measured it
}


def run_figures(run: Run, names: Iterable[str] | None = None) -> dict:
    """The figures of one run that apply to it (of ``names`` only, when given): file name ->
    a function that draws it."""
    return {
        name: functools.partial(draw, run)
        for name, (draw, applies) in RUN_FIGURES.items()
        if (names is None or name in names) and (applies is None or applies(run))
    }


def figure_names(text: str) -> tuple[str, ...]:
    """'gradient_by_layer,loss' -> those names of RUN_FIGURES, in its order ('all': every
    one); a GradlabError (with a "did you mean") for a name that is not one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return tuple(RUN_FIGURES)
    allowed = ", ".join(RUN_FIGURES) + "; or all"
    if not names:
        raise GradlabError(f"--figures: no figure named (allowed: {allowed})")
    for name in names:
        if name not in RUN_FIGURES:
            hint = did_you_mean(name, RUN_FIGURES)
            raise GradlabError(f"--figures: unknown figure {name!r}{hint} (allowed: {allowed})")
    return tuple(name for name in RUN_FIGURES if name in names)


def group_figures(runs: list[Run]) -> dict:
    """The comparison figures of several runs (and the phase diagrams when they apply)."""
    figures = {
        "compare_gradient_by_layer": lambda: compare_gradient_by_layer(runs),
        "compare_loss": lambda: compare_loss(runs),
        "compare_spectrum": lambda: compare_spectrum(runs, run_labels(runs)),
    }
    if differ_in_schedule(runs):
        figures["compare_update_ratio"] = lambda: compare_update_ratio(runs)
    keys = phase_keys(runs)
    if keys is not None:
        figures["phase_factor"] = lambda: phase_diagram(runs, keys, "factor")
        figures["phase_test_loss"] = lambda: phase_diagram(runs, keys, "test_loss")
    if trainability_applies(runs, keys):
        figures["trainability"] = lambda: trainability_figure(runs)
    return figures


def _draw_all(
    figures: dict, directory: Path, fmt: str, dpi: int, warnings: list, notes: list, where: str
):
    """Draw and save each figure as ``directory/<name>.<fmt>``; a figure that cannot be
    written (an unwritable folder) is a GradlabError. A figure with a ``gradlab_report``
    (numbers, lines) also gets <name>.json beside it, its lines in ``notes``."""
    written = []

    def save(name: str, figure: Figure) -> Path:
        path = directory / f"{name}.{fmt}"
        report = getattr(figure, "gradlab_report", None)
        try:
            save_figure(figure, path, fmt, dpi)
            if report is not None:
                atomic_write_json(path.with_suffix(".json"), report[0])
        except OSError as error:
            reason = error.strerror or str(error)
            raise GradlabError(f"cannot write figure {path}: {reason}") from error
        written.append(path)
        if report is not None:
            written.append(path.with_suffix(".json"))
            notes.extend(report[1])
        return path

    draw_figures(figures, save, warnings, where)
    return written


def draw_figures(figures: dict, save, warnings: list, where: str) -> list:
    """Build each figure of ``figures`` (name -> builder) in gradlab's style and hand it to
    ``save(name, figure)``; returns what ``save`` returned, in order. A figure that cannot be
    drawn becomes a warning naming ``where``; a GradlabError from ``save`` propagates."""
    saved = []
    for name, build in figures.items():
        try:
            with matplotlib.rc_context(STYLE):  # svg.fonttype is read when saving
                figure = build()
                if figure is None:
                    continue
                saved.append(save(name, figure))
        except (ValueError, KeyError, TypeError, IndexError, OSError) as error:
            warnings.append(f"{where}: {name} not drawn ({type(error).__name__}: {error})")
    return saved


def save_figure(figure: Figure, path: Path, fmt: str, dpi: int = DPI) -> None:
    """Save to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A diverged run logs losses near 1e300: the log-axis tick locator then computes
    # decades beyond the float range, which overflow to inf and fall outside the view.
    with atomic_writer(path, binary=True) as handle, np.errstate(over="ignore"):
        figure.savefig(handle, format=fmt, dpi=dpi, metadata=METADATA[fmt])
