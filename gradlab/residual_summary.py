"""What summary.json records about a residual network (``gradient_profile``), from the
stream gradients a run measured and the mean-field recursion (``gradlab.theory_residual``)."""

from gradlab import analysis, theory_residual
from gradlab.config import Config

# gradient_factor's label in a residual run: the constant-M fit is kept, for what it is
CONSTANT_FIT = (
    "constant-M fit to the stream gradients |dL/dx^l| of a residual network, whose per-block "
    "factor need not be constant: see gradient_profile"
)
_TRAINED = theory_residual.ResidualPrediction(
    None, None, "the theory describes the network at initialization"
)


def predict(config: Config, weight_scale: float, q0: float) -> theory_residual.ResidualPrediction:
    """The predicted profile at initialization, for the effective sigma_w ``weight_scale`` and
    inputs of mean square ``q0``."""
    model = config.model
    try:
        return theory_residual.predict_residual(
            model.activation,
            weight_scale,
            model.init.bias_scale,
            model.depth,
            branch=model.residual.branch,
            branch_scale=model.residual.branch_scale,
            norm=model.norm,
            norm_position=model.residual.norm_position,
            q0=q0,
            leaky_slope=model.leaky_slope,
        )
    except OverflowError:
        return theory_residual.ResidualPrediction(
            None, None, "no prediction: sigma_w^2, sigma_v^2 or q0 overflows a float"
        )


def gradient_profiles(config: Config, prediction, measured: dict) -> dict:
    """{label: profile} for ``measured`` {label: (step, |dL/dx^0|, |dL/dx^l| for l = 1..depth)}:
    against ``prediction`` at step 0, measurement only later (the theory describes
    initialization)."""
    profiles = {}
    for label, (step, input_norm, delta_norms) in measured.items():
        theory = prediction if step == 0 else _TRAINED
        norms = [input_norm, *delta_norms]
        profile = analysis.gradient_profile(norms, theory, config.analysis.tol)
        profiles[label] = {"step": step, **profile}
    return profiles
