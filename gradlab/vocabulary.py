"""Every family of named choices, defined once (pure Python: every layer may import it).

Config validation (``gradlab.config.CHOICES``), the CLI's ``--help`` choices, the theory, the
figures and the tables in docs/config.md read these tuples; the engine builds its registries
(activation layers, losses, clip modes, optimizers, initializers, norms) keyed by them and
refuses to import if a registry and its tuple disagree. Adding a name: see docs/extending.md.

The tuples hold names only, so ``gradlab --help`` and config checking never import numpy
(numpy takes about four times as long to import as the whole CLI).
"""

import math

ACTIVATIONS = (
    "sigmoid",
    "tanh",
    "relu",
    "linear",
    "erf",
    "gelu",
    "silu",
    "softplus",
    "leaky_relu",
    "elu",
)
NORMS = ("none", "batch", "layer")
LOSSES = ("mse", "bce", "cross_entropy")
CLIP_MODES = ("none", "norm", "layer_norm", "value")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "step", "cosine", "linear")  # learning-rate schedules (gradlab.schedule)
INIT_SCHEMES = ("normal", "uniform", "xavier", "he", "orthogonal")
REGIMES = ("vanishing", "stable", "exploding", "unknown")
SPECTRUM_TIMES = ("init", "init_and_end")  # when the Jacobian spectrum is measured
DATA_SOURCES = ("synthetic", "file", "digits")  # the teacher, a .npz/.csv file, sklearn's digits
RESIDUAL_BRANCHES = ("full", "reduced")  # x + act(h) V, or x + act(h) (V the identity)
NORM_POSITIONS = ("pre", "post")  # a residual block's norm on the branch input, or after the sum

FAMILIES = {
    "activation": ACTIVATIONS,
    "norm": NORMS,
    "loss": LOSSES,
    "clip mode": CLIP_MODES,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "init scheme": INIT_SCHEMES,
    "regime": REGIMES,
    "spectrum time": SPECTRUM_TIMES,
    "data source": DATA_SOURCES,
    "residual branch": RESIDUAL_BRANCHES,
    "norm position": NORM_POSITIONS,
}


def regime_of(factor: float | None, tol: float = 0.05) -> str:
    """The verdict on a per-layer factor M: 'vanishing' below 1 - tol, 'exploding' above
    1 + tol (inf included), 'stable' between, 'unknown' for None or nan."""
    if factor is None or math.isnan(factor):
        return "unknown"
    if factor < 1 - tol:
        return "vanishing"
    if factor > 1 + tol:
        return "exploding"
    return "stable"


def check_registry(family: str, registered, names: tuple[str, ...]) -> None:
    """Raise ImportError unless ``registered`` (a registry's keys, in order) is ``names``: a
    name added to one but not the other is caught the moment gradlab is imported."""
    registered = tuple(registered)
    if registered != names:
        missing = [name for name in names if name not in registered]
        extra = [name for name in registered if name not in names]
        raise ImportError(
            f"the {family} registry and gradlab.vocabulary disagree: missing from the registry "
            f"{missing}, missing from the vocabulary {extra} (or a different order)"
        )
