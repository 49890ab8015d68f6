"""Layers with hand-written backward passes.

Every layer has ``forward(x, train)`` and ``backward(grad_out)``, learnable ``params`` and the
matching ``grads`` (same keys, same shapes), and keeps everything else (caches, running
statistics in ``buffers``) apart from the learnable parameters. Shapes are (batch, features).

Performance contract: outputs and input gradients are written into buffers the layer owns
and reuses (one per distinct shape), so a training step allocates almost nothing. The array
a layer returns is therefore valid until that layer's next ``forward``/``backward``: copy it
to keep it. ``backward`` never modifies its argument, and overwrites ``grads`` (no
accumulation, nothing to zero).

Inference: ``predict`` computes what ``forward(x, train=False)`` returns, bit for bit, but
into arrays the caller owns (in place where it can) and keeps nothing, so evaluating a large
set with a deep model costs no per-layer memory. Each class declares in ``train_arrays``
(and ``train_masks``, bool) how many (batch, features) arrays a training step leaves in its
buffers, for memory estimates.
"""

import math

import numpy as np

_add_reduce = np.add.reduce
_max = np.fmax.reduce  # nan-ignoring: an inf next to a nan is still seen


class Layer:
    """Base class: parameter/gradient dicts and reusable output buffers."""

    train_arrays = 0  # (batch, features) arrays a training step keeps, in ``dtype``
    train_masks = 0  # and in bool (saturation counts, ReLU's sign)

    def __init__(self, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self._scratch: dict[tuple, np.ndarray] = {}
        self.output: np.ndarray | None = None  # the last forward's result (a buffer)

    def _buffer(self, name: str, shape: tuple, dtype=None) -> np.ndarray:
        """A preallocated array for ``name`` at this shape (reused across steps)."""
        key = (name, shape)
        array = self._scratch.get(key)
        if array is None:
            array = np.empty(shape, dtype=self.dtype if dtype is None else dtype)
            self._scratch[key] = array
        return array

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = np.ascontiguousarray(value, dtype=self.dtype)
        self.grads[name] = np.zeros_like(self.params[name])

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, x: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        """``forward(x, train=False)``, bit for bit, computed in place in ``x`` (returned) with
        ``scratch`` (an array of x's shape and dtype) as workspace; no state is kept."""
        raise NotImplementedError


class Linear(Layer):
    """Affine map h = x W + b.

    Shapes: x (B, fan_in), W (fan_in, fan_out), b (fan_out,), h (B, fan_out). Backward gives
    dL/dW = x^T g, dL/db = sum_batch g and dL/dx = g W^T, where g = dL/dh is kept as
    ``delta`` (the per-layer quantity whose norm gradlab tracks). With ``needs_input_grad``
    False (the first layer) dL/dx is not computed and backward returns None. With a
    ``workspace`` dict, dL/dx goes into an array shared with every Linear given the same dict
    (valid until any of them runs backward again), else into the layer's own.
    """

    train_arrays = 1  # h (for ``output`` and ``Probe.locate_nonfinite``); dL/dx: see workspace

    def __init__(self, weight: np.ndarray, bias: np.ndarray, dtype=np.float64):
        super().__init__(dtype)
        self._add_param("weight", weight)
        self._add_param("bias", bias)
        self.needs_input_grad = True
        self.workspace: dict[tuple, np.ndarray] | None = None  # shared dL/dx arrays, by shape
        self.delta: np.ndarray | None = None
        self._input: np.ndarray | None = None
        # the buffers of the last batch size, so the hot path needs no dict lookup
        self._out: np.ndarray | None = None
        self._grad_in: np.ndarray | None = None
        self._ones_vector: np.ndarray | None = None

    def _ones(self, batch: int) -> np.ndarray:
        ones = self._ones_vector
        if ones is None or ones.shape[0] != batch:
            ones = self._ones_vector = self._buffer("ones", (batch,))
            ones.fill(1.0)
        return ones

    def _input_grad_buffer(self, shape):
        """The array for dL/dx: the layer's own, or the one shared through ``workspace``."""
        if self.workspace is None:
            return self._buffer("grad_in", shape)
        array = self.workspace.get(shape)
        if array is None:
            array = self.workspace[shape] = np.empty(shape, dtype=self.dtype)
        return array

    @property
    def fan_in(self) -> int:
        return self.params["weight"].shape[0]

    @property
    def fan_out(self) -> int:
        return self.params["weight"].shape[1]

    def forward(self, x, train=True):
        self._input = x
        out = self._out
        if out is None or out.shape[0] != x.shape[0]:
            out = self._out = self._buffer("out", (x.shape[0], self.fan_out))
        self.output = self.predict(x, out)
        return out

    def predict(self, x, out):
        """h = x W + b written into ``out`` (B, fan_out), which must not overlap ``x``."""
        weight = self.params["weight"]
        np.matmul(x, weight, out=out)
        out += self.params["bias"]
        return out

    def backward(self, grad_out):
        self.delta = grad_out
        x = self._input
        grads = self.grads
        weight = self.params["weight"]
        np.matmul(x.T, grad_out, out=grads["weight"])
        if grad_out.dtype == self.dtype:
            # the column sums as ones @ g: one BLAS gemv, faster than np.sum(axis=0)
            np.dot(self._ones(grad_out.shape[0]), grad_out, out=grads["bias"])
        else:
            _add_reduce(grad_out, 0, None, grads["bias"])
        if not self.needs_input_grad:
            return None
        grad_in = self._grad_in
        if grad_in is None or grad_in.shape != x.shape:
            grad_in = self._grad_in = self._input_grad_buffer(x.shape)
        np.matmul(grad_out, weight.T, out=grad_in)
        return grad_in


class Activation(Layer):
    """An elementwise nonlinearity without parameters: one entry per activation (registered
    in ``gradlab.engine.activations``; see docs/extending.md).

    For the engine: ``forward``/``backward``/``predict`` and ``saturation``. For the theory
    (``gradlab.theory``): ``phi`` and ``derivative`` as float64 numpy functions (plain
    formulas, evaluated on quadrature nodes), closed forms in ``closed_moments`` where they
    exist, and the few facts below that the fixed-point search needs.
    """

    name = "activation"
    options: tuple[str, ...] = ()  # keyword arguments of __init__ besides dtype (config keys)
    kink = False  # phi' jumps at 0: the theory's quadrature splits there
    bounded = False  # |phi| <= 1: the fixed point q* lies below sigma_w^2 + sigma_b^2
    slope_limits = (0.0, 0.0)  # phi'(-inf), phi'(+inf): chi_1 / sigma_w^2 when q* is infinite
    # positively homogeneous phi (phi(c u) = c phi(u), c > 0): (E[phi]^2 / q, E[phi^2] / q,
    # E[phi'^2]), constants, so the length map is linear and everything has a closed form
    homogeneous: tuple[float, float, float] | None = None

    def saturation(self) -> float:
        """Fraction of saturated units in the last forward output (see subclasses)."""
        return 0.0

    def phi(self, u: np.ndarray) -> np.ndarray:
        """phi(u), float64 in and out (the theory's formula; the engine may compute faster)."""
        raise NotImplementedError

    def derivative(self, u: np.ndarray) -> np.ndarray:
        """phi'(u), float64 in and out."""
        raise NotImplementedError

    def closed_moments(self, q: float) -> tuple[float, float] | None:
        """(E[phi(u)^2], E[phi'(u)^2]) for u ~ N(0, q) in closed form, or None (quadrature)."""
        if self.homogeneous is None:
            return None
        _, second, derivative = self.homogeneous
        return q * second, derivative


class _ExpSaturating(Activation):
    """Shared numerics of sigmoid and tanh: e = exp(-k|z|), r = 1/(1 + e).

    With these, sigmoid(z) = r (z >= 0) or e r (z < 0), sigmoid'(z) = e r^2 for k = 1, and
    tanh'(z) = 4 e r^2 for k = 2. Nothing overflows (the exponent is never positive), and the
    derivative keeps full relative precision deep in saturation (sigmoid'(-700) ~ 1e-304),
    where s (1 - s) would round to exactly 0 and make vanishing gradients read 0. (Sigmoid
    needs this form only where exp(-z) overflows; see ``Sigmoid``.)
    """

    _exponent_scale = 1.0
    _derivative_scale = 1.0

    train_masks = 1  # saturation

    def __init__(self, dtype=np.float64):
        super().__init__(dtype)
        self._shape: tuple | None = None  # the shape of the buffers below
        self._e = self._r = self._out = self._grad_in = self._saturated = None

    def _buffers(self, shape):
        """(e, out, grad_in) for this shape: attributes for the last shape, else the dict."""
        if shape != self._shape:
            self._e, self._out = self._buffer("e", shape), self._buffer("out", shape)
            self._grad_in = self._buffer("grad_in", shape)
            self._shape = shape
        return self._e, self._out, self._grad_in

    def _r_buffer(self, shape):
        """The buffer for r = 1/(1 + e), made only where it is used (not by sigmoid's fast
        path)."""
        r = self._r
        if r is None or r.shape != shape:
            r = self._r = self._buffer("r", shape)
        return r

    def _exp_neg_abs(self, z, e):
        """e = exp(-k|z|), written into ``e``."""
        np.abs(z, out=e)
        e *= -self._exponent_scale
        np.exp(e, out=e)

    def _exp_terms(self, z):
        e, out, _ = self._buffers(z.shape)
        r = self._r_buffer(z.shape)
        self._exp_neg_abs(z, e)
        np.add(e, 1.0, out=r)
        np.divide(1.0, r, out=r)  # = np.reciprocal, bit for bit, and faster
        return e, r, out

    def saturation(self):
        """The fraction of saturated outputs (see the subclass), counted with one comparison
        instead of two on the output: tanh's e = exp(-2|z|) < 1/199, sigmoid's derivative
        < 0.0099 (both in the first buffer). Each is the output's condition except for a unit
        whose output rounds across the threshold (float32: 1 point of a 2-million-point grid
        in z)."""
        e, saturated = self._e, self._saturated
        if saturated is None or saturated.shape != e.shape:
            saturated = self._saturated = self._buffer("saturated", e.shape, dtype=bool)
        np.less(e, self._saturated_below, out=saturated)
        return np.count_nonzero(saturated) / e.size

    def backward(self, grad_out):
        e, _, grad_in = self._buffers(grad_out.shape)
        r = self._r_buffer(grad_out.shape)
        np.multiply(e, r, out=grad_in)
        grad_in *= r
        if self._derivative_scale != 1.0:
            grad_in *= self._derivative_scale
        grad_in *= grad_out
        return grad_in


class Sigmoid(_ExpSaturating):
    """sigma(z) = 1 / (1 + exp(-z)), stable for any z (no overflow warning at |z| = 1000).

    The fast path is that formula itself: u = exp(-z), sigma = 1 / (1 + u), and the
    derivative sigma'(z) = u sigma^2, taken as (u sigma) sigma, which neither under- nor
    overflows (u sigma = 1 - sigma <= 1). It keeps full relative precision on both sides
    (sigma(-80) ~ 1.8e-35, sigma'(700) ~ 1e-304). Only where exp(-z) overflows (z below
    about -709 in float64, -88 in float32, where sigma is subnormal or 0) or z = -inf does a
    forward fall back to the exp(-|z|) form of ``_ExpSaturating``, exact there too.

    Forward stores the derivative d = sigma'(z) (two passes): backward is then one multiply,
    and saturation one comparison on d.

    Saturation: the fraction of outputs below 0.01 or above 0.99, counted as
    sigma (1 - sigma) = d < 0.0099, the same condition (rounding aside: the two can
    disagree only for an output within a few ulps of 0.01 or 0.99).
    """

    name = "sigmoid"
    train_arrays = 3  # d, sigma, dL/dz

    def forward(self, x, train=True):
        d, out, _ = self._buffers(x.shape)
        r = self._sigmoid(x, d, out)
        if r is None:  # d = u
            d *= out  # u sigma = 1 - sigma
            d *= out
        else:  # d = e
            d *= r  # sigma' = e r^2
            d *= r
        self.output = out
        return out

    def predict(self, x, scratch):
        self._sigmoid(x, scratch, x, r=scratch)
        return x

    def _sigmoid(self, x, u, out, r=None):
        """out = sigma(x) (``out`` may be ``x``). Fast path: u = exp(-x), returns None. Where
        that overflows: u = e = exp(-|x|), returns r = 1/(1 + e), in ``r`` if given (it may be
        ``u``: then e is lost), else in the layer's buffer."""
        np.negative(x, out=u)
        with np.errstate(over="ignore"):  # an overflow is detected just below, never kept
            np.exp(u, out=u)  # u = exp(-z)
        if _max(u, axis=None, initial=0.0) == np.inf:  # overflow, or z = -inf (nan: no)
            self._exp_neg_abs(x, u)
            # sigma(z) = f r with f = 1 (z >= 0) or e (z < 0): 1 / (1 + e) resp. e / (1 + e).
            # f = max(e, [z >= 0]) since 0 <= e <= 1 (nan stays nan): exact, and much faster
            # than a masked copy.
            np.greater_equal(x, 0.0, out=out)
            np.maximum(u, out, out=out)
            r = self._r_buffer(x.shape) if r is None else r
            np.add(u, 1.0, out=r)
            np.divide(1.0, r, out=r)  # = np.reciprocal, bit for bit, and faster
            out *= r
            return r
        np.add(u, 1.0, out=out)
        np.divide(1.0, out, out=out)  # = np.reciprocal, bit for bit, and faster
        return None

    def backward(self, grad_out):
        d, _, grad_in = self._buffers(grad_out.shape)
        np.multiply(d, grad_out, out=grad_in)
        return grad_in

    _saturated_below = 0.0099  # sigma (1 - sigma) at sigma = 0.01 or 0.99
    bounded = True

    def phi(self, u):
        return 0.5 * (1.0 + np.tanh(0.5 * u))

    def derivative(self, u):
        t = np.tanh(0.5 * u)
        return 0.25 * (1.0 - t * t)


class Tanh(_ExpSaturating):
    """tanh(z); derivative 1 - tanh^2 computed as 4 e/(1+e)^2 with e = exp(-2|z|) (exact in
    saturation). Saturation: the fraction of outputs with |a| > 0.99."""

    name = "tanh"
    train_arrays = 4  # e, r, tanh, dL/dz
    _exponent_scale = 2.0
    _derivative_scale = 4.0

    def forward(self, x, train=True):
        _, _, out = self._exp_terms(x)  # e, r for backward (also after an eval forward)
        np.tanh(x, out=out)
        self.output = out
        return out

    def predict(self, x, scratch):
        np.tanh(x, out=x)
        return x

    _saturated_below = 1.0 / 199.0  # |tanh| > 0.99  <=>  exp(-2|z|) < 1/199
    bounded = True

    def phi(self, u):
        return np.tanh(u)

    def derivative(self, u):
        t = np.tanh(u)
        return 1.0 - t * t


class ReLU(Activation):
    """max(z, 0); derivative 1 where z > 0, else 0 (PyTorch's choice at 0).

    Saturation: the fraction of dead units, those whose output is 0 for every sample.
    """

    name = "relu"
    train_arrays = 2  # out, dL/dz
    train_masks = 1  # z > 0
    kink = True
    slope_limits = (0.0, 1.0)
    homogeneous = (1.0 / (2.0 * math.pi), 0.5, 0.5)  # E[relu(u)] = sqrt(q / (2 pi))

    def phi(self, u):
        return np.maximum(u, 0.0)

    def derivative(self, u):
        return (u > 0).astype(np.float64)

    def forward(self, x, train=True):
        out = self._buffer("out", x.shape)
        np.maximum(x, 0.0, out=out)
        self.output = out
        self._positive = self._buffer("positive", x.shape, dtype=bool)
        np.greater(x, 0.0, out=self._positive)
        return out

    def predict(self, x, scratch):
        np.maximum(x, 0.0, out=x)
        return x

    def backward(self, grad_out):
        grad_in = self._buffer("grad_in", grad_out.shape)
        np.multiply(grad_out, self._positive, out=grad_in)
        return grad_in

    def saturation(self):
        alive = np.any(self._positive, axis=0)
        return 1.0 - float(np.count_nonzero(alive)) / alive.size


class Identity(Activation):
    """The linear activation phi(z) = z. Nothing saturates."""

    name = "linear"
    slope_limits = (1.0, 1.0)
    homogeneous = (0.0, 1.0, 1.0)

    def phi(self, u):
        return u

    def derivative(self, u):
        return np.ones_like(u)

    def forward(self, x, train=True):
        self.output = x
        return x

    def predict(self, x, scratch):
        return x

    def backward(self, grad_out):
        return grad_out
