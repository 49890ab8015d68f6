"""``gradlab theory``'s output: a prediction, or a critical line, as text or JSON."""

import json
import math

from gradlab import theory
from gradlab.errors import GradlabError
from gradlab.formatting import number_text

_WIDTH = 23  # the label column
_DEPTH_ROWS = (("xi_grad", "xi_grad"), ("xi_q", "xi_q"), ("c*", "c_star"), ("xi_c", "xi_c"))


def _number(value, spec=".6g") -> str:
    return number_text(value, spec, missing="nan")


def prediction_dict(prediction: theory.Prediction, leaky_slope: float = 0.01) -> dict:
    """The prediction as JSON-ready data: summary.json's theory block with ``factor`` named
    ``M``, and why there is no critical weight scale (``critical_scale_note``)."""
    data = {("M" if key == "factor" else key): value for key, value in prediction.to_dict().items()}
    data["critical_scale_note"] = None
    if prediction.critical_weight_scale is None:
        data["critical_scale_note"] = theory.critical_scale_note(
            theory.activation_entry(prediction.activation, leaky_slope),
            prediction.bias_scale,
            prediction.norm,
            prediction.q0,
            prediction.dropout,
        )
    return data


def format_prediction(
    prediction: theory.Prediction, fmt: str = "text", batch_size=None, leaky_slope=0.01
) -> str:
    """``gradlab theory``'s report: aligned lines, or JSON (``prediction_dict``)."""
    data = prediction_dict(prediction, leaky_slope)
    if fmt == "json":
        return json.dumps(data, indent=2)
    header = (
        f"activation={prediction.activation} weight_scale={_number(prediction.weight_scale)} "
        f"bias_scale={_number(prediction.bias_scale)} norm={prediction.norm}"
        + (f" batch_size={batch_size}" if batch_size else "")
        + (f" dropout={_number(prediction.dropout)}" if prediction.dropout else "")
    )
    q_star = prediction.q_star
    critical = prediction.critical_weight_scale
    rows = [
        ("q*", "inf (q grows without bound)" if q_star == math.inf else _number(q_star)),
        ("chi_1", _number(prediction.chi_1)),
        ("predicted factor M", _number(prediction.factor)),
        ("regime", prediction.regime),
        (
            "critical weight scale",
            _number(critical) if critical is not None else f"none ({data['critical_scale_note']})",
        ),
    ]
    rows += [(label, _depth_text(prediction, key)) for label, key in _DEPTH_ROWS]
    rows.append(("basis", prediction.reason))
    rows += _spectrum_rows(prediction, leaky_slope)
    return "\n".join([header] + [f"{label:<{_WIDTH}}{text}" for label, text in rows])


def _spectrum_rows(prediction: theory.Prediction, leaky_slope: float) -> list[tuple[str, str]]:
    """mu_1, mu_2 and Var[s^2] per layer of the Jacobian spectrum at the critical point."""
    from gradlab import theory_spectrum

    if prediction.norm != "none":
        return [("Jacobian spectrum", f"none (no theory with --norm {prediction.norm})")]
    if prediction.dropout:
        return [("Jacobian spectrum", "none (no theory with --dropout)")]
    at = theory_spectrum.at_criticality(
        prediction.activation, prediction.bias_scale, prediction.q0, leaky_slope
    )
    if "reason" in at:
        return [("Jacobian spectrum", f"none (no critical point: {at['reason']})")]
    return [
        (
            "mu_1 = E[phi'^2]",
            f"{_number(at['mu_1'])} (at criticality: sigma_w = {_number(at['weight_scale'])}, "
            f"q* = {_number(at['q_star'])})",
        ),
        ("mu_2 = E[phi'^4]", _number(at["mu_2"])),
        (
            "Var[s^2] per layer",
            f"gaussian {_number(at['gaussian'])}, orthogonal {_number(at['orthogonal'])} "
            "(at criticality; s: singular values of J)",
        ),
    ]


def _depth_text(prediction: theory.Prediction, key: str) -> str:
    """A depth-scale value with its unit and what it means, or why it is absent."""
    value = getattr(prediction, key)
    note = prediction.notes.get(key)
    if value is None:
        return f"none ({note})"
    if value == math.inf:
        return f"inf ({note})" if note else "inf"
    if key == "c_star":
        return _number(value) + (f" ({note})" if note else "")
    text = f"{_number(value)} layers"
    if key == "xi_grad":
        text += f" (the squared gradient {prediction.gradient_toward_input} toward the input)"
    elif key == "xi_c":
        text += f" (chi_c {_number(prediction.chi_c)})"
    return text


def critical_line(
    activation: str,
    bias_scales,
    norm: str = "none",
    q0: float = 1.0,
    dropout: float = 0.0,
    leaky_slope: float = 0.01,
) -> list[dict]:
    """The critical sigma_w for each sigma_b: rows of bias_scale, critical_weight_scale (None
    where there is none) and note (why)."""
    entry = theory.activation_entry(activation, leaky_slope)
    rows = []
    for bias_scale in bias_scales:
        scale = theory.critical_weight_scale(entry, bias_scale, norm, q0, dropout)
        note = None
        if scale is None:
            note = theory.critical_scale_note(entry, bias_scale, norm, q0, dropout)
        rows.append({"bias_scale": bias_scale, "critical_weight_scale": scale, "note": note})
    return rows


def format_critical_line(rows: list[dict], header: dict, fmt: str = "text") -> str:
    """The critical line as a two-column table under a key=value header, or JSON."""
    if fmt == "json":
        return json.dumps({**header, "critical_line": rows}, indent=2)
    lines = [" ".join(f"{key}={_config_value(value)}" for key, value in header.items())]
    lines.append(f"{'sigma_b':<12}critical sigma_w")
    for row in rows:
        scale = row["critical_weight_scale"]
        text = _number(scale) if scale is not None else f"none ({row['note']})"
        lines.append(f"{_number(row['bias_scale']):<12}{text}")
    return "\n".join(lines)


def _config_value(value) -> str:
    return value if isinstance(value, str) else _number(value)


def format_residual(
    activation, weight_scale, bias_scale, norm, leaky_slope, q0, branch, branch_scale, depth,
    norm_position, fmt,
) -> str:  # fmt: skip
    """``gradlab theory --residual``: the predicted profile, in text or JSON; a GradlabError
    for options that do not make one."""
    from gradlab.atomic import to_jsonable
    from gradlab.theory_residual import predict_residual

    if depth is None:
        raise GradlabError("--residual needs --depth (the number of residual blocks)")
    if not (math.isfinite(branch_scale) and branch_scale > 0):
        raise GradlabError(f"--branch-scale must be > 0 (a finite number), got {branch_scale:g}")
    try:
        prediction = predict_residual(
            activation,
            weight_scale,
            bias_scale,
            depth,
            branch=branch,
            branch_scale=branch_scale,
            norm=norm,
            norm_position=norm_position,
            q0=q0,
            leaky_slope=leaky_slope,
        )
    except OverflowError:
        raise GradlabError(
            "--weight-scale, --branch-scale or --q0 is too large (overflow)"
        ) from None
    factors = prediction.factors
    result = {
        "activation": activation,
        "weight_scale": weight_scale,
        "bias_scale": bias_scale,
        "norm": norm,
        "norm_position": norm_position,
        "residual": branch,
        "branch_scale": branch_scale,
        "depth": depth,
        "q0": q0,
        "applicable": prediction.applicable,
        "ratio": prediction.ratio,
        "factor_first_block": factors[0] if factors else None,
        "factor_last_block": factors[-1] if factors else None,
        "reason": prediction.reason,
        "factors": list(factors) if factors else None,
        "q": list(prediction.q) if prediction.q else None,
    }
    if fmt == "json":
        return json.dumps(to_jsonable(result), indent=2)
    missing = f"none ({prediction.reason})"
    lines = [
        f"activation={activation} weight_scale={_number(weight_scale, '.6g')} "
        f"bias_scale={_number(bias_scale, '.6g')} norm={norm}"
        + (f" norm_position={norm_position}" if norm != "none" else "")
        + f" residual={branch}"
        + (f" branch_scale={_number(branch_scale, '.6g')}" if branch == "full" else "")
        + f" depth={depth}",
        "predicted ratio        "
        + (_number(result["ratio"], ".6g") if factors else missing)
        + ("  (|dL/dx^0| / |dL/dx^depth|)" if factors else ""),
    ]
    if factors:
        lines += [
            f"factor at block 1      {_number(factors[0], '.6g')}",
            f"factor at block {depth:<6} {_number(factors[-1], '.6g')}",
            f"basis                  {prediction.reason}",
        ]
    return "\n".join(lines)
