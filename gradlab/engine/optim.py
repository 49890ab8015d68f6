"""Optimizers over a dict of named parameters; state keyed by parameter name.

``step(params, grads)`` updates the parameters in place, p <- p - update, and keeps the
last ``updates`` (same names) so the runner can log ||update|| / ||W||. Conventions follow
PyTorch: weight decay is L2 added to the gradient (g + wd p); momentum keeps
buf <- mu buf + g (no dampening) and steps along buf, Nesterov along g + mu buf; Adam uses
bias-corrected moments and eps outside the square root.
"""

import numpy as np

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


class Optimizer:
    def __init__(self, lr: float, weight_decay: float = 0.0):
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.updates: dict[str, np.ndarray] = {}
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def _update(self, name, grad, update):
        """Write the step for one parameter, lr included, into ``update``."""
        raise NotImplementedError

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
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


class SGD(Optimizer):
    """Plain SGD (momentum 0), heavy-ball momentum, or Nesterov momentum."""

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

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


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's defaults betas (0.9, 0.999), eps 1e-8."""

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
    raise ValueError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
