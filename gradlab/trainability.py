"""Trainability against the correlation depth scale (Schoenholz et al. 2017, "Deep Information
Propagation", arXiv:1611.01232): which runs of a weight scale x depth sweep trained, and the
multiple k of xi_c for which "depth <= k xi_c" best separates them. Numpy only.

A run is *trainable* when its final training accuracy (on the training samples
train_eval_loss uses, in eval mode) is at least halfway from chance to perfect:
(1 + 1/K) / 2 for K classes (0.55 on the ten digits, 0.75 for a binary task). The paper
finds k of about 6 on MNIST and CIFAR-10, after far longer training than a sweep here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gradlab.theory_depth import depth_scales

TRAINABILITY_KEYS = ("model.init.weight_scale", "model.depth")  # the two keys the sweep varies
PAPER_MULTIPLES = (1, 2, 6)  # the curves k xi_c drawn besides the fitted k (the paper: 6)


def trainable_threshold(classes: int) -> float:
    """The final training accuracy a run needs to count as trainable: halfway between
    chance (1/K; K = 2 for a binary task) and 1."""
    return (1 + 1 / max(int(classes), 2)) / 2


def correlation_depth(flat_config: dict) -> float | None:
    """xi_c at initialization of the run with this (flattened) config: inf at criticality,
    None where gradlab's theory has none (normalization, no fixed point)."""
    if flat_config.get("model.norm", "none") != "none":
        return None
    scales = depth_scales(
        flat_config["model.activation"],
        float(flat_config["model.init.weight_scale"]),
        float(flat_config.get("model.init.bias_scale", 0.0)),
        dropout=float(flat_config.get("model.dropout", 0.0)),
        leaky_slope=float(flat_config.get("model.leaky_slope", 0.01)),
    )
    return scales.xi_c


@dataclass(frozen=True)
class Separation:
    """The multiple k of xi_c for which "trainable iff depth <= k xi_c" misclassifies the
    fewest points; every k in [k_low, k_high) does as well (the smallest such interval is
    taken on a tie). ``k`` is the interval's geometric middle (k_low when it is unbounded)."""

    k: float
    k_low: float
    k_high: float
    misclassified: int
    points: int


def misclassified(depths, xi_c, trainable, k: float) -> int:
    """Points that "trainable iff depth <= k xi_c" gets wrong (xi_c inf: always trainable)."""
    depths, xi_c, trainable = _arrays(depths, xi_c, trainable)
    predicted = depths <= k * xi_c
    return int(np.count_nonzero(predicted != trainable))


def best_multiple(depths, xi_c, trainable) -> Separation | None:
    """The Separation of these points (None without any): the errors change only where k
    crosses a point's depth / xi_c, so each interval between those ratios is tried once."""
    depths, xi_c, trainable = _arrays(depths, xi_c, trainable)
    if depths.size == 0:
        return None
    ratios = depths / xi_c  # predicted trainable iff k >= ratio (0 for xi_c = inf)
    cuts = np.unique(ratios)
    lows = np.concatenate(([0.0], cuts))
    highs = np.concatenate((cuts, [math.inf]))
    errors = [  # trainable runs predicted untrainable + untrainable ones predicted trainable
        int(
            np.count_nonzero(trainable & (ratios > low))
            + np.count_nonzero(~trainable & (ratios <= low))
        )
        for low in lows
    ]
    candidates = [i for i in range(len(lows)) if lows[i] < highs[i]]  # non-empty intervals
    best = min(candidates, key=lambda i: (errors[i], i))
    low, high = float(lows[best]), float(highs[best])
    if high == math.inf:
        k = low
    elif low == 0:
        k = high / 2
    else:
        k = math.sqrt(low * high)
    return Separation(k, low, high, errors[best], int(depths.size))


def _arrays(depths, xi_c, trainable):
    """The points as arrays (depth, xi_c, trainable); xi_c may be inf, not nan or None."""
    depths = np.asarray(depths, dtype=np.float64)
    xi_c = np.asarray(xi_c, dtype=np.float64)
    trainable = np.asarray(trainable, dtype=bool)
    if not (depths.shape == xi_c.shape == trainable.shape) or np.any(np.isnan(xi_c)):
        raise ValueError("depths, xi_c and trainable need one finite-or-inf value per point")
    return depths, xi_c, trainable


def xi_c_curve(flat_config: dict, weight_scales: Sequence[float]) -> np.ndarray:
    """xi_c at each weight scale for the rest of this config (nan where theory has none,
    inf at criticality)."""
    values = []
    for weight_scale in weight_scales:
        xi = correlation_depth({**flat_config, "model.init.weight_scale": float(weight_scale)})
        values.append(math.nan if xi is None else xi)
    return np.asarray(values, dtype=np.float64)
