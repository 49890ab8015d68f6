"""Figures of the Jacobian spectrum (spectrum.csv): the density of the singular values on a
log axis, for one run (init, and the end when measured) and overlaid for several runs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from gradlab.engine.jacobian import below_resolution
from gradlab.figures.common import colours, fmt, legend, new_figure, plain_log_labels, record, title
from gradlab.results import Run

BINS = 60
MIN_DECADES = 1.0  # a narrower spectrum (an isometry) is drawn on at least this range
S_LABEL = "singular value s of J = ∂xᴸ/∂x¹ (log axis)"
DENSITY_LABEL = "density per decade (area: fraction of all s)"


def spectra(run: Run) -> dict[int, np.ndarray]:
    """The singular values (samples, n) of each measured step, from spectrum.csv."""
    table = run.spectrum
    result = {}
    for step in np.unique(table["step"]):
        rows = table["step"] == step
        samples, ranks = table["sample"][rows], table["rank"][rows]
        if not (np.all(np.isfinite(samples) & (samples >= 0) & np.isfinite(ranks) & (ranks >= 1))):
            raise ValueError(  # a damaged file: a figure warning names it
                f"spectrum.csv: step {step:g} has rows without a sample >= 0 and a rank >= 1"
            )
        samples, ranks = samples.astype(int), ranks.astype(int)
        matrix = np.full((samples.max() + 1, ranks.max()), np.nan)  # S, n
        matrix[samples, ranks - 1] = table["singular_value"][rows]
        result[int(step)] = matrix
    return result


def _resolved(matrix: np.ndarray) -> np.ndarray:
    """The positive, finite singular values above float64 resolution, flattened."""
    keep = np.isfinite(matrix) & (matrix > 0) & ~below_resolution(np.nan_to_num(matrix))
    return matrix[keep]


def _edges(groups: Sequence[np.ndarray]) -> np.ndarray:
    """Common log10 bin edges spanning every group's resolved values."""
    logs = np.concatenate([np.log10(values) for values in groups])
    low, high = float(logs.min()), float(logs.max())
    if high - low < MIN_DECADES:
        middle = (low + high) / 2
        low, high = middle - MIN_DECADES / 2, middle + MIN_DECADES / 2
    return np.linspace(low, high, BINS + 1)


def _draw(ax, matrix, edges, colour, label) -> float:
    """One density curve; returns the fraction of singular values left out (unresolved)."""
    values = _resolved(matrix)
    counts, _ = np.histogram(np.log10(values), bins=edges)
    density = counts / (matrix.size * np.diff(edges))
    ax.stairs(density, 10.0**edges, color=colour, label=label, linewidth=1.5)
    return 1.0 - values.size / matrix.size


def _axes(ax, left_out: float) -> None:
    ax.set_xscale("log")
    plain_log_labels(ax.xaxis)
    ax.axvline(1.0, color="black", linestyle=":", linewidth=1, label="s = 1 (isometry)")
    ax.set_xlabel(S_LABEL)
    ax.set_ylabel(DENSITY_LABEL)
    if left_out > 0:
        ax.text(
            0.02,
            0.97,
            f"not drawn: {100 * left_out:.0f}% of s below float64 resolution",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
        )


def _numbers(block: dict) -> str:
    theory = block.get("theory") or {}
    return (
        f"mean s² {fmt(block.get('mean_sq'), '.3g')} (theory {fmt(theory.get('mean_sq'))}), "
        f"var {fmt(block.get('var_sq'), '.3g')} (theory {fmt(theory.get('var_sq'))})"
    )


def spectrum_density(run: Run) -> Figure | None:
    """The singular values of J at init (and at the end), one density curve per measured
    step pooled over the samples, with summary.json's mean and variance of s^2 against
    theory. None for a run without spectrum.csv."""
    measured = spectra(run)
    if not measured:
        return None
    blocks = {
        block["step"]: block for block in ((run.summary or {}).get("spectrum") or {}).values()
    }
    groups = [_resolved(matrix) for matrix in measured.values()]
    figure, ax = new_figure()
    if not any(values.size for values in groups):
        ax.set_title(f"{title(run)}: Jacobian singular values")
        ax.text(0.5, 0.5, "no resolved singular values", ha="center", transform=ax.transAxes)
        return figure
    edges = _edges([values for values in groups if values.size])
    left_out = 0.0
    lines = []
    for (step, matrix), colour in zip(measured.items(), colours(len(measured)), strict=True):
        block = blocks.get(step, {})
        label = "at init" if step == 0 else f"at step {step}"
        left_out = max(left_out, _draw(ax, matrix, edges, colour, label))
        lines.append(f"{label}: {_numbers(block)}")
    _axes(ax, left_out)
    samples, width = next(iter(measured.values())).shape
    layers = next(iter(blocks.values()), {}).get("layers")
    ax.set_title(
        f"{title(run)}: Jacobian singular values ({samples} samples, n = {width}, "
        f"L = {layers})\n" + "\n".join(lines),
        fontsize=9,
    )
    record(figure, steps=list(measured), left_out=left_out)
    legend(ax)
    return figure


def compare_spectrum(runs: Sequence[Run], labels: Sequence[str]) -> Figure | None:
    """The singular values of J at init of every run that measured them, overlaid (e.g.
    Gaussian against orthogonal weights), with each run's var s^2 in the legend."""
    drawn = [
        (run, label, measured[min(measured)])
        for run, label in zip(runs, labels, strict=True)
        if (measured := spectra(run))
    ]
    groups = [_resolved(matrix) for _, _, matrix in drawn]
    if len(drawn) < 2 or not any(values.size for values in groups):
        return None
    figure, ax = new_figure()
    edges = _edges([values for values in groups if values.size])
    left_out = 0.0
    for (run, label, matrix), colour in zip(drawn, colours(len(drawn)), strict=True):
        block = ((run.summary or {}).get("spectrum") or {}).get("init") or {}
        text = f"{label}: var s² {fmt(block.get('var_sq'), '.3g')}"
        left_out = max(left_out, _draw(ax, matrix, edges, colour, text))
    _axes(ax, left_out)
    ax.set_title(f"Jacobian singular values at initialization, {len(drawn)} runs")
    record(figure, runs=[label for _, label, _ in drawn])
    legend(ax, fontsize=8)
    return figure
