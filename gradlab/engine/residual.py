"""Residual blocks and the residual MLP (Yang & Schoenholz 2017, arXiv:1712.08969).

The network: an input Linear (input_dim -> width, no activation) gives the stream x^0; then
``depth`` residual blocks; then the Linear output layer on x^depth. Block l, with
h^l = u W^l + b^l:

    full,    pre:   u = norm(x^{l-1}),  x^l = x^{l-1} + act(h^l) V^l
    full,    post:  u = x^{l-1},        x^l = norm(x^{l-1} + act(h^l) V^l)
    reduced:        V^l is the identity (x^l = x^{l-1} + act(h^l), or its norm)

(without a norm, u = x^{l-1} and pre and post are the same block). V^l has no bias and
V ~ N(0, sigma_v^2 / width) (``branch_scale`` = sigma_v). ``delta`` of block l is dL/dx^l,
the gradient on the stream after the block; ``linear.delta`` is dL/dh^l, the branch's.

Each block's ``forward``/``backward`` is the whole map x^{l-1} -> x^l and its transpose, so a
per-block Jacobian can be composed from them. Parameters: ``input.weight``, ``input.bias``,
``block{l}.weight``, ``block{l}.bias``, ``block{l}.norm.gamma``, ``block{l}.norm.beta``,
``block{l}.branch.weight``, ``output.weight``, ``output.bias``.
"""

from dataclasses import dataclass

import numpy as np

from gradlab import vocabulary
from gradlab.engine.init import init_weight
from gradlab.engine.layers import Activation, Layer, Linear
from gradlab.engine.model import MLP
from gradlab.engine.normalization import BatchNorm, LayerNorm
from gradlab.errors import EngineError


class BranchLinear(Layer):
    """The bias-free branch output map r = a V. Shapes: a (B, width), V (width, width).
    Backward: dL/dV = a^T g, dL/da = g V^T."""

    train_arrays = 2  # r, dL/da

    def __init__(self, weight: np.ndarray, dtype=np.float64):
        super().__init__(dtype)
        self._add_param("weight", weight)
        self._input: np.ndarray | None = None

    def forward(self, x, train=True):
        self._input = x
        out = self._buffer("out", (x.shape[0], self.params["weight"].shape[1]))  # B, width
        self.output = self.predict(x, out)
        return out

    def predict(self, x, out):
        """r = x V into ``out``, which must not overlap ``x``."""
        np.matmul(x, self.params["weight"], out=out)
        return out

    def backward(self, grad_out):
        np.matmul(self._input.T, grad_out, out=self.grads["weight"])
        grad_in = self._buffer("grad_in", self._input.shape)
        np.matmul(grad_out, self.params["weight"].T, out=grad_in)
        return grad_in


@dataclass
class ResidualBlock:
    """One residual block x^{l-1} -> x^l (see the module docstring)."""

    index: int  # 1-based
    linear: Linear  # W^l, b^l
    norm: BatchNorm | LayerNorm | None
    activation: Activation
    branch: BranchLinear | None  # V^l; None for the reduced branch (V = identity)
    post_norm: bool  # the norm after the sum (post) instead of on the branch's input (pre)

    def __post_init__(self):
        self.output: np.ndarray | None = None  # x^l (a buffer)
        self.delta: np.ndarray | None = None  # dL/dx^l from the last backward
        self._scratch: dict[tuple, np.ndarray] = {}

    @property
    def layers(self):
        return [
            layer
            for layer in (self.linear, self.norm, self.activation, self.branch)
            if layer is not None
        ]

    @property
    def param_layers(self):
        """The layers whose parameters this block owns, in registration order."""
        return [layer for layer in (self.linear, self.norm, self.branch) if layer is not None]

    def _buffer(self, name, shape, dtype):
        array = self._scratch.get((name, shape))
        if array is None:
            array = self._scratch[(name, shape)] = np.empty(shape, dtype=dtype)
        return array

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """x^l (B, width) from x^{l-1} (B, width); valid until this block's next forward."""
        pre_norm = self.norm is not None and not self.post_norm
        u = self.norm.forward(x, train) if pre_norm else x  # B, width
        a = self.activation.forward(self.linear.forward(u, train), train)  # B, width
        r = a if self.branch is None else self.branch.forward(a, train)  # B, width
        total = self._buffer("sum", x.shape, x.dtype)
        np.add(x, r, out=total)  # x^{l-1} + branch
        self.output = self.norm.forward(total, train) if self.post_norm and self.norm else total
        return self.output

    def predict(self, x: np.ndarray, spare: np.ndarray, hidden: np.ndarray, branch: np.ndarray):
        """``forward(x, train=False)`` bit for bit, in place in ``x`` (returned), with three
        scratch arrays of x's shape; keeps nothing."""
        pre_norm = self.norm is not None and not self.post_norm
        u = x
        if pre_norm:
            np.copyto(branch, x)
            u = self.norm.predict(branch, spare)
        self.linear.predict(u, hidden)
        a = self.activation.predict(hidden, spare)
        r = a if self.branch is None else self.branch.predict(a, branch)
        x += r
        if self.post_norm and self.norm is not None:
            x = self.norm.predict(x, spare)
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray:
        """dL/dx^{l-1} (B, width) from dL/dx^l; overwrites the block's parameter gradients."""
        self.delta = grad
        if self.post_norm and self.norm is not None:
            grad = self.norm.backward(grad)  # dL/d(x^{l-1} + branch)
        branch_grad = grad if self.branch is None else self.branch.backward(grad)
        branch_grad = self.linear.backward(self.activation.backward(branch_grad))  # dL/du
        if self.norm is not None and not self.post_norm:
            branch_grad = self.norm.backward(branch_grad)
        grad_in = self._buffer("grad_in", grad.shape, grad.dtype)
        np.add(grad, branch_grad, out=grad_in)  # the skip connection plus the branch
        return grad_in


class ResidualMLP(MLP):
    """An ``MLP`` of residual blocks (see the module docstring); the same interface.

    ``branch``: "full" (x + act(h) V) or "reduced" (x + act(h)); ``branch_scale``: sigma_v;
    ``norm_position``: "pre" or "post" (ignored without a norm).
    """

    residual = True

    def __init__(
        self,
        *args,
        branch: str = "full",
        branch_scale: float = 1.0,
        norm_position: str = "pre",
        **kwargs,
    ):
        if branch not in vocabulary.RESIDUAL_BRANCHES:
            raise EngineError(
                f"branch: {branch!r} is not one of {', '.join(vocabulary.RESIDUAL_BRANCHES)}"
            )
        if norm_position not in vocabulary.NORM_POSITIONS:
            raise EngineError(
                f"norm_position: {norm_position!r} is not one of "
                f"{', '.join(vocabulary.NORM_POSITIONS)}"
            )
        if not branch_scale > 0:
            raise EngineError(f"branch_scale must be > 0, got {branch_scale!r}")
        self.branch_name, self.branch_scale = branch, float(branch_scale)
        self.norm_position = norm_position
        super().__init__(*args, **kwargs)

    def _build_layers(self, linear, make_norm, make_activation_layer, rng):
        width = self.width
        if width is None:
            raise EngineError(f"a residual network needs one width, got {list(self.widths)}")
        if self.dropout_rng is not None:
            raise EngineError("dropout in residual blocks is not supported")
        self.input_layer = linear(self.input_dim, width)  # x^0, no activation
        self.input_layer.needs_input_grad = False
        self.blocks = []
        for index in range(1, self.depth + 1):
            hidden = linear(width, width)
            branch = None
            if self.branch_name == "full":
                weight = init_weight("normal", rng, width, width, self.branch_scale)
                branch = BranchLinear(weight, self.dtype)
            block = ResidualBlock(
                index,
                hidden,
                make_norm(width),
                make_activation_layer(),
                branch,
                post_norm=self.norm_position == "post",
            )
            self.blocks.append(block)
        self.output = linear(width, self.output_dim)
        self.layers = [self.input_layer, *[x for b in self.blocks for x in b.layers], self.output]
        owners = [("input", self.input_layer)]
        for block in self.blocks:
            owners.append((f"block{block.index}", block.linear))
            if block.norm is not None:
                owners.append((f"block{block.index}.norm", block.norm))
            if block.branch is not None:
                owners.append((f"block{block.index}.branch", block.branch))
        owners.append(("output", self.output))
        return owners, "block"

    def forward(self, x: np.ndarray, train: bool = True, probe=None) -> np.ndarray:
        """Outputs (B, output_dim); a ``probe`` is called after each block (``MLP.forward``)."""
        x = self.input_layer.forward(self._as_input(x), train)  # B, width: x^0
        for block in self.blocks:
            x = block.forward(x, train)  # B, width: x^l
            if probe is not None:
                probe.forward(block)
        return self.output.forward(x, train).copy()  # B, output_dim

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``forward(x, train=False)`` bit for bit, in five (B, width) arrays whatever the
        depth; nothing the last ``forward``/``backward`` left is changed."""
        x = self._as_input(x)  # B, input_dim
        stream, spare, hidden, branch = np.empty((4, x.shape[0], self.width), dtype=self.dtype)
        stream = self.input_layer.predict(x, stream)
        for block in self.blocks:
            stream = block.predict(stream, spare, hidden, branch)
        return self.output.predict(stream, np.empty((x.shape[0], self.output_dim), self.dtype))

    def backward(self, grad_output, input_grad: bool = False, probe=None):
        """As ``MLP.backward``; the probe's ``input_backward`` runs after the input layer."""
        grad = np.asarray(grad_output, dtype=self.dtype)  # B, output_dim
        self.input_layer.needs_input_grad = input_grad
        grad = self.output.backward(grad)  # B, width: dL/dx^depth
        if probe is not None:
            probe.output_backward(self.output)
        for block in reversed(self.blocks):
            grad = block.backward(grad)  # B, width: dL/dx^{l-1}
            if probe is not None:
                probe.backward(block)
        grad = self.input_layer.backward(grad)  # dL/dx^0 is the input layer's delta
        if probe is not None:
            probe.input_backward(self.input_layer)
        return None if grad is None else grad.copy()

    def deltas(self) -> list[np.ndarray]:
        """dL/dx^l, the stream gradients after blocks l = 1..depth, from the last backward."""
        return [block.delta for block in self.blocks]

    def stream_deltas(self) -> list[np.ndarray]:
        """dL/dx^l for l = 0..depth (x^0 the input layer's output)."""
        return [self.input_layer.delta, *self.deltas()]


def residual_footprint(
    input_dim, output_dim, depth, width, batch, eval_batch, parameter_copies, itemsize,
    norm_class, activation_class, branch,
):  # fmt: skip
    """``memory_footprint`` of a ``ResidualMLP``: per block its layers' arrays, the Linear's
    own dL/dx, the branch map's two and the block's sum and dL/dx^{l-1}; ``predict`` keeps
    four (eval_batch, width) arrays."""
    per_block = (Linear.train_arrays + 1 + 2 + activation_class.train_arrays) * width * itemsize
    per_block += activation_class.train_masks * width
    per_block += norm_class.train_arrays * width * itemsize if norm_class is not None else 0
    per_block += BranchLinear.train_arrays * width * itemsize if branch == "full" else 0
    # the input layer's h; the output layer's h and dL/dx
    per_sample = (Linear.train_arrays * width + output_dim + width) * itemsize
    per_sample += depth * per_block
    block_parameters = width * width + width  # W, b
    block_parameters += 2 * width if norm_class is not None else 0  # gamma, beta
    block_parameters += width * width if branch == "full" else 0  # V
    parameter_count = (input_dim + 1) * width + depth * block_parameters
    parameter_count += (width + 1) * output_dim
    return {
        "parameters": parameter_copies * parameter_count * itemsize,
        "activations": batch * per_sample,
        "statistics": batch * 2 * width * 8,
        "predict": eval_batch * (4 * width + output_dim) * itemsize,
    }
