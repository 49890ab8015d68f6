"""BatchNorm's finite-batch gradient rate at initialization (Yang et al. 2019, arXiv:1902.08129),
numpy only: ``batch_coupled_rate`` integrates over the normalized batch of one feature with a
product rule built for it (Gauss-Jacobi in the radius, Gauss-Legendre in the angle).
``gradlab.theory.batchnorm_factor`` applies it to an activation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np


def _gauss_jacobi(n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Gauss rule for the weight (1 - s)^alpha on [0, 1]: n nodes and weights summing to 1.

    Golub-Welsch: the nodes are the eigenvalues of the Jacobi polynomials' recurrence matrix
    (weight (1 - x)^alpha (1 + x)^0 on [-1, 1], x = 2 s - 1), the weights the squared first
    components of its eigenvectors; exact for polynomials of degree < 2 n in s."""
    k = np.arange(1.0, n)  # (n - 1,)
    diagonal = np.empty(n)
    diagonal[0] = -alpha / (alpha + 2)
    two_k_alpha = 2 * k + alpha  # (n - 1,)
    diagonal[1:] = -(alpha**2) / (two_k_alpha * (two_k_alpha + 2))
    off_diagonal = (
        2 * k * (k + alpha) / (two_k_alpha * np.sqrt((two_k_alpha + 1) * (two_k_alpha - 1)))
    )
    matrix = np.diag(diagonal) + np.diag(off_diagonal, 1) + np.diag(off_diagonal, -1)
    x, vectors = np.linalg.eigh(matrix)
    return (1 + x) / 2, vectors[0] ** 2


_BN_RADIAL_NODES = 48  # with 2 x 32 angular nodes: rates to 1e-10 for 4 <= B <= 10^5
_BN_ANGULAR_NODES = 32  # per arc between the lines z_1 = 0 and z_2 = 0


@functools.lru_cache(maxsize=64)
def _batch_pair_rule(batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes (z_1, z_2) and weights for E[f(z_1, z_2)], z uniform on the sphere |z|^2 = B in
    the subspace of R^B orthogonal to (1, ..., 1): the batch of one feature after BatchNorm.

    In an orthonormal basis of the plane of the first two coordinates, a uniform point of the
    (B - 2)-sphere projects to y = rho (cos theta, sin theta) with rho^2 ~ Beta(1, (B - 3) / 2)
    (density (1 - rho^2)^((B - 5) / 2) on the unit disc); z_1, z_2 = rho (a cos theta +- b
    sin theta), a = sqrt((B - 2) / 2), b = sqrt(B / 2). Each node is paired with its mirror
    -y, which makes every integrand even in rho, hence smooth in s = rho^2: Gauss-Jacobi in s.
    Gauss-Legendre in theta on the two arcs between the lines z_1 = 0 and z_2 = 0, where
    relu's kinks lie, so no arc has a kink inside. Smooth activations and piecewise linear
    ones kinked at 0 are integrated to ~1e-10 or better; a kink at 0 between curved pieces
    (as elu's) leaves odd powers of rho, and ~1e-4."""
    s, radial_weights = _gauss_jacobi(_BN_RADIAL_NODES, (batch_size - 5) / 2)
    rho = np.sqrt(s)  # (R,)
    a, b = math.sqrt((batch_size - 2) / 2), math.sqrt(batch_size / 2)
    kink = math.atan(a / b)  # z_2 = 0 at theta = kink, z_1 = 0 at pi - kink
    x, w = np.polynomial.legendre.leggauss(_BN_ANGULAR_NODES)
    theta, angular_weights = [], []
    for low, high in ((kink, math.pi - kink), (math.pi - kink, math.pi + kink)):
        theta.append((high - low) / 2 * x + (high + low) / 2)
        angular_weights.append((high - low) / 2 * w / (2 * math.pi))  # a half turn and its mirror
    theta, angular = np.concatenate(theta), np.concatenate(angular_weights)  # (A,)
    z1 = np.outer(rho, a * np.cos(theta) + b * np.sin(theta)).ravel()  # (R A,)
    z2 = np.outer(rho, a * np.cos(theta) - b * np.sin(theta)).ravel()
    weights = np.outer(radial_weights, angular).ravel()
    rule = (np.concatenate([z1, -z1]), np.concatenate([z2, -z2]), np.concatenate([weights] * 2))
    for array in rule:
        array.flags.writeable = False  # cached: shared by every caller
    return rule


def batch_coupled_rate(
    phi: Callable[[np.ndarray], np.ndarray],
    derivative: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
) -> float:
    """Squared delta factor per layer of a wide network with BatchNorm before phi at batch size
    B >= 4 (Yang et al. 2019, arXiv:1902.08129): the growth rate of the batch-coupled backward
    map, independent of sigma_w and sigma_b.

    At initialization each feature's normalized batch z is uniform on the sphere |z|^2 = B
    orthogonal to 1 (BatchNorm's fixed point), and the pre-BN batch variance is sigma_w^2 c
    chi^2_{B-1} / B with c = E[phi(z_1)^2] - E[phi(z_1) phi(z_2)]. One layer maps the B x B
    covariance Pi of the delta across the batch to

        Pi <- B / ((B - 3) c) E_z[P D Pi D P],   P = I - 11^T / B - z z^T / B,  D = diag phi'(z)

    (E[1 / chi^2_{B-1}] = 1 / (B - 3)). The map commutes with permutations of the batch, so
    the squared norm tr Pi grows by its eigenvalue on G = I - 11^T / B:

        rate = B / ((B - 1) (B - 3) c) E[tr(P D G D P)],

    and E[tr(P D G D P)] needs moments of one and two coordinates of z only. Linear phi gives
    (B - 2) / (B - 3) exactly; B -> infinity gives E[phi'(z)^2] / Var[phi(z)], z ~ N(0, 1)."""
    if batch_size < 4:
        raise ValueError(f"the batch-coupled rate needs a batch of at least 4, not {batch_size}")
    z1, z2, weights = _batch_pair_rule(batch_size)
    phi1, phi2, d1, d2 = phi(z1), phi(z2), derivative(z1), derivative(z2)
    c = float(weights @ (phi1 * phi1 - phi1 * phi2))
    d_sq = float(weights @ (d1 * d1))  # E[phi'(z_1)^2]
    d_pair = float(weights @ (d1 * d2))  # E[phi'(z_1) phi'(z_2)]
    dz_sq = float(weights @ (d1 * d1 * z1 * z1))  # E[phi'(z_1)^2 z_1^2]
    dz_pair = float(weights @ (d1 * z1 * d2 * z2))  # E[phi'(z_1) z_1 phi'(z_2) z_2]
    b = batch_size
    # E[tr(P D G D P)] = E[tr(D G D G)] - E[z^T D G D z] / B; by exchangeability a sum over the
    # batch is B times its term at coordinate 1, a double sum adds B (B - 1) times the pair (1, 2)
    trace = (b - 2) * d_sq + (d_sq + (b - 1) * d_pair) / b - (b - 1) / b * (dz_sq - dz_pair)
    return b * trace / ((b - 1) * (b - 3) * c)
