"""The deep MLP of the lecture: [Linear -> optional norm -> activation -> optional dropout]
x depth -> Linear.

Hidden layer l (1-based, l = 1 next to the input) computes

    h_l = phi_{l-1} W_l + b_l,   phi_l = act(norm(h_l))      (phi_0 = x)

(with dropout, in training, the next layer sees phi_l * mask_l / (1 - p) instead of phi_l)
and the output layer is a plain Linear. ``delta`` of layer l is dL/dh_l, the gradient at the
linear layer's output *before* normalization: its norm goes like M^(L-l), the lecture's
per-layer factor.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gradlab import vocabulary
from gradlab.engine.activations import ACTIVATIONS, make_activation
from gradlab.engine.dropout import Dropout
from gradlab.engine.init import init_bias, init_weight
from gradlab.engine.layers import Activation, Linear
from gradlab.engine.normalization import BatchNorm, LayerNorm
from gradlab.errors import EngineError

NORMS = vocabulary.NORMS


@dataclass
class HiddenBlock:
    """One hidden layer: its Linear, optional normalization, activation, optional dropout."""

    index: int  # 1-based, as in the lecture
    linear: Linear
    norm: BatchNorm | LayerNorm | None
    activation: Activation
    dropout: Dropout | None = None  # on the activation's output; None for probability 0

    @property
    def layers(self):
        parts = (self.linear, self.norm, self.activation, self.dropout)
        return [layer for layer in parts if layer is not None]


class MLP:
    """A deep MLP with hand-written backprop. All arrays in ``dtype`` (float64 or float32).

    ``width`` is the units of every hidden layer, or a sequence of one width per hidden layer
    (``widths`` has them either way; ``width`` is None when they differ).

    Parameters are named ``layer{l}.weight``, ``layer{l}.bias``, ``layer{l}.norm.gamma``,
    ``layer{l}.norm.beta`` and ``output.weight``/``output.bias``; ``params`` and ``grads`` map
    those names to the live arrays (write into ``params[name][...]`` to set a parameter, or
    use ``load_params``). BatchNorm running statistics are in ``buffers``. Dropout masks come
    from ``dropout_rng`` (``dropout_rng`` if given, else ``rng`` after initialization; None
    without dropout): its ``bit_generator.state`` is the one piece of state a training step
    draws from besides the batches. The model only
    computes: per-layer statistics are a ``Probe`` (``gradlab.engine.probe``) that
    ``forward`` and ``backward`` call after each block.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        depth: int,
        width: int | Sequence[int],
        activation: str = "sigmoid",
        norm: str = "none",
        init: str = "normal",
        weight_scale: float = 1.0,
        bias_scale: float = 0.0,
        dtype="float64",
        rng: np.random.Generator | None = None,
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        ln_eps: float = 1e-5,
        leaky_slope: float = 0.01,
        dropout: float = 0.0,
        dropout_rng: np.random.Generator | None = None,
    ):
        if depth < 1 or input_dim < 1 or output_dim < 1:
            raise EngineError(
                f"MLP needs depth, width, input_dim and output_dim >= 1, got "
                f"{depth}, {width}, {input_dim}, {output_dim}"
            )
        widths = hidden_widths(depth, width)
        if norm not in NORMS:
            raise EngineError(f"norm: {norm!r} is not one of {', '.join(NORMS)}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float64, np.float32):
            raise EngineError(f"dtype: {dtype!r} is not one of float64, float32")
        if not 0 <= dropout < 1:
            raise EngineError(f"dropout: {dropout!r} is not a probability in [0, 1)")
        rng = np.random.default_rng() if rng is None else rng
        self.depth, self.widths = depth, widths
        self.width = widths[0] if len(set(widths)) == 1 else None  # None: the widths differ
        self.input_dim, self.output_dim = input_dim, output_dim
        self.activation_name, self.norm_name = activation, norm

        def linear(fan_in, fan_out):
            weight = init_weight(init, rng, fan_in, fan_out, weight_scale)
            return Linear(weight, init_bias(rng, fan_out, bias_scale), self.dtype)

        self.blocks: list[HiddenBlock] = []
        fan_in = input_dim
        for index, units in enumerate(widths, start=1):
            norm_layer = None
            if norm == "batch":
                norm_layer = BatchNorm(units, bn_momentum, bn_eps, self.dtype)
            elif norm == "layer":
                norm_layer = LayerNorm(units, ln_eps, self.dtype)
            block = HiddenBlock(
                index,
                linear(fan_in, units),
                norm_layer,
                make_activation(activation, self.dtype, leaky_slope=leaky_slope),
            )
            self.blocks.append(block)
            fan_in = units
        self.output = linear(fan_in, output_dim)
        self.dropout_rng = None
        if dropout > 0:  # after initialization: the default generator continues from there
            self.dropout_rng = rng if dropout_rng is None else dropout_rng
            for block in self.blocks:
                block.dropout = Dropout(dropout, self.dropout_rng, self.dtype)
        self.blocks[0].linear.needs_input_grad = False
        self._input_grads: dict[tuple, np.ndarray] = {}  # dL/dx of the Linear layers
        if _shares_input_grads(activation, norm):
            for layer in [block.linear for block in self.blocks] + [self.output]:
                layer.workspace = self._input_grads
        self._block_layers = [tuple(block.layers) for block in self.blocks]
        self.layers = [layer for layers in self._block_layers for layer in layers] + [self.output]

        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        owners = []
        for block in self.blocks:
            owners.append((f"layer{block.index}", block.linear))
            if block.norm is not None:
                owners.append((f"layer{block.index}.norm", block.norm))
        owners.append(("output", self.output))
        self._flatten([layer for _, layer in owners])
        for prefix, layer in owners:
            self._register(prefix, layer)
        self._hidden_names = {  # parameter names of the hidden Linear layers, by layer
            key: [f"layer{block.index}.{key}" for block in self.blocks]
            for key in ("weight", "bias")
        }

    @classmethod
    def from_dict(cls, spec: dict, rng: np.random.Generator | None = None) -> "MLP":
        """Build from a plain dict of the constructor's keyword arguments."""
        return cls(**spec, rng=rng)

    def _flatten(self, layers):
        """Move every parameter (and its gradient) into one contiguous array, in registration
        order: the layers' ``params``/``grads`` become views of it, so an elementwise
        optimizer can update the whole model in one numpy call (see ``optim``)."""
        pairs = [(layer, key) for layer in layers for key in layer.params]
        total = sum(layer.params[key].size for layer, key in pairs)
        flat_params = np.empty(total, dtype=self.dtype)
        flat_grads = np.zeros(total, dtype=self.dtype)
        offset = 0
        for layer, key in pairs:
            value = layer.params[key]
            end = offset + value.size
            view = flat_params[offset:end].reshape(value.shape)
            view[...] = value
            layer.params[key] = view
            layer.grads[key] = flat_grads[offset:end].reshape(value.shape)
            offset = end

    def _register(self, prefix, layer):
        for key in layer.params:
            self.params[f"{prefix}.{key}"] = layer.params[key]
            self.grads[f"{prefix}.{key}"] = layer.grads[key]
        for key, value in getattr(layer, "buffers", {}).items():
            self.buffers[f"{prefix}.{key}"] = value

    def _as_input(self, x) -> np.ndarray:
        """``x`` as a (batch, input_dim) array in the model's dtype, or an EngineError."""
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise EngineError(f"MLP input must be (batch, {self.input_dim}), got {x.shape}")
        return x

    def forward(self, x: np.ndarray, train: bool = True, probe=None) -> np.ndarray:
        """Outputs (B, output_dim) for inputs (B, input_dim); caches what backward needs.

        ``train`` selects BatchNorm's batch statistics (True) or running statistics (False).
        A ``probe`` (``gradlab.engine.probe``) is called as ``probe.forward(block)`` right
        after each hidden block, while its arrays are in cache.
        Returns a fresh array (the layers' own buffers are reused by the next call).
        """
        x = self._as_input(x)  # B, input_dim
        for block in self.blocks:
            x = block.linear.forward(x, train)  # B, N_l: h_l
            if block.norm is not None:
                x = block.norm.forward(x, train)  # B, N_l
            x = block.activation.forward(x, train)  # B, N_l: phi_l
            if block.dropout is not None:
                x = block.dropout.forward(x, train)  # B, N_l
            if probe is not None:
                probe.forward(block)
        return self.output.forward(x, train).copy()  # B, output_dim

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs (B, output_dim) in eval mode, bit for bit ``forward(x, train=False)``, in
        memory independent of depth: the hidden layers alternate between two arrays of
        (B, widest layer) and no layer keeps anything (``forward`` leaves caches for backward
        in every layer). Nothing the last ``forward``/``backward`` left is changed."""
        x = self._as_input(x)  # B, input_dim
        batch = x.shape[0]
        arrays = np.empty((2, batch * max(self.widths)), dtype=self.dtype)  # 2, B * widest
        side = 0  # the array the next Linear writes into; the other holds its input
        for layers, units in zip(self._block_layers, self.widths, strict=True):
            linear, *elementwise = layers
            out = arrays[side, : batch * units].reshape(batch, units)  # B, N_l
            spare = arrays[1 - side, : batch * units].reshape(batch, units)  # B, N_l
            linear.predict(x, out)
            for layer in elementwise:  # in place; spare is free (x is used up, or the input)
                layer.predict(out, spare)
            x, side = out, 1 - side
        return self.output.predict(x, np.empty((x.shape[0], self.output_dim), dtype=self.dtype))

    def backward(
        self, grad_output: np.ndarray, input_grad: bool = False, probe=None
    ) -> np.ndarray | None:
        """Backpropagate dL/doutputs (B, output_dim); overwrites ``grads`` and the deltas.

        A ``probe`` is called as ``probe.output_backward(layer)`` after the output layer and
        ``probe.backward(block)`` after each hidden block, while its gradients are in cache.
        Returns dL/dx (B, input_dim) when ``input_grad`` is set, else None (saves a matmul).
        """
        grad = np.asarray(grad_output, dtype=self.dtype)  # B, output_dim
        self.blocks[0].linear.needs_input_grad = input_grad
        grad = self.output.backward(grad)  # B, width
        if probe is not None:
            probe.output_backward(self.output)
        for block in reversed(self.blocks):
            if block.dropout is not None:
                grad = block.dropout.backward(grad)  # B, width
            grad = block.activation.backward(grad)  # B, width
            if block.norm is not None:
                grad = block.norm.backward(grad)  # B, width
            grad = block.linear.backward(grad)  # B, fan_in; None for layer 1 unless input_grad
            if probe is not None:
                probe.backward(block)
        return None if grad is None else grad.copy()

    def deltas(self) -> list[np.ndarray]:
        """dL/dh_l for hidden layers l = 1..depth from the last backward (views; copy to keep)."""
        return [block.linear.delta for block in self.blocks]

    def hidden_weight_names(self) -> list[str]:
        return list(self._hidden_names["weight"])

    def load_params(self, values: dict[str, np.ndarray]) -> None:
        """Copy arrays into the named parameters (shapes must match; unknown names are errors)."""
        for name, value in values.items():
            if name not in self.params:
                raise EngineError(f"unknown parameter {name!r}")
            target = self.params[name]
            value = np.asarray(value)
            if value.shape != target.shape:
                raise EngineError(f"{name}: shape {value.shape} does not match {target.shape}")
            target[...] = value


def hidden_widths(depth: int, width: int | Sequence[int]) -> tuple[int, ...]:
    """The units of hidden layers 1..depth: ``width`` for each, or the sequence as given
    (an EngineError unless it has ``depth`` entries, each an integer >= 1)."""
    if isinstance(width, int | np.integer):
        widths = (int(width),) * depth
    else:
        widths = tuple(width)
        if len(widths) != depth:
            raise EngineError(f"MLP needs {depth} widths (one per hidden layer), got {widths}")
    if not all(isinstance(units, int | np.integer) and units >= 1 for units in widths):
        raise EngineError(f"MLP widths must be integers >= 1, got {width}")
    return tuple(int(units) for units in widths)


def memory_footprint(
    input_dim: int,
    output_dim: int,
    depth: int,
    width: int | Sequence[int],
    activation: str = "sigmoid",
    norm: str = "none",
    dtype="float64",
    batch: int = 64,
    eval_batch: int = 0,
    parameter_copies: int = 2,
    dropout: float = 0.0,
) -> dict[str, int]:
    """Bytes an ``MLP`` of this shape holds, by part, without building it.

    parameters: ``parameter_copies`` arrays of every parameter (2: values and gradients; an
    optimizer adds its state). activations: the (batch, features) arrays a training step
    with per-layer statistics leaves in the layers (each layer's ``train_arrays`` and
    ``train_masks``, and the Linear layers' dL/dx, one array per shape shared by all where it
    can be); statistics: a ``Probe``'s two float64 (batch * N_l) scratch arrays for each
    width; predict: ``predict``'s two (eval_batch, widest layer) arrays and its output.
    """
    widths = hidden_widths(depth, width)
    itemsize = np.dtype(dtype).itemsize
    norm_class = {"none": None, "batch": BatchNorm, "layer": LayerNorm}[norm]
    activation_class = ACTIVATIONS[activation]
    per_sample = output_dim * itemsize  # the output layer's h
    if _shares_input_grads(activation, norm):  # one dL/dx per shape: fan-ins N_1..N_L
        per_sample += sum(set(widths)) * itemsize
    else:  # each Linear's own dL/dx (N_{l-1}), but layer 1's, which is not computed
        per_sample += sum(widths) * itemsize
    fan_ins = (input_dim, *widths)
    parameter_count = output_dim  # the output bias
    for units, fan_in in zip(widths, fan_ins, strict=False):
        per_sample += Linear.train_arrays * units * itemsize
        if norm_class is not None:
            per_sample += norm_class.train_arrays * units * itemsize
            parameter_count += 2 * units  # gamma, beta
        per_sample += activation_class.train_arrays * units * itemsize
        per_sample += activation_class.train_masks * units
        if dropout > 0:
            per_sample += Dropout.train_arrays * units * itemsize
        parameter_count += fan_in * units + units  # weight, bias
    parameter_count += widths[-1] * output_dim
    return {
        "parameters": parameter_copies * parameter_count * itemsize,
        "activations": batch * per_sample,
        # ``Probe.mean_std``'s ones and centred values, for each width
        "statistics": batch * 2 * sum(set(widths)) * 8,
        "predict": eval_batch * (2 * max(widths) + output_dim) * itemsize,
    }


def _shares_input_grads(activation: str, norm: str) -> bool:
    """Whether all Linear layers can write dL/dx into one array: each is read once, by the
    layer below, which writes its result elsewhere; not so for an identity activation with
    no norm, which passes it on to the next Linear as is."""
    return activation != "linear" or norm != "none"
