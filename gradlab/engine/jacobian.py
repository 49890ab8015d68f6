"""The Jacobian of a network's hidden stack, per sample, and its singular values.

For a plain MLP, J(x) = d x^depth / d x^1: the last hidden layer's output with respect to
the first hidden layer's output, a width x width matrix. In the engine's row convention
(samples are rows, x^l = act(norm(x^{l-1} W_l + b_l))) a change dx^{l-1} becomes

    dx^l = dx^{l-1} W_l N_l D_l,   D_l = diag(act'(y_l)), y_l = norm(h_l),  h_l = x^{l-1} W_l + b_l

with N_l the LayerNorm Jacobian, (I - 1 1^T / n - xhat xhat^T / n) diag(gamma) / sigma with
xhat = (h - mean) / sigma and sigma = sqrt(var + eps) of the sample (identity without a norm).
So J = prod_{l=2..depth} W_l N_l D_l: L = depth - 1 layer Jacobians (Pennington et al. 2017
write the transpose, prod D W; the singular values are the same).

Algorithm. One forward pass of the S samples records each block's pre-activations h_l in
float64 (a probe). The running product P, (S, n, n) in float64, starts at the identity and
each block multiplies it on the right by its own per-sample factor (``FACTORS``, by block
type): for a plain block P W_l is one GEMM of (S n, n) by (n, n), the weights being shared
by the samples, and N_l and D_l act per sample in O(S n^2). D_l comes from the engine's own
backward pass of a float64 twin of the activation, so a float32 network's Jacobian is still
computed in float64 and a saturated unit's tiny slope does not read 0. After each block,
each sample's P is divided by the power of 2 nearest its largest |entry| (exact: only the
exponent changes), so products of thousands of layers neither overflow nor underflow. The
batched SVD of the scaled P (LAPACK gesdd, singular values only) then gives s, and
``np.ldexp`` puts the exponent back.

Cost: 2 S (L + 1) n^3 flops for the products and about (8/3) S n^3 for the SVDs: for width
512, depth 50 and 4 samples about 54 GFLOP (benchmarks/jacobian_spectrum.py).

Resolution: a singular value below n eps s_max of its own J (eps = 2.2e-16) is rounding
noise: J is singular to float64 precision there (a ReLU network's J has about half its
singular values exactly 0, from the zero slopes). ``Spectrum.unresolved`` marks them.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradlab.engine.model import MLP, HiddenBlock
from gradlab.engine.normalization import BatchNorm, LayerNorm
from gradlab.errors import EngineError

EPS = np.finfo(np.float64).eps
_CHUNK_BYTES = 64 * 2**20  # running products of one chunk of samples (S_chunk n^2 float64)


@dataclass(frozen=True)
class Spectrum:
    """Singular values of J(x) for S samples; ``problem`` says why there are none."""

    singular_values: np.ndarray  # (S, n) float64, each row descending
    unresolved: np.ndarray  # (S, n) bool: below n eps s_max of the sample's J (rounding)
    out_of_range: int  # resolved nonzero values beyond the float64 range (recorded 0 or inf)
    layers: int  # L: the number of layer Jacobians in J
    problem: str | None = None  # e.g. non-finite pre-activations: no values


class _Preactivations:
    """A probe for ``MLP.forward``: each block's pre-activation h (S, n), copied to float64."""

    def __init__(self):
        self.by_block: dict[int, np.ndarray] = {}

    def forward(self, block) -> None:
        self.by_block[block.index] = np.array(block.linear.output, dtype=np.float64)


def _slopes(activation, y: np.ndarray) -> np.ndarray:
    """act'(y), (S, n) float64, from the backward pass of a float64 twin of the layer."""
    twin = activation.twin(np.float64)
    twin.forward(y, train=False)
    return twin.backward(np.ones_like(y))


def _layernorm_factor(product: np.ndarray, norm: LayerNorm, h: np.ndarray) -> np.ndarray:
    """P <- P N (in place; N the LayerNorm Jacobian of each sample); returns y = LN(h)."""
    features = h.shape[1]
    centred = h - h.mean(axis=1, keepdims=True)  # S, n
    sigma = np.sqrt(np.mean(centred * centred, axis=1, keepdims=True) + norm.eps)  # S, 1
    xhat = centred / sigma  # S, n
    gamma = norm.params["gamma"].astype(np.float64)  # n
    row_sums = product.sum(axis=2, keepdims=True)  # S, n, 1: P 1
    along_xhat = np.matmul(product, xhat[:, :, None])  # S, n, 1: P xhat
    product -= row_sums / features
    product -= along_xhat * (xhat[:, None, :] / features)
    product *= gamma[None, None, :] / sigma[:, :, None]
    return xhat * gamma + norm.params["beta"].astype(np.float64)


def plain_block_factor(product: np.ndarray, block: HiddenBlock, h: np.ndarray) -> np.ndarray:
    """P W N D for a Linear -> optional LayerNorm -> activation block. ``product`` is
    (S, m, n_in), ``h`` the block's pre-activations (S, n); returns (S, m, n)."""
    samples, rows, fan_in = product.shape
    weight = block.linear.params["weight"].astype(np.float64)  # fan_in, n
    product = np.matmul(product.reshape(samples * rows, fan_in), weight)  # S m, n: one GEMM
    product = product.reshape(samples, rows, weight.shape[1])  # S, m, n
    y = h
    if isinstance(block.norm, LayerNorm):
        y = _layernorm_factor(product, block.norm, h)
    product *= _slopes(block.activation, y)[:, None, :]
    return product


# Each block type's per-sample Jacobian factor: (P (S, m, n_in), block, h (S, n)) -> P J_block
FACTORS: dict[type, Callable] = {HiddenBlock: plain_block_factor}


def jacobian_blocks(model: MLP) -> list:
    """The blocks whose Jacobians J multiplies: a plain MLP's J = d x^depth / d x^1 leaves out
    block 1 (its input is the data, of another width)."""
    return model.blocks[1:]


def jacobian_spectrum(model: MLP, x: np.ndarray) -> Spectrum:
    """Singular values of J(x) for each row of ``x`` (S, input_dim) at the model's current
    parameters (see the module docstring), in chunks of samples whose running products take
    at most 64 MiB. BatchNorm couples the samples of a batch, so a per-sample J is not
    defined: an EngineError."""
    if any(isinstance(block.norm, BatchNorm) for block in model.blocks):
        raise EngineError("the per-sample Jacobian is not defined with BatchNorm")
    widest = max(block.linear.fan_out for block in model.blocks)  # widths may differ
    chunk = max(1, _CHUNK_BYTES // (8 * widest**2))
    parts = [_chunk_spectrum(model, x[start : start + chunk]) for start in range(0, len(x), chunk)]
    failed = [part for part in parts if part.problem is not None]
    if failed:
        return failed[0]
    return Spectrum(
        np.concatenate([part.singular_values for part in parts]),
        np.concatenate([part.unresolved for part in parts]),
        sum(part.out_of_range for part in parts),
        parts[0].layers,
    )


def below_resolution(singular_values: np.ndarray) -> np.ndarray:
    """Which singular values (S, n) lie below n eps s_max of their own row's J: rounding."""
    values = np.asarray(singular_values, dtype=np.float64)
    return values < values.shape[1] * EPS * values.max(axis=1, keepdims=True)


def jacobians(model: MLP, x: np.ndarray) -> np.ndarray:
    """J(x) itself, (S, n, n) float64, for each row of ``x`` (non-finite entries where it
    over- or underflows float64, or the network's forward pass does)."""
    product, exponent, _, problem = _scaled_product(model, x)
    if problem is not None:
        return np.full(product.shape, np.nan)
    with np.errstate(over="ignore", under="ignore"):
        return np.ldexp(product, exponent[:, None, None])


def _scaled_product(model: MLP, x: np.ndarray):
    """(P, exponent, L, problem): J = P 2^exponent per sample, or ``problem`` why not."""
    probe = _Preactivations()
    with np.errstate(all="ignore"):  # an exploding network may overflow: reported below
        model.forward(x, train=False, probe=probe)
    samples, width = probe.by_block[1].shape
    blocks = jacobian_blocks(model)
    product = np.broadcast_to(np.eye(width), (samples, width, width)).copy()  # S, n, n
    exponent = np.zeros(samples, dtype=np.int64)  # J = P 2^exponent, per sample
    for block in blocks:
        h = probe.by_block[block.index]
        what = "pre-activations" if not np.all(np.isfinite(h)) else None
        if what is None:
            product = FACTORS[type(block)](product, block, h)
            largest = np.maximum(product.max(axis=(1, 2)), -product.min(axis=(1, 2)))  # S, max |P|
            what = "Jacobian entries" if not np.all(np.isfinite(largest)) else None
        if what is not None:
            return (
                product,
                exponent,
                len(blocks),
                f"non-finite {what} at hidden layer {block.index}",
            )
        _, shift = np.frexp(largest)  # largest = m 2^shift, 0.5 <= m < 1; 0 for a zero P
        np.ldexp(product, -shift[:, None, None], out=product)
        exponent += shift
    return product, exponent, len(blocks), None


def _chunk_spectrum(model: MLP, x: np.ndarray) -> Spectrum:
    product, exponent, layers, problem = _scaled_product(model, x)
    if problem is not None:
        empty = np.zeros((product.shape[0], 0))
        return Spectrum(empty, empty.astype(bool), 0, layers, problem)
    scaled = np.linalg.svd(product, compute_uv=False)  # S, n, descending
    with np.errstate(over="ignore", under="ignore"):
        values = np.ldexp(scaled, exponent[:, None])
    unresolved = below_resolution(scaled)
    lost = (scaled > 0) & ~unresolved & ((values == 0) | np.isinf(values))
    return Spectrum(values, unresolved, int(np.count_nonzero(lost)), layers)
