"""The text ``gradlab run`` prints at the end of a run: per-layer gradient norms at init and
at the end, the verdict sentences, M against theory, the spectrum and divergence lines, and
a key=value line for scripts (all read from the run's summary.json)."""

import math

from gradlab.formatting import number_text


def number(value, spec=".3g"):
    """A number in the run report; nan when missing, so each
    key=value of the last line stays one token."""
    return number_text(value, spec, missing="nan")


def format_run_report(run, max_rows: int = 24) -> str:
    """The end-of-run stdout: per-layer gradient norms (init, end), the verdict sentences, M
    against theory, and a key=value line. ``verdict`` is the regime at initialization (what
    theory predicts); ``verdict_final`` the regime of the trained network."""
    from gradlab import analysis

    summary = run.summary or {}
    layers = summary.get("layers", {})
    init = layers.get("init", {}).get("weight_grad_norm", [])
    final = layers.get("final", {}).get("weight_grad_norm", [])
    depth = len(init)
    shown = list(range(depth))
    lines = []
    if depth > max_rows:
        stride = math.ceil(depth / (max_rows - 1))
        shown = sorted(set(range(0, depth, stride)) | {depth - 1})
        lines.append(f"(one layer in {stride}; all layers in {run.path / 'layers.csv'})")
    final_step = layers.get("final", {}).get("step")
    widths = analysis.varying_widths((run.config.get("model") or {}).get("width"))
    width_head = "" if widths is None else f"  {'width':>5}"
    lines.append(
        f"{'layer':>5}{width_head}  {'|dL/dW| init':>12}  {'|dL/dW| step ' + str(final_step):>16}"
    )
    for i in shown:
        end = final[i] if i < len(final) else None
        width = "" if widths is None else f"  {widths[i] if i < len(widths) else '':>5}"
        lines.append(f"{i + 1:>5}{width}  {number(init[i], '.3e'):>12}  {number(end, '.3e'):>16}")
    factors = summary.get("gradient_factor", {})
    at_init, at_end = factors.get("init") or {}, factors.get("final") or {}
    m_init, m_final = at_init.get("delta"), at_end.get("delta")
    theory = summary.get("theory") or {}
    predicted = theory.get("factor") if theory.get("applicable") else None
    profile = summary.get("gradient_profile") or {}  # residual networks only
    fit = " (constant-M fit)" if profile else ""
    for label in ("init", "final"):
        if label in profile and (label == "init" or profile[label]["step"] != 0):
            where = "at init" if label == "init" else f"at step {profile[label]['step']}"
            lines.append(f"{where}: {profile[label]['sentence']}")
    if at_init.get("sentence"):
        lines.append(f"at init{fit}: {at_init['sentence']}")
    if at_end.get("sentence") and at_end.get("step") != at_init.get("step"):
        lines.append(f"at step {at_end['step']}{fit}: {at_end['sentence']}")
    if predicted is not None:
        lines.append(
            f"measured M at init {number(m_init, '.4g')}, mean-field theory "
            f"{number(predicted, '.4g')} ({theory.get('regime')})"
        )
    if at_init.get("width_steps"):
        lines.extend(analysis.describe_width_steps(at_init["width_steps"]))
    if summary.get("spectrum"):
        from gradlab.spectrum import describe

        for label, block in summary["spectrum"].items():
            lines.append(
                describe("at init" if label == "init" else f"at step {block['step']}", block)
            )
    if summary.get("divergence"):
        d = summary["divergence"]
        lines.append(
            f"diverged at step {d['step']}: non-finite {d.get('quantity', 'value')} in the "
            f"{d['pass']} pass, layer {d['layer']}"
        )
    lines.append(
        f"status={run.status} M_init={number(m_init, '.4g')} M_final={number(m_final, '.4g')} "
        f"theory={number(predicted, '.4g')} verdict={at_init.get('regime', 'unknown')} "
        f"verdict_final={at_end.get('regime', 'unknown')} path={run.path}"
    )
    return "\n".join(lines)
