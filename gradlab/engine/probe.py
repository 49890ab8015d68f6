"""The probe: per-layer statistics of a training step, taken while each block's arrays are hot.

The model computes; the probe measures. ``MLP.forward(x, probe=probe)`` calls
``probe.forward(block)`` right after each hidden block has run; ``MLP.backward(g,
probe=probe)`` calls ``probe.output_backward(layer)`` after the output layer and
``probe.backward(block)`` after each hidden block. Each statistic is read once, from arrays
still in cache: measured after the whole pass, the 50 layers of a deep model would each come
back from memory.

Every probed backward measures the norm of every gradient (``grad_norms``, in the order of
``model.grads``): clipping needs them at every step. After ``start(layer_stats=True)`` the
probe also takes the per-layer statistics of ``STATISTICS``, the columns of layers.csv,
each at its moment:

- "forward": right after the block's forward pass (the parameters the step starts from);
- "backward": right after the block's backward pass, before any clipping;
- "step": in ``after_step``, once the optimizer has updated the parameters.

``layer_stats()`` returns them. Adding a statistic is one entry in ``STATISTICS``.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gradlab.engine.norms import l2_norm
from gradlab.errors import EngineError


@dataclass(frozen=True)
class Statistic:
    """A per-layer statistic: its layers.csv column(s), when it is measured, and how."""

    names: tuple[str, ...]  # one column per value ``measure`` returns
    when: str  # "forward", "backward" or "step" (see the module docstring)
    measure: Callable  # (probe, block) -> float, or a tuple of floats for several names


def _update_ratio(probe: "Probe", block) -> float:
    """||update of W_l|| / ||W_l|| before the update (nan where the update is unknown)."""
    name = probe.weight_name(block)
    update_norm = probe.update_norms.get(name)
    if update_norm is None:
        update = probe.updates.get(name)
        if update is None:
            return math.nan
        update_norm = l2_norm(update)
    return _ratio(update_norm, probe.value("weight_norm", block))


# In layers.csv column order. Every norm is a Frobenius norm, robust to under- and overflow.
STATISTICS = (
    Statistic(  # ||dL/dW_l||, before clipping
        ("weight_grad_norm",), "backward", lambda probe, block: probe.grad_norm(block, "weight")
    ),
    Statistic(  # ||dL/db_l||, before clipping
        ("bias_grad_norm",), "backward", lambda probe, block: probe.grad_norm(block, "bias")
    ),
    Statistic(  # ||dL/dh_l||, h_l the Linear's output (before normalization); residual
        # networks: ||dL/dx^l||, the gradient on the stream after block l (``block.delta``)
        ("delta_norm",),
        "backward",
        lambda probe, block: l2_norm(block.delta),
    ),
    Statistic(  # ||W_l||, before the update
        ("weight_norm",), "forward", lambda probe, block: l2_norm(block.linear.params["weight"])
    ),
    Statistic(  # mean and std of the activation output over the batch and the units
        ("act_mean", "act_std"),
        "forward",
        lambda probe, block: probe.mean_std(block.activation.output),
    ),
    Statistic(  # the fraction of saturated units (each activation's ``saturation``)
        ("saturation",), "forward", lambda probe, block: block.activation.saturation()
    ),
    Statistic(("update_ratio",), "step", _update_ratio),  # ||update of W_l|| / ||W_l||
)
STAT_NAMES = tuple(name for statistic in STATISTICS for name in statistic.names)
# residual networks add one column: ||dL/dh^l||, the gradient at the branch's Linear output
RESIDUAL_STATISTICS = (
    *STATISTICS,
    Statistic(("branch_delta_norm",), "backward", lambda probe, block: l2_norm(block.linear.delta)),
)
RESIDUAL_STAT_NAMES = tuple(name for statistic in RESIDUAL_STATISTICS for name in statistic.names)
_MOMENTS = ("forward", "backward", "step")


class Probe:
    """Measures one ``MLP``'s per-layer statistics as its passes run (see the module).

    ``statistics``: what to measure, by default the layers.csv columns (``STATISTICS``, or
    ``RESIDUAL_STATISTICS`` for a residual network).
    ``grad_norms``: every gradient's norm from the last probed backward, in ``model.grads``
    order. ``updates`` and ``update_norms``: the last step's, as ``after_step`` received them.
    ``input_delta_norm``: a residual network's ||dL/dx^0|| (the stream right after its input
    Linear), taken with the layer statistics; nan otherwise.
    """

    def __init__(self, model, statistics: tuple[Statistic, ...] | None = None):
        if statistics is None:
            statistics = RESIDUAL_STATISTICS if model.residual else STATISTICS
        for statistic in statistics:
            if statistic.when not in _MOMENTS:
                raise EngineError(
                    f"statistic {statistic.names}: when={statistic.when!r} is not one of "
                    f"{', '.join(_MOMENTS)}"
                )
        self.statistics = statistics
        self.blocks = model.blocks
        self.output = model.output
        self.input_layer = model.input_layer
        self.depth = len(self.blocks)
        names = list(model.grads)
        # model.grads holds the layers' own gradient arrays: identity finds each one's slot
        slot_of = {id(grad): slot for slot, grad in enumerate(model.grads.values())}

        def slots(layer):
            return {key: slot_of[id(grad)] for key, grad in layer.grads.items()}

        self._slots = [slots(block.linear) for block in self.blocks]  # per block: key -> slot
        self._weight_names = [names[slot["weight"]] for slot in self._slots]
        self._block_grads = [  # per block: (slot, gradient) of its Linear, norm (and branch)
            [
                (slot_of[id(grad)], grad)
                for layer in block.param_layers
                for grad in layer.grads.values()
            ]
            for block in self.blocks
        ]
        self._output_grads = [(slot_of[id(grad)], grad) for grad in self.output.grads.values()]
        self._input_grads = []
        if model.input_layer is not None:
            grads = model.input_layer.grads.values()
            self._input_grads = [(slot_of[id(grad)], grad) for grad in grads]
        self.input_delta_norm = math.nan
        self._names = names
        # per statistic, in ``statistics`` order: its value at each layer (a float, or a tuple
        # of floats for a statistic of several columns); refilled by ``start``
        self._blank = [
            math.nan if len(s.names) == 1 else (math.nan,) * len(s.names) for s in self.statistics
        ]
        self._values = [[blank] * self.depth for blank in self._blank]
        self._at = {  # moment -> [(measure, values)]
            when: [
                (s.measure, values)
                for s, values in zip(self.statistics, self._values, strict=True)
                if s.when == when
            ]
            for when in _MOMENTS
        }
        self._column = {  # column name -> (values, position in a tuple or None)
            name: (values, None if len(s.names) == 1 else position)
            for s, values in zip(self.statistics, self._values, strict=True)
            for position, name in enumerate(s.names)
        }
        self._layer_stats = False
        self._ones: dict[int, np.ndarray] = {}  # for sums as dot products, by size
        self._centred: dict[tuple, np.ndarray] = {}  # float64 scratch for ``mean_std``
        self.grad_norms: list[float] = [math.nan] * len(names)
        self.updates: dict[str, np.ndarray] = {}
        self.update_norms: dict[str, float] = {}

    def start(self, layer_stats: bool) -> None:
        """Begin a step: forget the last one's values; take the per-layer statistics of this
        one only if ``layer_stats`` (the gradient norms are always taken)."""
        if layer_stats or self._layer_stats:  # (nothing to forget after an unlogged step)
            for values, blank in zip(self._values, self._blank, strict=True):
                values[:] = [blank] * self.depth
        self._layer_stats = layer_stats
        self.input_delta_norm = math.nan
        self.grad_norms = [math.nan] * len(self._names)
        self.updates, self.update_norms = {}, {}

    def forward(self, block) -> None:
        """Called by ``MLP.forward`` right after hidden ``block`` has run."""
        if self._layer_stats:
            i = block.index - 1
            for measure, values in self._at["forward"]:
                values[i] = measure(self, block)

    def output_backward(self, layer) -> None:
        """Called by ``MLP.backward`` right after the output layer's backward."""
        norms = self.grad_norms
        for slot, grad in self._output_grads:
            norms[slot] = l2_norm(grad)

    def backward(self, block) -> None:
        """Called by ``MLP.backward`` right after hidden ``block``'s backward."""
        norms = self.grad_norms
        for slot, grad in self._block_grads[block.index - 1]:
            norms[slot] = l2_norm(grad)
        if self._layer_stats:
            i = block.index - 1
            for measure, values in self._at["backward"]:
                values[i] = measure(self, block)

    def input_backward(self, layer) -> None:
        """Called by ``ResidualMLP.backward`` right after its input layer's backward."""
        norms = self.grad_norms
        for slot, grad in self._input_grads:
            norms[slot] = l2_norm(grad)
        if self._layer_stats:
            self.input_delta_norm = l2_norm(layer.delta)

    def after_step(self, optimizer, grad_norms) -> None:
        """The "step" statistics of the update ``optimizer`` just made from gradients of norms
        ``grad_norms`` (in ``model.grads`` order, after clipping): ``Optimizer.update_norms``
        gives ||update|| without reading the updates where it can."""
        if not self._layer_stats:
            return
        self.updates = optimizer.updates
        norms = dict(zip(self._names, grad_norms, strict=True))
        self.update_norms = optimizer.update_norms(norms) or {}
        for measure, values in self._at["step"]:
            for i, block in enumerate(self.blocks):
                values[i] = measure(self, block)

    def layer_stats(self) -> dict[str, np.ndarray]:
        """This step's statistics: {name: float64 array (depth,)} in column order, nan
        where not measured. Fresh arrays: they stay valid after the next step."""
        stats = {}
        for statistic, values in zip(self.statistics, self._values, strict=True):
            if len(statistic.names) == 1:
                stats[statistic.names[0]] = np.array(values, dtype=np.float64)
                continue
            for name, column in zip(statistic.names, zip(*values, strict=True), strict=True):
                stats[name] = np.array(column, dtype=np.float64)
        return stats

    # --- what the measures read ----------------------------------------------------------

    def grad_norm(self, block, key: str) -> float:
        """The norm of ``block``'s Linear gradient ``key`` from this backward."""
        return self.grad_norms[self._slots[block.index - 1][key]]

    def value(self, name: str, block) -> float:
        """This step's value of the column ``name`` at ``block`` (nan if not measured yet)."""
        values, position = self._column[name]
        value = values[block.index - 1]
        return value if position is None else value[position]

    def weight_name(self, block) -> str:
        """The parameter name of ``block``'s weight (``layer{l}.weight``)."""
        return self._weight_names[block.index - 1]

    def mean_std(self, values: np.ndarray | None) -> tuple[float, float]:
        """Mean and (biased) std of all entries, accumulated in float64 (nan, nan for None).

        float64 input: sum and sum of squares as two BLAS dot products, var = E[x^2] - mean^2,
        unless that cancels (var < 1e-6 E[x^2], e.g. a saturated layer): then, as for float32
        input, the centred two-pass formula in a reused float64 buffer."""
        if values is None:
            return math.nan, math.nan
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

    # --- divergence ----------------------------------------------------------------------

    def locate_nonfinite(self) -> dict | None:
        """Where the last step first produced inf/nan, or None if it did not.

        The forward pass is scanned from the input (where a non-finite value is born and
        then carried to the output); the backward pass from the output side, the direction
        gradients flow. Returns {"pass", "layer", "quantity"}; layer is 1..depth, "output" or
        (residual networks) "input".
        """
        input_layer = self.input_layer
        if input_layer is not None and not _finite(input_layer.output):
            return {"pass": "forward", "layer": "input", "quantity": "stream"}
        for block in self.blocks:
            for quantity, layer in (("pre-activation", block.linear), ("normalized", block.norm)):
                if layer is not None and not _finite(layer.output):
                    return {"pass": "forward", "layer": block.index, "quantity": quantity}
            output = block.activation.output
            if output is not None and not _finite(output):
                return {"pass": "forward", "layer": block.index, "quantity": "activation"}
            stream = getattr(block, "output", None)  # a residual block's x^l
            if stream is not None and not _finite(stream):
                return {"pass": "forward", "layer": block.index, "quantity": "stream"}
        if not _finite(self.output.output):
            return {"pass": "forward", "layer": "output", "quantity": "output"}
        for name in ("weight", "bias"):
            if not _finite(self.output.grads[name]):
                return {"pass": "backward", "layer": "output", "quantity": f"{name} gradient"}
        for block in reversed(self.blocks):
            if block.delta is not None and not _finite(block.delta):
                return {"pass": "backward", "layer": block.index, "quantity": "delta"}
            if block.linear.delta is not None and not _finite(block.linear.delta):
                return {"pass": "backward", "layer": block.index, "quantity": "branch delta"}
            for prefix, layer in (
                ("", block.linear),
                ("norm ", block.norm),
                ("branch ", getattr(block, "branch", None)),
            ):
                if layer is None:
                    continue
                for key, value in layer.grads.items():
                    if not _finite(value):
                        quantity = f"{prefix}{key} gradient"
                        return {"pass": "backward", "layer": block.index, "quantity": quantity}
        if input_layer is not None:
            for key, value in input_layer.grads.items():
                if not _finite(value):
                    return {"pass": "backward", "layer": "input", "quantity": f"{key} gradient"}
        return None


def _finite(array: np.ndarray) -> bool:
    return bool(np.isfinite(array).all())


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with x/0 = inf and 0/0 = nan instead of an exception."""
    if denominator == 0.0:
        return math.nan if numerator == 0.0 else math.inf
    return numerator / denominator
