"""Random-direction gradient checks in float64 (after jax's ``check_vjp``).

For f: (x, params) -> y and a random tangent t and cotangent c, the hand-written backward
must satisfy <backward(c), t> = <c, J t>, where J t comes from a central difference
(f(p + eps t) - f(p - eps t)) / (2 eps): two forward passes per check, whatever the size.
With eps = 1e-6 the truncation error is ~eps^2 (relative) and the rounding error of the
difference is a few ulps of f divided by eps. The tolerance is exactly that sum:
RTOL * |derivative| + NOISE_ULPS * ulp(|f|) / eps. A gradient that is truly ~0 (a bias
followed by BatchNorm) is thus checked against the rounding noise, not against itself.
"""

import numpy as np

EPS = 1e-6
RTOL = 1e-7
NOISE_ULPS = 16


def _inner(a, b):
    return float(np.dot(np.ravel(a), np.ravel(b)))


def assert_close(analytic, numeric, value, eps, rtol, label):
    """|analytic - numeric| within truncation (rtol) plus rounding noise of f (value)."""
    noise = NOISE_ULPS * np.spacing(max(abs(value), np.finfo(float).tiny)) / eps
    tolerance = rtol * max(abs(analytic), abs(numeric)) + noise
    assert abs(analytic - numeric) <= tolerance, (
        f"{label}: analytic {analytic!r} numeric {numeric!r} (tolerance {tolerance:.3g})"
    )


def check_layer(layer, x, rng, train=True, eps=EPS, rtol=RTOL):
    """Check dL/dx and every dL/dparam of ``layer`` at input x along random directions."""
    output = layer.forward(x, train).copy()
    cotangent = rng.normal(size=output.shape)
    grad_x = layer.backward(cotangent)
    grad_x = None if grad_x is None else grad_x.copy()
    grads = {name: g.copy() for name, g in layer.grads.items()}

    # without dL/dx (a first layer) only the parameters are perturbed
    tangent_x = rng.normal(size=x.shape) if grad_x is not None else np.zeros(x.shape)
    tangents = {name: rng.normal(size=p.shape) for name, p in layer.params.items()}
    originals = {name: p.copy() for name, p in layer.params.items()}

    def evaluate(sign):
        for name, p in layer.params.items():
            p[...] = originals[name] + sign * eps * tangents[name]
        return _inner(cotangent, layer.forward(x + sign * eps * tangent_x, train))

    numeric = (evaluate(+1) - evaluate(-1)) / (2 * eps)
    for name, p in layer.params.items():
        p[...] = originals[name]
    analytic = sum(_inner(grads[name], tangents[name]) for name in grads)
    if grad_x is not None:
        analytic += _inner(grad_x, tangent_x)
    value = _inner(cotangent, output)
    assert_close(analytic, numeric, value, eps, rtol, type(layer).__name__)


def check_model(model, loss_fn, x, targets, rng, train=True, eps=EPS, rtol=RTOL):
    """Check d loss / dx and d loss / d(each parameter tensor), each along its own direction.

    One check per tensor, so a wrong gradient in a layer whose gradient is small (the early
    layers of a vanishing network) cannot hide behind the large ones.
    """
    outputs = model.forward(x, train)
    loss, dlogits = loss_fn(outputs, targets)
    analytic_grads = {"input": model.backward(dlogits, input_grad=True)}
    analytic_grads.update({name: g.copy() for name, g in model.grads.items()})
    buffers = {name: b.copy() for name, b in model.buffers.items()}
    x = x.copy()
    points = {"input": x, **model.params}

    def loss_at(name, original, shift):
        points[name][...] = original + shift
        value = loss_fn(model.forward(x, train), targets)[0]
        for buffer_name, b in model.buffers.items():  # keep running statistics fixed
            b[...] = buffers[buffer_name]
        return value

    for name, point in points.items():
        original = point.copy()
        tangent = rng.normal(size=point.shape)
        analytic = _inner(analytic_grads[name], tangent)
        step = _step_for(analytic, loss, eps)

        def central(h, original=original, tangent=tangent, name=name):
            return (
                loss_at(name, original, h * tangent) - loss_at(name, original, -h * tangent)
            ) / (2 * h)

        # Richardson: D(h) = f' + c h^2 + O(h^4), so (4 D(h/2) - D(h)) / 3 = f' + O(h^4)
        numeric = (4 * central(step / 2) - central(step)) / 3
        point[...] = original
        # rounding noise of the extrapolation: (4 + 1) / 3 times that of D(h/2), bounded by h/4
        assert_close(analytic, numeric, loss, step / 4, rtol, name)


def _step_for(directional, value, eps):
    """A step making the change of f ~1e-8 |f|: eps for O(1) gradients, up to 1e-3 for tiny.

    In a vanishing network the first layers' directional derivatives are ~1e-7; with eps =
    1e-6 the change of f would drown in rounding. Their higher derivatives are as small, so
    a larger step costs no accuracy.
    """
    if directional == 0.0:
        return eps
    return float(np.clip(1e-8 * max(abs(value), 1.0) / abs(directional), eps, 1e-3))
