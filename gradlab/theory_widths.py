"""Mean-field theory of hidden layers of different widths (numpy-free: plain floats).

With W ~ N(0, sigma_w^2 / fan_in) the forward variance map does not see the widths, so q*,
chi_1 and the predicted M are those of equal widths; the widths put a factor on each layer's
gradient norm instead (``width_factors``). Initializers whose scale depends on fan_out
change sigma_w where the width changes, which one factor M cannot describe
(``unpredictable_scheme``).
"""

from __future__ import annotations

import math

# schemes whose variance depends on fan_out too: between layers of different widths their
# sigma_w differs from the square layers'
FAN_OUT_SCHEMES = ("xavier", "orthogonal")


def width_factors(widths) -> dict[str, list[float | None]]:
    """What hidden layers of different widths ``widths`` (N_1..N_L, L >= 2) do to the
    per-layer gradient norms at initialization, as a factor on each layer's norm relative to
    layer L's: the predicted profile is M^(L-l) times it. With W ~ N(0, sigma_w^2 / fan_in)
    the forward q-map, and so chi_1, do not depend on the widths.

    - ``delta_norm``, |delta_l| summed over the batch and the N_l units: 1 for every layer.
      Per unit, E[delta_i^2] gains N_{l+1} / N_l going down a layer (Schoenholz et al.
      2017); summed over the N_l units that ratio cancels: |delta_l|^2 = chi_1 |delta_{l+1}|^2.
    - ``delta_rms``, |delta_l| / sqrt(N_l), the per-unit scale: sqrt(N_L / N_l).
    - ``weight_grad_norm``, |dL/dW_l| = |x_{l-1}^T delta_l| with |x_{l-1}|^2 proportional to
      its fan-in N_{l-1}: sqrt(N_{l-1} / N_{L-1}); None for layer 1, whose input is the data
      (mean square q0, not phi's at q*).
    """
    widths = [int(units) for units in widths]
    return {
        "delta_norm": [1.0] * len(widths),
        "delta_rms": [math.sqrt(widths[-1] / units) for units in widths],
        "weight_grad_norm": [None] + [math.sqrt(units / widths[-2]) for units in widths[:-1]],
    }


def unpredictable_scheme(scheme: str, norm: str) -> str | None:
    """Why there is no mean-field prediction for layers of different widths initialized with
    ``scheme`` (None when there is one): BatchNorm's factor does not depend on sigma_w."""
    if scheme in FAN_OUT_SCHEMES and norm != "batch":
        return (
            f"no prediction: init scheme {scheme} scales a layer by its fan_out too, so "
            "sigma_w changes where the width changes"
        )
    return None
