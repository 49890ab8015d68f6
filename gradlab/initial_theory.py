"""The mean-field theory of one run's network at initialization, as summary.json's ``theory``
block holds it: ``gradlab.theory`` (with its depth scales) for the run's activation, norm,
effective weight scale and q0 = the mean squared training input, withdrawn (None with the
reason) where it does not apply: residual networks (their profile: ``residual_summary``),
widths that change sigma_w (``theory_widths``), scales whose squares overflow."""

import math

import numpy as np

from gradlab import theory, theory_widths
from gradlab.config import Config
from gradlab.data import load_dataset
from gradlab.seeds import seed_streams

# how the non-"normal" schemes scale sigma_w for a square hidden layer (fan_in = fan_out)
_EFFECTIVE_SCALE = {"normal": 1.0, "uniform": 1.0, "orthogonal": 1.0, "xavier": 1.0}
_EFFECTIVE_SCALE["he"] = math.sqrt(2.0)


# theory_depth's numbers, each withdrawn with a note where the theory does not apply
_DEPTH_SCALES = ("xi_grad", "xi_q", "c_star", "xi_c")


def effective_weight_scale(config: Config) -> float:
    """sigma_w as the theory sees it: ``model.init.weight_scale`` scaled by the scheme."""
    return config.model.init.weight_scale * _EFFECTIVE_SCALE[config.model.init.scheme]


_RESIDUAL_NO_FACTOR = (
    "residual network: no constant per-layer factor M to predict; the predicted profile is "
    "summary.json's gradient_profile"
)


def predict_theory(config: Config, q0: float) -> dict:
    """Mean-field prediction for this network at initialization (see gradlab.theory); for a
    residual network none (its profile: ``residual_summary.predict``)."""
    init = config.model.init
    effective_scale = effective_weight_scale(config)
    if config.model.residual.enabled:
        prediction = _no_prediction(config, effective_scale, q0, _RESIDUAL_NO_FACTOR)
        return {**prediction.to_dict(), "applies_to": "initialization"}
    varying = len(set(config.model.widths)) > 1  # see gradlab.theory_widths
    reason = _widths_reason(config) if varying else None
    if reason is not None:  # (not computed, then withdrawn: no number from a wrong sigma_w)
        result = _no_prediction(config, effective_scale, q0, reason).to_dict()
        result["notes"]["chi_c"] = reason
        return {**result, "applies_to": "initialization", "width_factors": None}
    try:
        prediction = theory.predict(
            config.model.activation,
            effective_scale,
            init.bias_scale,
            norm=config.model.norm,
            q0=q0,
            batch_size=config.resolved_batch_size,
            tol=config.analysis.tol,
            leaky_slope=config.model.leaky_slope,
            dropout=config.model.dropout,
        )
    except OverflowError:  # e.g. weight_scale 1e200: sigma_w^2 is beyond the float range
        reason = "no prediction: sigma_w^2, sigma_b^2 or q0 overflows a float"
        prediction = _no_prediction(config, effective_scale, q0, reason)
    result = prediction.to_dict()
    result["applies_to"] = "initialization"
    if varying:
        result["width_factors"] = theory_widths.width_factors(config.model.widths)
    return result


def _widths_reason(config: Config) -> str | None:
    return theory_widths.unpredictable_scheme(config.model.init.scheme, config.model.norm)


def width_theory_applies(config: Config) -> bool:
    """Whether theory predicts the steps between layers of different widths (not for a fan_out
    init scheme without BatchNorm: see theory_widths.unpredictable_scheme)."""
    return _widths_reason(config) is None


def _no_prediction(config: Config, effective_scale: float, q0: float, reason: str):
    return theory.Prediction(
        config.model.activation,
        effective_scale,
        config.model.init.bias_scale,
        config.model.norm,
        q0,
        q_star=None,
        chi_1=None,
        factor=None,
        regime="unknown",
        critical_weight_scale=None,
        applicable=False,
        reason=reason,
        dropout=config.model.dropout,
        notes=dict.fromkeys(_DEPTH_SCALES, reason),
    )


def theory_at_init(config: Config, x_train: np.ndarray | None = None) -> dict:
    """predict_theory with q0 = the mean squared training input. Without ``x_train`` the run's
    data is regenerated from its seed (a data file read again): the theory needs no training
    (e.g. for a killed run)."""
    if x_train is None:
        x_train = load_dataset(config, np.random.default_rng(seed_streams(config)[0])).x_train
    return predict_theory(config, float(np.mean(np.square(x_train, dtype=np.float64))))
