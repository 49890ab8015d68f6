"""The engine raises one exception type for a bad argument: EngineError, a GradlabError (the
CLI prints it on one line, exit 2) and a ValueError (what a numpy library's callers catch)."""

import numpy as np
import pytest

from gradlab.engine import MLP, clip_gradients, get_loss, make_activation, make_optimizer
from gradlab.engine.init import init_weight
from gradlab.errors import EngineError, GradlabError

BAD_CALLS = {
    "clip mode": lambda: clip_gradients([np.ones(3)], "bogus", 1.0),
    "norm count": lambda: clip_gradients([np.ones(3), np.ones(2)], "norm", 1.0, [1.0]),
    "optimizer": lambda: make_optimizer("rmsprop", 0.1),
    "loss": lambda: get_loss("hinge"),
    "activation": lambda: make_activation("swish"),
    "init scheme": lambda: init_weight("lecun", np.random.default_rng(0), 3, 3),
    "norm": lambda: MLP(3, 1, depth=2, width=4, norm="group"),
    "dtype": lambda: MLP(3, 1, depth=2, width=4, dtype="float16"),
    "depth": lambda: MLP(3, 1, depth=0, width=4),
    "input shape": lambda: MLP(3, 1, depth=2, width=4).forward(np.ones((2, 5))),
    "input shape (predict)": lambda: MLP(3, 1, depth=2, width=4).predict(np.ones((2, 5))),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_every_bad_argument_raises_engine_error(call):
    with pytest.raises(EngineError) as caught:
        call()
    assert type(caught.value) is EngineError
    assert isinstance(caught.value, GradlabError) and isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)  # one line, as the CLI prints it
