"""Optimizers over a dict of named parameters; state keyed by parameter name.

``step(params, grads)`` updates the parameters in place, p <- p - update, and keeps the
last ``updates`` (same names) so the runner can log ||update|| / ||W||. Conventions follow
PyTorch: weight decay is L2 added to the gradient (g + wd p); momentum keeps
buf <- mu buf + g (no dampening) and steps along buf, Nesterov along g + mu buf; Adam uses
bias-corrected moments and eps outside the square root.
"""

from collections.abc import Mapping
from operator import is_
from typing import NamedTuple

import numpy as np

from gradlab import vocabulary
from gradlab.errors import EngineError

OPTIMIZERS = vocabulary.OPTIMIZERS  # each built in ``make_optimizer``


class Optimizer:
    counters: tuple[str, ...] = ()  # integer attributes that are state (Adam's step count)

    def __init__(self, lr: float, weight_decay: float = 0.0):
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.updates: dict[str, np.ndarray] = {}
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def _update(self, name, grad, update):
        """Write the step for one parameter, lr included, into ``update``."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything the next steps depend on besides lr (which a run sets every step), as
        arrays: '<parameter>/<key>' for the per-parameter state (momentum buffer, Adam's
        moments) and each counter by name. Copies, for a checkpoint."""
        arrays = {
            f"{name}/{key}": value.copy()
            for name, state in self.state.items()
            for key, value in state.items()
        }
        arrays.update({counter: np.array(getattr(self, counter)) for counter in self.counters})
        return arrays

    def load_state_dict(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what ``state_dict`` gave (the optimizer's own state is replaced)."""
        self.state = {}
        for key, value in arrays.items():
            if key in self.counters:
                setattr(self, key, int(value))
                continue
            name, _, item = key.rpartition("/")
            self.state.setdefault(name, {})[item] = np.array(value)

    def update_norms(self, grad_norms: Mapping[str, float]) -> dict[str, float] | None:
        """||update|| of the last step per parameter, from the norms of the gradients it used,
        where the update is a fixed multiple of the gradient; None where it is not (then
        measure ``updates``)."""
        return None

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """The per-parameter loop: p <- p - update."""
        for name, param in params.items():
            grad = grads[name]
            update = self.updates.get(name)
            if update is None:
                update = self.updates[name] = np.empty_like(param)
            if self.weight_decay:
                decayed = self._state(name, "decayed_grad", param)
                np.multiply(param, self.weight_decay, out=decayed)
                decayed += grad
                grad = decayed
            self._update(name, grad, update)
            param -= update

    def _state(self, name, key, like):
        """A per-parameter state array, created as zeros on first use."""
        state = self.state.setdefault(name, {})
        if key not in state:
            state[key] = np.zeros_like(like)
        return state[key]


class _Flat(NamedTuple):
    """Parameters and gradients that tile one contiguous span each, in the same layout."""

    names: list
    params: tuple
    grads: tuple
    flat_param: np.ndarray
    flat_grad: np.ndarray
    flat_update: np.ndarray


def _root(array: np.ndarray) -> np.ndarray:
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _flat_layout(params: dict, grads: dict) -> _Flat | None:
    """A ``_Flat`` when the parameters are views that exactly tile a contiguous span of one
    array, and their gradients the same span of another (as ``MLP`` lays them out), else None.
    Then an elementwise step over the spans is, element by element, the per-name step."""
    names = list(params)
    if not names or any(name not in grads for name in names):
        return None
    param_list = [params[name] for name in names]
    grad_list = [grads[name] for name in names]
    dtype = param_list[0].dtype
    roots = []
    for arrays in (param_list, grad_list):
        root = _root(arrays[0])
        if root.dtype != dtype or not root.flags.c_contiguous:
            return None
        roots.append(root)
    param_root, grad_root = roots
    if np.shares_memory(param_root, grad_root):
        return None
    base_p, base_g = param_root.ctypes.data, grad_root.ctypes.data
    segments = []
    for p, g in zip(param_list, grad_list, strict=True):
        if not (
            isinstance(p, np.ndarray)
            and isinstance(g, np.ndarray)
            and p.dtype == dtype == g.dtype
            and p.shape == g.shape
            and p.flags.c_contiguous
            and g.flags.c_contiguous
            and p.flags.writeable
            and _root(p) is param_root
            and _root(g) is grad_root
        ):
            return None
        offset_p, offset_g = p.ctypes.data - base_p, g.ctypes.data - base_g
        if offset_p != offset_g or offset_p % dtype.itemsize:
            return None
        segments.append((offset_p // dtype.itemsize, p.size))
    start = segments[0][0]
    position = start
    for offset, size in segments:  # consecutive, no gap and no overlap
        if offset != position:
            return None
        position += size
    flat_param = param_root.reshape(-1)[start:position]
    flat_grad = grad_root.reshape(-1)[start:position]
    return _Flat(
        names,
        tuple(param_list),
        tuple(grad_list),
        flat_param,
        flat_grad,
        np.empty_like(flat_param),
    )


class SGD(Optimizer):
    """Plain SGD (momentum 0), heavy-ball momentum, or Nesterov momentum."""

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self._flat: _Flat | None = None

    def step(self, params, grads):
        if self.momentum or self.weight_decay:
            super().step(params, grads)
            return
        # Plain SGD is elementwise: when the parameters (and gradients) are views that tile
        # one array, as in ``MLP``, one multiply and one subtract update the whole model,
        # with the same result as the per-name loop. ``updates`` are views of the step.
        flat = self._flat
        if flat is None or not _same_layout(flat, params, grads):
            flat = self._flat = _flat_layout(params, grads)
            if flat is None:
                super().step(params, grads)
                return
            update = flat.flat_update
            offset = 0
            for name, param in zip(flat.names, flat.params, strict=True):
                self.updates[name] = update[offset : offset + param.size].reshape(param.shape)
                offset += param.size
        np.multiply(flat.flat_grad, self.lr, out=flat.flat_update)
        np.subtract(flat.flat_param, flat.flat_update, out=flat.flat_param)

    def update_norms(self, grad_norms):
        """Plain SGD steps by lr * g: ||update|| = lr ||g|| (to rounding of the product),
        without reading the updates back from memory."""
        if self.momentum or self.weight_decay:
            return None
        lr = self.lr
        return {name: lr * norm for name, norm in grad_norms.items()}

    def _update(self, name, grad, update):
        if not self.momentum:
            np.multiply(grad, self.lr, out=update)
            return
        buf = self._state(name, "momentum_buffer", grad)
        buf *= self.momentum
        buf += grad
        if self.nesterov:  # step along g + mu * buf
            np.multiply(buf, self.momentum, out=update)
            update += grad
            update *= self.lr
        else:
            np.multiply(buf, self.lr, out=update)


def _same_layout(flat: _Flat, params: dict, grads: dict) -> bool:
    """Whether ``params``/``grads`` still hold exactly the arrays ``flat`` was built from."""
    if len(params) != len(flat.names) or len(grads) < len(flat.names):
        return False
    get = grads.get
    return (
        all(map(is_, params.values(), flat.params))
        and list(params) == flat.names
        and all(get(name) is grad for name, grad in zip(flat.names, flat.grads, strict=True))
    )


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's defaults betas (0.9, 0.999), eps 1e-8."""

    counters = ("steps",)

    def __init__(self, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2 = betas
        self.eps = float(eps)
        self.steps = 0

    def step(self, params, grads):
        self.steps += 1
        super().step(params, grads)

    def _update(self, name, grad, update):
        exp_avg = self._state(name, "exp_avg", grad)
        exp_avg_sq = self._state(name, "exp_avg_sq", grad)
        exp_avg *= self.beta1
        exp_avg += (1.0 - self.beta1) * grad
        exp_avg_sq *= self.beta2
        exp_avg_sq += (1.0 - self.beta2) * np.square(grad)
        bias1 = 1.0 - self.beta1**self.steps
        bias2 = 1.0 - self.beta2**self.steps
        # update = lr * m_hat / (sqrt(v_hat) + eps)
        np.sqrt(exp_avg_sq, out=update)
        update /= np.sqrt(bias2)
        update += self.eps
        np.divide(exp_avg, update, out=update)
        update *= self.lr / bias1


def make_optimizer(name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
    """An optimizer by config name: sgd | momentum | nesterov | adam."""
    if name == "sgd":
        return SGD(lr, weight_decay=weight_decay)
    if name == "momentum":
        return SGD(lr, momentum=momentum, weight_decay=weight_decay)
    if name == "nesterov":
        return SGD(lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    if name == "adam":
        return Adam(lr, weight_decay=weight_decay)
    raise EngineError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
