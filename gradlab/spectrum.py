"""The Jacobian spectrum of a run (``analysis.spectrum``): measured at initialization, and with
``at: init_and_end`` after training too; summarized for summary.json beside the theory.

The measurement is ``gradlab.engine.jacobian`` on the first ``samples`` training inputs; the
singular values go to spectrum.csv (``results.RunWriter.write_spectrum``). Each summary
(summary.json's ``spectrum.init`` and ``spectrum.final``) pools the samples, lambda = s^2:

- ``mean_sq``, ``var_sq``: mean and (population) variance of lambda;
- ``max``, ``min``: the largest and the smallest singular value. ``min`` is None when some
  singular values lie below float64 resolution (n eps s_max of their J, ``resolution``):
  they are not resolved (J is singular to working precision), and ``unresolved`` is their
  fraction;
- ``frac_within_2x``: the fraction of singular values in [1/2, 2];
- ``layers``: L, the number of layer Jacobians in J;
- ``theory``: ``theory_spectrum.predict_spectrum`` at initialization (None at the end, with
  the reason).
"""

from __future__ import annotations

import numpy as np

from gradlab.engine.jacobian import EPS, jacobian_spectrum
from gradlab.formatting import number_text
from gradlab.theory_spectrum import predict_spectrum

WITHIN = 2.0  # frac_within_2x: singular values in [1 / WITHIN, WITHIN]
_AT_END_THEORY = {
    "mean_sq": None,
    "var_sq": None,
    "reason": "no prediction: the theory describes the network at initialization",
}


def summarize(spectrum, step: int) -> dict:
    """The summary.json block of one ``jacobian.Spectrum`` measured at ``step`` (no theory)."""
    values = spectrum.singular_values  # S, n
    result = {"step": step, "samples": values.shape[0], "layers": spectrum.layers}
    if spectrum.problem is not None:
        keys = ("mean_sq", "var_sq", "max", "min", "frac_within_2x", "unresolved")
        return {**result, **dict.fromkeys(keys), "note": f"no spectrum: {spectrum.problem}"}
    with np.errstate(over="ignore", invalid="ignore"):  # lambda beyond 1e308 is inf
        squares = np.square(values)
        mean_sq, var_sq = float(np.mean(squares)), float(np.var(squares))
    unresolved = spectrum.unresolved
    result.update(
        mean_sq=mean_sq,
        var_sq=var_sq,
        max=float(values.max()),
        min=None if unresolved.any() else float(values.min()),
        frac_within_2x=float(np.mean((values >= 1 / WITHIN) & (values <= WITHIN))),
        unresolved=float(np.mean(unresolved)),
        resolution=float(values.shape[1] * EPS * values[:, 0].max()),
    )
    if spectrum.out_of_range:
        result["note"] = (
            f"{spectrum.out_of_range} singular values lie beyond the float64 range and are "
            "recorded as 0 or inf"
        )
    return result


class SpectrumRecorder:
    """Measures the spectrum of a run's model and writes spectrum.csv as it goes."""

    def __init__(self, config, model, x_train: np.ndarray, writer):
        self.settings = config.analysis.spectrum
        self.model, self.writer = model, writer
        self.inputs = x_train[: self.settings.samples]  # S, input_dim: the first samples
        self.measured: dict[str, dict] = {}

    def measure(self, label: str, step: int) -> None:
        spectrum = jacobian_spectrum(self.model, self.inputs)
        if spectrum.problem is None:
            self.writer.write_spectrum(step, spectrum.singular_values)
        self.measured[label] = summarize(spectrum, step)

    def at_end(self, step: int) -> None:
        """The final measurement, if asked for (the init one again when nothing trained)."""
        if self.settings.at != "init_and_end":
            return
        if step == self.measured["init"]["step"]:
            self.measured["final"] = dict(self.measured["init"])
        else:
            self.measure("final", step)

    def summary(self, config, prediction: dict) -> dict:
        """summary.json's ``spectrum``: each measurement with its theory; ``prediction`` is the
        run's mean-field theory at init (``initial_theory.theory_at_init``: effective sigma_w,
        q0)."""
        init = self.measured["init"]
        widths = {block.linear.fan_out for block in self.model.blocks}
        absent = None
        if len(widths) > 1:
            absent = "no prediction: the hidden widths differ (J is not square)"
        elif getattr(config.model, "dropout", 0.0):
            absent = "no prediction with dropout (J is measured without it, as in evaluation)"
        if absent is not None:
            return self._blocks(init, {**dict.fromkeys(("mean_sq", "var_sq")), "reason": absent})
        theory = predict_spectrum(
            config.model.activation,
            prediction["weight_scale"],
            prediction["bias_scale"],
            init=config.model.init.scheme,
            layers=init["layers"],
            norm=config.model.norm,
            q0=prediction["q0"],
            leaky_slope=config.model.leaky_slope,
        )
        return self._blocks(init, theory)

    def _blocks(self, init: dict, theory: dict) -> dict:
        blocks = {"init": {**init, "theory": theory}}
        if "final" in self.measured:
            blocks["final"] = {**self.measured["final"], "theory": dict(_AT_END_THEORY)}
        return blocks


def _number(value, spec=".4g") -> str:
    return number_text(value, spec, missing="n/a")


def spread_text(block: dict) -> str:
    """'s_max/s_min 2.93', or '> 4.5e+13 (41% below float64 resolution)' when unresolved."""
    largest, smallest = block.get("max"), block.get("min")
    if largest is None:
        return "n/a"
    if smallest is None:
        bound = largest / block["resolution"] if block.get("resolution") else float("inf")
        share = 100 * block.get("unresolved", 0.0)
        return f"> {_number(bound, '.2g')} ({share:.0f}% of s below float64 resolution)"
    return _number(largest / smallest if smallest > 0 else float("inf"), ".4g")


def describe(label: str, block: dict) -> str:
    """One line for ``gradlab run``: lambda's mean and variance against theory, the spread."""
    if block.get("mean_sq") is None and block.get("note"):
        return f"Jacobian spectrum {label}: {block['note']}"
    theory = block.get("theory") or {}
    return (
        f"Jacobian spectrum {label}: mean s^2 {_number(block['mean_sq'])} (theory "
        f"{_number(theory.get('mean_sq'))}), var s^2 {_number(block['var_sq'])} (theory "
        f"{_number(theory.get('var_sq'))}), spread s_max/s_min {spread_text(block)}"
    )
