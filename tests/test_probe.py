"""The probe: its statistics are the layers.csv columns, a new one is one entry, and it finds
where a step went non-finite. (Its values against the model's arrays: test_model.py; against a
replayed run: test_run.py.)"""

import math

import numpy as np
import pytest

from gradlab.engine import MLP, Probe, mse
from gradlab.engine.norms import l2_norm
from gradlab.engine.probe import STAT_NAMES, STATISTICS, Statistic
from gradlab.errors import GradlabError
from gradlab.results import LAYER_COLUMNS


def _model(**kwargs):
    spec = dict(input_dim=5, output_dim=2, depth=4, width=7, rng=np.random.default_rng(0))
    spec.update(kwargs)
    return MLP(**spec)


def _step(model, probe, seed=1, x=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 5)) if x is None else x
    _, dlogits = mse(model.forward(x, probe=probe), rng.normal(size=(6, 2)))
    model.backward(dlogits, probe=probe)


def test_the_layers_csv_columns_are_the_probes_statistics():
    assert LAYER_COLUMNS == ("step", "layer", *STAT_NAMES)
    assert STAT_NAMES == tuple(name for statistic in STATISTICS for name in statistic.names)
    assert len(set(STAT_NAMES)) == len(STAT_NAMES)
    probe = Probe(_model())
    probe.start(layer_stats=True)
    assert tuple(probe.layer_stats()) == STAT_NAMES


def test_a_new_statistic_is_one_entry():
    """What docs/extending.md tells a contributor to write: an entry with its column(s), its
    moment and its measure, of one value or several."""
    extra = (
        Statistic(  # docs/extending.md's example: the mean-field q_l
            ("preact_q",),
            "forward",
            lambda probe, block: float(np.mean(np.square(block.linear.output, dtype=np.float64))),
        ),
        Statistic(  # ||dL/dW_l|| / ||W_l||, from two statistics already taken
            ("grad_to_weight",),
            "backward",
            lambda probe, block: (
                probe.value("weight_grad_norm", block) / probe.value("weight_norm", block)
            ),
        ),
        Statistic(  # the largest |W_l| entry after the update, and its layer
            ("weight_max", "layer_again"),
            "step",
            lambda probe, block: (
                float(np.abs(block.linear.params["weight"]).max()),
                float(block.index),
            ),
        ),
    )
    model = _model()
    probe = Probe(model, STATISTICS + extra)
    probe.start(layer_stats=True)
    _step(model, probe)
    stats = probe.layer_stats()
    assert tuple(stats) == (*STAT_NAMES, "preact_q", "grad_to_weight", "weight_max", "layer_again")
    hidden = [block.linear.output for block in model.blocks]
    np.testing.assert_array_equal(stats["preact_q"], [np.mean(h * h) for h in hidden])
    np.testing.assert_array_equal(
        stats["grad_to_weight"], stats["weight_grad_norm"] / stats["weight_norm"]
    )
    assert np.isnan(stats["weight_max"]).all()  # "step": only after an update
    model.params["layer2.weight"][0, 0] = 40.0
    probe.after_step(type("Sgd", (), {"updates": {}, "update_norms": dict})(), probe.grad_norms)
    stats = probe.layer_stats()
    assert stats["weight_max"][1] == 40.0 and list(stats["layer_again"]) == [1, 2, 3, 4]


def test_a_statistic_at_an_unknown_moment_is_an_error():
    bad = Statistic(("x",), "later", lambda probe, block: 0.0)
    with pytest.raises(GradlabError, match="when='later' is not one of forward, backward, step"):
        Probe(_model(), (bad,))


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_probing_changes_nothing_the_model_computes(norm, dtype):
    plain, probed = _model(norm=norm, dtype=dtype), _model(norm=norm, dtype=dtype)
    probe = Probe(probed)
    for seed in range(3):
        probe.start(layer_stats=seed != 1)
        _step(probed, probe, seed)
        _step(plain, None, seed)
    for name in plain.grads:
        np.testing.assert_array_equal(probed.grads[name], plain.grads[name], err_msg=name)
    for a, b in zip(probed.deltas(), plain.deltas(), strict=True):
        np.testing.assert_array_equal(a, b)
    for name in plain.buffers:
        np.testing.assert_array_equal(probed.buffers[name], plain.buffers[name], err_msg=name)
    assert probe.grad_norms == [l2_norm(grad) for grad in plain.grads.values()]


def test_locate_nonfinite_names_the_first_place_in_the_direction_of_each_pass():
    model = _model(norm="layer")
    probe = Probe(model)
    _step(model, probe)
    assert probe.locate_nonfinite() is None
    with np.errstate(all="ignore"):  # as in a run: non-finite values are found, not warned
        model.params["layer3.weight"][0, 0] = math.inf  # born at layer 3, carried onwards
        model.forward(np.ones((6, 5)))
        where = {"pass": "forward", "layer": 3, "quantity": "pre-activation"}
        assert probe.locate_nonfinite() == where
        model.params["layer3.weight"][0, 0] = 0.0
        outputs = model.forward(np.ones((6, 5)))
        model.backward(np.full_like(outputs, math.nan))  # every gradient nan: the output's first
        where = {"pass": "backward", "layer": "output", "quantity": "weight gradient"}
        assert probe.locate_nonfinite() == where
        model.backward(np.ones_like(outputs))
        model.grads["layer2.norm.gamma"][0] = math.nan  # only there
        where = {"pass": "backward", "layer": 2, "quantity": "norm gamma gradient"}
        assert probe.locate_nonfinite() == where
