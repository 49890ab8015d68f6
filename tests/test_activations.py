"""The activation entries: float64 accuracy against reference formulas (Python's math module,
and PyTorch where it is installed), finite and warning-free far out, predict == forward,
and the theory's closed forms against the generic quadrature."""

import math

import numpy as np
import pytest

from gradlab import theory, vocabulary
from gradlab.engine import ACTIVATIONS, MLP, make_activation

GRID = np.linspace(-50.0, 50.0, 2001)  # includes 0 and the softplus threshold 20
NEW = ("erf", "gelu", "silu", "softplus", "leaky_relu", "elu")


def _sigmoid(x):
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _normal_cdf(x):
    return 0.5 * math.erfc(-x / math.sqrt(2))


REFERENCE = {  # name: (phi, phi'), plain float64 formulas
    "erf": (math.erf, lambda x: 2 / math.sqrt(math.pi) * math.exp(-x * x)),
    "gelu": (
        lambda x: x * _normal_cdf(x),
        lambda x: _normal_cdf(x) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi),
    ),
    "silu": (
        lambda x: x * _sigmoid(x),
        lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))),
    ),
    "softplus": (
        lambda x: x if x > 20 else math.log1p(math.exp(x)),
        lambda x: 1.0 if x > 20 else _sigmoid(x),
    ),
    "leaky_relu": (lambda x: x if x > 0 else 0.01 * x, lambda x: 1.0 if x > 0 else 0.01),
    "elu": (lambda x: x if x > 0 else math.expm1(x), lambda x: 1.0 if x > 0 else math.exp(x)),
}


def _close(actual, expected, tol=1e-12):
    """|a - e| <= tol max(1, |e|), elementwise."""
    return np.all(np.abs(actual - expected) <= tol * np.maximum(1.0, np.abs(expected)))


def _forward_backward(name, x, **options):
    layer = make_activation(name, x.dtype, **options)
    out = layer.forward(x).copy()
    grad = layer.backward(np.ones_like(x)).copy()
    return layer, out, grad


@pytest.mark.parametrize("name", NEW)
def test_matches_reference_formulas_to_1e_12(name):
    phi, derivative = REFERENCE[name]
    _, out, grad = _forward_backward(name, GRID.copy())
    assert _close(out, np.array([phi(x) for x in GRID]))
    assert _close(grad, np.array([derivative(x) for x in GRID]))


@pytest.mark.parametrize("name", NEW)
def test_matches_pytorch_to_1e_12(name):
    torch = pytest.importorskip("torch")
    modules = {
        "erf": torch.erf,
        "gelu": torch.nn.GELU(),
        "silu": torch.nn.SiLU(),
        "softplus": torch.nn.Softplus(beta=1, threshold=20),
        "leaky_relu": torch.nn.LeakyReLU(0.01),
        "elu": torch.nn.ELU(alpha=1.0),
    }
    z = torch.tensor(GRID, dtype=torch.float64, requires_grad=True)
    y = modules[name](z)
    y.sum().backward()
    _, out, grad = _forward_backward(name, GRID.copy())
    assert _close(out, y.detach().numpy())
    assert _close(grad, z.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", vocabulary.ACTIVATIONS)
def test_finite_and_warning_free_far_out(name, dtype):
    x = np.array([[-1e4, -1e3, -50.0, 0.0, 50.0, 1e3, 1e4]], dtype=dtype)
    layer, out, grad = _forward_backward(name, x)
    assert out.dtype == grad.dtype == dtype
    assert np.isfinite(out).all() and np.isfinite(grad).all()
    assert 0.0 <= layer.saturation() <= 1.0


@pytest.mark.parametrize("name", vocabulary.ACTIVATIONS)
def test_predict_is_forward_bit_for_bit(name):
    x = np.random.default_rng(0).normal(scale=5.0, size=(6, 9))
    layer, out, _ = _forward_backward(name, x.copy())
    assert np.array_equal(layer.predict(x.copy(), np.empty_like(x)), out)


def test_leaky_slope_reaches_the_layer_and_the_model():
    _, out, grad = _forward_backward("leaky_relu", np.array([-2.0, 3.0]), leaky_slope=0.2)
    assert out.tolist() == [-0.4, 3.0] and grad.tolist() == [0.2, 1.0]
    model = MLP(3, 1, 2, 4, "leaky_relu", rng=np.random.default_rng(0), leaky_slope=0.3)
    assert model.blocks[0].activation.slope == 0.3


def test_engine_phi_is_the_forward():
    """The theory integrates the same phi the engine runs (new entries: forward is phi)."""
    for name in NEW:
        entry = theory.activation_entry(name)
        _, out, grad = _forward_backward(name, GRID.copy())
        assert np.array_equal(entry.phi(GRID), out) and np.array_equal(entry.derivative(GRID), grad)


@pytest.mark.parametrize("q", [1e-3, 0.5, 1.0, 30.0, 400.0])
@pytest.mark.parametrize("name", ["relu", "linear", "leaky_relu", "erf"])
def test_closed_forms_match_the_quadrature(name, q):
    entry = make_activation(name, leaky_slope=0.2)
    second, derivative = entry.closed_moments(q)
    kink = entry.kink
    assert second == pytest.approx(
        theory.gaussian_expectation(lambda u: entry.phi(u) ** 2, q, kink), rel=1e-9
    )
    assert derivative == pytest.approx(
        theory.gaussian_expectation(lambda u: entry.derivative(u) ** 2, q, kink), rel=1e-9
    )


def test_closed_form_chi_and_critical_scales():
    a = 0.2
    assert theory.predict("leaky_relu", 1.3, leaky_slope=a).chi_1 == pytest.approx(
        1.3**2 * (1 + a * a) / 2, rel=1e-15
    )
    assert theory.predict("relu", 1.3).chi_1 == pytest.approx(1.3**2 / 2, rel=1e-15)
    # erf at sigma_b = 0: q* = 0 and chi_1 = sigma_w^2 erf'(0)^2 = sigma_w^2 4/pi up to sqrt(pi)/2
    assert theory.critical_weight_scale("erf") == pytest.approx(math.sqrt(math.pi) / 2, rel=1e-6)


def test_elu_quadrature_splits_at_the_kink():
    """E[elu'(u)^2] against an independent integral (math only, fine midpoint rule)."""
    q = 2.0
    h = 1e-4
    u = np.arange(-12.0, 12.0, h) + h / 2
    density = np.exp(-u * u / (2 * q)) / math.sqrt(2 * math.pi * q)
    entry = make_activation("elu")
    reference = float(np.sum(entry.derivative(u) ** 2 * density) * h)
    assert theory.derivative_moment("elu", q) == pytest.approx(reference, rel=1e-7)


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_no_critical_scale_where_chi_jumps(name):
    assert theory.critical_weight_scale(name) is None
    assert "jumps" in theory.critical_scale_note(name)


def test_registry_is_the_vocabulary():
    assert tuple(ACTIVATIONS) == vocabulary.ACTIVATIONS


def test_gelu_reaches_the_fixed_point_its_length_map_moves_to():
    """From q^1 = 2.25 (sigma_w 1.5, q0 1) gelu's length map rises (q_map(q) > q there) and
    grows without bound, although q = 0 is stable too: not q* = 0 as for tanh."""
    assert theory.q_map("gelu", 1.5, 0.0, 2.25) > 2.25
    assert theory.fixed_point("gelu", 1.5, 0.0) == math.inf
    assert theory.fixed_point("gelu", 1.2, 0.0) == 0.0  # q_map(q) < q for all q <= 1.44


@pytest.mark.parametrize(
    "name, weight_scale",
    [
        ("erf", 1.5),
        ("gelu", 2.0),
        ("silu", 1.2),
        ("softplus", 2.0),
        ("leaky_relu", 1.6),
        ("elu", 2.0),
    ],
)
def test_theory_matches_a_simulation(name, weight_scale):
    """Measured per-layer delta factor of a wide, deep network at init against theory's M."""
    from gradlab.analysis import fit_factor

    rng = np.random.default_rng(3)
    model = MLP(32, 1, 30, 256, name, weight_scale=weight_scale, rng=rng)
    out = model.forward(rng.normal(size=(64, 32)))
    model.backward(rng.normal(size=out.shape))
    measured = fit_factor([np.linalg.norm(delta) for delta in model.deltas()]).factor
    assert measured == pytest.approx(theory.predict(name, weight_scale).factor, rel=0.03)
