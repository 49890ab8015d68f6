"""The deep MLP of the lecture: [Linear -> optional norm -> activation] x depth -> Linear.

Hidden layer l (1-based, l = 1 next to the input) computes

    h_l = phi_{l-1} W_l + b_l,   phi_l = act(norm(h_l))      (phi_0 = x)

and the output layer is a plain Linear. ``delta`` of layer l is dL/dh_l, the gradient at the
linear layer's output *before* normalization: its norm goes like M^(L-l), the lecture's
per-layer factor.
"""

import math
from dataclasses import dataclass

import numpy as np

from gradlab import vocabulary
from gradlab.engine.activations import ACTIVATIONS, make_activation
from gradlab.engine.init import init_bias, init_weight
from gradlab.engine.layers import Activation, BatchNorm, LayerNorm, Linear
from gradlab.engine.norms import l2_norm
from gradlab.errors import EngineError

NORMS = vocabulary.NORMS
STAT_NAMES = (
    "weight_grad_norm",
    "bias_grad_norm",
    "delta_norm",
    "weight_norm",
    "act_mean",
    "act_std",
    "saturation",
    "update_ratio",
)
_FORWARD_STATS = ("weight_norm", "act_mean", "act_std", "saturation")  # forward(record=True)


@dataclass
class HiddenBlock:
    """One hidden layer: its Linear, optional normalization and activation."""

    index: int  # 1-based, as in the lecture
    linear: Linear
    norm: BatchNorm | LayerNorm | None
    activation: Activation

    @property
    def layers(self):
        return [layer for layer in (self.linear, self.norm, self.activation) if layer is not None]


class MLP:
    """A deep MLP with hand-written backprop. All arrays in ``dtype`` (float64 or float32).

    Parameters are named ``layer{l}.weight``, ``layer{l}.bias``, ``layer{l}.norm.gamma``,
    ``layer{l}.norm.beta`` and ``output.weight``/``output.bias``; ``params`` and ``grads`` map
    those names to the live arrays (write into ``params[name][...]`` to set a parameter, or
    use ``load_params``). BatchNorm running statistics are in ``buffers``.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        depth: int,
        width: int,
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
    ):
        if depth < 1 or width < 1 or input_dim < 1 or output_dim < 1:
            raise EngineError(
                f"MLP needs depth, width, input_dim and output_dim >= 1, got "
                f"{depth}, {width}, {input_dim}, {output_dim}"
            )
        if norm not in NORMS:
            raise EngineError(f"norm: {norm!r} is not one of {', '.join(NORMS)}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float64, np.float32):
            raise EngineError(f"dtype: {dtype!r} is not one of float64, float32")
        rng = np.random.default_rng() if rng is None else rng
        self.depth, self.width = depth, width
        self.input_dim, self.output_dim = input_dim, output_dim
        self.activation_name, self.norm_name = activation, norm

        def linear(fan_in, fan_out):
            weight = init_weight(init, rng, fan_in, fan_out, weight_scale)
            return Linear(weight, init_bias(rng, fan_out, bias_scale), self.dtype)

        self.blocks: list[HiddenBlock] = []
        fan_in = input_dim
        for index in range(1, depth + 1):
            norm_layer = None
            if norm == "batch":
                norm_layer = BatchNorm(width, bn_momentum, bn_eps, self.dtype)
            elif norm == "layer":
                norm_layer = LayerNorm(width, ln_eps, self.dtype)
            block = HiddenBlock(
                index,
                linear(fan_in, width),
                norm_layer,
                make_activation(activation, self.dtype, leaky_slope=leaky_slope),
            )
            self.blocks.append(block)
            fan_in = width
        self.output = linear(width, output_dim)
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
        self._centred: dict[tuple, np.ndarray] = {}  # float64 scratch for layer_stats
        self._ones: dict[int, np.ndarray] = {}  # for sums as dot products
        self._forward_record: dict[str, np.ndarray] | None = None
        self._delta_norms: np.ndarray | None = None
        self.grad_norms: dict[str, float] | None = None  # from the last backward(record=True)
        owners = []
        for block in self.blocks:
            owners.append((f"layer{block.index}", block.linear))
            if block.norm is not None:
                owners.append((f"layer{block.index}.norm", block.norm))
        owners.append(("output", self.output))
        self._grad_names: dict = {}  # layer -> {gradient key: full parameter name}
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
        self._grad_names[layer] = {key: f"{prefix}.{key}" for key in layer.grads}
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

    def forward(self, x: np.ndarray, train: bool = True, record: bool = False) -> np.ndarray:
        """Outputs (B, output_dim) for inputs (B, input_dim); caches what backward needs.

        ``train`` selects BatchNorm's batch statistics (True) or running statistics (False).
        With ``record``, each hidden layer's ||W_l|| and activation mean, std and saturation
        are measured right after the layer runs, while its arrays are still in cache, and
        kept for ``layer_stats`` (a forward without ``record`` drops them).
        Returns a fresh array (the layers' own buffers are reused by the next call).
        """
        x = self._as_input(x)  # B, input_dim
        self._forward_record = None
        if not record:
            for layer in self.layers:
                x = layer.forward(x, train)
            return x.copy()
        recorded = []  # per layer: _FORWARD_STATS
        forward_stats = self._forward_stats
        for block, layers in zip(self.blocks, self._block_layers, strict=True):
            for layer in layers:
                x = layer.forward(x, train)  # B, width
            recorded.append(forward_stats(block))
        x = self.output.forward(x, train)  # B, output_dim
        self._forward_record = _by_stat(recorded)
        return x.copy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Outputs (B, output_dim) in eval mode, bit for bit ``forward(x, train=False)``, in
        memory independent of depth: the hidden layers alternate between two (B, width)
        arrays and no layer keeps anything (``forward`` leaves caches for backward in every
        layer). Nothing the last ``forward``/``backward`` left is changed."""
        x = self._as_input(x)  # B, input_dim
        out, spare = np.empty((2, x.shape[0], self.width), dtype=self.dtype)  # B, width each
        for layers in self._block_layers:
            linear, *elementwise = layers
            linear.predict(x, out)
            for layer in elementwise:  # in place; spare is free (x is used up, or the input)
                layer.predict(out, spare)
            x, out, spare = out, spare, out  # the next Linear writes into the other array
        return self.output.predict(x, np.empty((x.shape[0], self.output_dim), dtype=self.dtype))

    def _forward_stats(self, block: HiddenBlock) -> tuple[float, float, float, float]:
        """A hidden layer's ``_FORWARD_STATS`` from its weights and last activation output."""
        weight_norm = l2_norm(block.linear.params["weight"])
        output = block.activation.output
        if output is None:
            return weight_norm, math.nan, math.nan, math.nan
        return weight_norm, *self._mean_std(output), block.activation.saturation()

    def backward(
        self,
        grad_output: np.ndarray,
        input_grad: bool = False,
        record: bool = False,
        record_deltas: bool = True,
    ) -> np.ndarray | None:
        """Backpropagate dL/doutputs (B, output_dim); overwrites ``grads`` and the deltas.

        With ``record``, the norm of every gradient (``grad_norms``, by parameter name) and,
        unless ``record_deltas`` is False, of every delta is taken as soon as it is computed
        (cheaper than re-reading them later) and kept for ``layer_stats``. Returns dL/dx
        (B, input_dim) when ``input_grad`` is set, else None (saves a matmul).
        """
        grad = np.asarray(grad_output, dtype=self.dtype)
        self.blocks[0].linear.needs_input_grad = input_grad
        self.grad_norms, self._delta_norms = None, None
        if not record:
            for layer in reversed(self.layers):
                grad = layer.backward(grad)
            return None if grad is None else grad.copy()
        grad_norms = {}
        delta_norms = np.full(self.depth, np.nan) if record_deltas else None
        grad = self.output.backward(grad)
        _record_norms(grad_norms, self._grad_names[self.output], self.output)
        for i in reversed(range(self.depth)):
            block = self.blocks[i]
            grad = block.activation.backward(grad)
            if block.norm is not None:
                grad = block.norm.backward(grad)
                _record_norms(grad_norms, self._grad_names[block.norm], block.norm)
            grad = block.linear.backward(grad)
            _record_norms(grad_norms, self._grad_names[block.linear], block.linear)
            if delta_norms is not None:
                delta_norms[i] = l2_norm(block.linear.delta)
        self.grad_norms = {name: grad_norms[name] for name in self.grads}  # in ``grads`` order
        self._delta_norms = delta_norms
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

    def layer_stats(self, updates: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Per-hidden-layer statistics from the last forward/backward, float64 arrays (depth,).

        weight_grad_norm, bias_grad_norm, delta_norm, weight_norm: Frobenius norms (robust to
        underflow); act_mean, act_std: of the activation output over the batch and units;
        saturation: see each activation's ``saturation``; update_ratio: ||update|| / ||W||
        of the last optimizer step (``updates``, nan without it). What the last forward and
        backward recorded (``record=True``) is used as is; the rest is computed here.
        """
        stats = {name: np.full(self.depth, np.nan) for name in STAT_NAMES}
        forward = self._forward_record
        if forward is None:  # not recorded: measure now, from the same arrays
            forward = _by_stat([self._forward_stats(block) for block in self.blocks])
        for name, values in forward.items():
            stats[name][:] = values
        grad_norms = self.grad_norms
        for key in ("weight", "bias"):
            names = self._hidden_names[key]
            if grad_norms is not None:  # recorded by backward: all of them, by name
                stats[f"{key}_grad_norm"][:] = [grad_norms[name] for name in names]
            else:
                stats[f"{key}_grad_norm"][:] = [l2_norm(self.grads[name]) for name in names]
        if self._delta_norms is not None:
            stats["delta_norm"][:] = self._delta_norms
        else:
            for i, block in enumerate(self.blocks):
                if block.linear.delta is not None:
                    stats["delta_norm"][i] = l2_norm(block.linear.delta)
        if updates is not None:
            stats["update_ratio"] = self.update_ratios(updates, stats["weight_norm"])
        return stats

    def _mean_std(self, values: np.ndarray) -> tuple[float, float]:
        """Mean and (biased) std of all entries, accumulated in float64.

        float64 input: sum and sum of squares as two BLAS dot products, var = E[x^2] - mean^2,
        unless that cancels (var < 1e-6 E[x^2], e.g. a saturated layer): then, as for float32
        input, the centred two-pass formula in a reused float64 buffer."""
        size = values.size
        if values.dtype == np.float64 and values.flags.c_contiguous:
            ones = self._ones.get(size)
            if ones is None:
                ones = self._ones[size] = np.ones(size)
            mean = float(np.vdot(values, ones)) / size  # vdot reads both as flat vectors
            mean_square = float(np.vdot(values, values)) / size
            variance = mean_square - mean * mean
            if variance >= 1e-6 * mean_square:
                return mean, math.sqrt(variance)
        centred = self._centred.get(values.shape)
        if centred is None:
            centred = self._centred[values.shape] = np.empty(values.shape, dtype=np.float64)
        mean = float(np.add.reduce(values, axis=None, dtype=np.float64)) / size
        np.subtract(values, mean, out=centred, dtype=np.float64)
        return mean, math.sqrt(float(np.vdot(centred, centred)) / size)

    def update_ratios(
        self,
        updates: dict[str, np.ndarray],
        weight_norms: np.ndarray | None = None,
        update_norms: dict[str, float] | None = None,
    ) -> np.ndarray:
        """||update of W_l|| / ||W_l|| per hidden layer (nan where no update is known).

        ``weight_norms`` are the ||W_l|| the update was applied to (e.g. ``layer_stats``'s
        ``weight_norm``, measured before the step); without them the current weights.
        ``update_norms`` (by parameter name, e.g. ``Optimizer.update_norms``) are used
        instead of measuring ``updates`` where they are given."""
        ratios = np.full(self.depth, np.nan)
        update_norms = update_norms or {}
        for i, (block, name) in enumerate(
            zip(self.blocks, self._hidden_names["weight"], strict=True)
        ):
            update_norm = update_norms.get(name)
            if update_norm is None:
                update = updates.get(name)
                if update is None:
                    continue
                update_norm = l2_norm(update)
            if weight_norms is None or math.isnan(weight_norms[i]):
                weight_norm = l2_norm(block.linear.params["weight"])
            else:
                weight_norm = float(weight_norms[i])
            ratios[i] = _ratio(update_norm, weight_norm)
        return ratios

    def locate_nonfinite(self) -> dict | None:
        """Where the last step first produced inf/nan, or None if it did not.

        The forward pass is scanned from the input (where a non-finite value is born and
        then carried to the output); the backward pass from the output side, the direction
        gradients flow. Returns {"pass", "layer", "quantity"}; layer is 1..depth or "output".
        """
        for block in self.blocks:
            for quantity, layer in (("pre-activation", block.linear), ("normalized", block.norm)):
                if layer is not None and not _finite(layer.output):
                    return {"pass": "forward", "layer": block.index, "quantity": quantity}
            output = block.activation.output
            if output is not None and not _finite(output):
                return {"pass": "forward", "layer": block.index, "quantity": "activation"}
        if not _finite(self.output.output):
            return {"pass": "forward", "layer": "output", "quantity": "output"}
        for name in ("weight", "bias"):
            if not _finite(self.output.grads[name]):
                return {"pass": "backward", "layer": "output", "quantity": f"{name} gradient"}
        for block in reversed(self.blocks):
            if block.linear.delta is not None and not _finite(block.linear.delta):
                return {"pass": "backward", "layer": block.index, "quantity": "delta"}
            for key, value in block.linear.grads.items():
                if not _finite(value):
                    return {"pass": "backward", "layer": block.index, "quantity": f"{key} gradient"}
            if block.norm is not None:
                for key, value in block.norm.grads.items():
                    if not _finite(value):
                        quantity = f"norm {key} gradient"
                        return {"pass": "backward", "layer": block.index, "quantity": quantity}
        return None


def memory_footprint(
    input_dim: int,
    output_dim: int,
    depth: int,
    width: int,
    activation: str = "sigmoid",
    norm: str = "none",
    dtype="float64",
    batch: int = 64,
    eval_batch: int = 0,
    parameter_copies: int = 2,
) -> dict[str, int]:
    """Bytes an ``MLP`` of this shape holds, by part, without building it.

    parameters: ``parameter_copies`` arrays of every parameter (2: values and gradients; an
    optimizer adds its state). activations: the (batch, features) arrays a training step
    with per-layer statistics leaves in the layers (each layer's ``train_arrays`` and
    ``train_masks``, and the Linear layers' dL/dx, one array shared by all where it can
    be); statistics: the model's two float64 (batch * width) scratch arrays for them;
    predict: ``predict``'s two (eval_batch, width) arrays and its output.
    """
    itemsize = np.dtype(dtype).itemsize
    norm_class = {"none": None, "batch": BatchNorm, "layer": LayerNorm}[norm]
    activation_class = ACTIVATIONS[activation]
    shared = _shares_input_grads(activation, norm)
    per_sample = (width + output_dim) * itemsize  # the output layer: dL/dx and h
    for index in range(1, depth + 1):
        per_sample += Linear.train_arrays * width * itemsize
        if index > 1 and not shared:  # dL/dx of layer 1 is not computed
            per_sample += width * itemsize
        if norm_class is not None:
            per_sample += norm_class.train_arrays * width * itemsize
        per_sample += activation_class.train_arrays * width * itemsize
        per_sample += activation_class.train_masks * width
    parameter_count = input_dim * width + (depth - 1) * width * width + width * output_dim
    parameter_count += depth * width + output_dim  # biases
    if norm_class is not None:
        parameter_count += 2 * depth * width  # gamma, beta
    return {
        "parameters": parameter_copies * parameter_count * itemsize,
        "activations": batch * per_sample,
        "statistics": batch * 2 * width * 8,  # ``_mean_std``'s ones and centred values
        "predict": eval_batch * (2 * width + output_dim) * itemsize,
    }


def _shares_input_grads(activation: str, norm: str) -> bool:
    """Whether all Linear layers can write dL/dx into one array: each is read once, by the
    layer below, which writes its result elsewhere; not so for an identity activation with
    no norm, which passes it on to the next Linear as is."""
    return activation != "linear" or norm != "none"


def _record_norms(norms: dict, names: dict, layer) -> None:
    """norms[full name] = ||grad|| for each of ``layer``'s gradients (``names``: key -> name)."""
    for key, value in layer.grads.items():
        norms[names[key]] = l2_norm(value)


def _by_stat(per_layer: list[tuple]) -> dict[str, np.ndarray]:
    """``_forward_stats`` tuples, one per layer, as {stat name: array over the layers}."""
    columns = zip(*per_layer, strict=True)
    return {name: np.array(column) for name, column in zip(_FORWARD_STATS, columns, strict=True)}


def _finite(array: np.ndarray) -> bool:
    return bool(np.isfinite(array).all())


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with x/0 = inf and 0/0 = nan instead of an exception."""
    if denominator == 0.0:
        return math.nan if numerator == 0.0 else math.inf
    return numerator / denominator
