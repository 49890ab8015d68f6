"""gradlab's numerical core: numpy only (never click, yaml or matplotlib).

Layers with hand-written backward passes, an MLP built from them, a probe that measures
per-layer statistics as the MLP runs, losses, clipping, optimizers, initializers and robust
norms. Everything takes an explicit dtype and an explicit ``np.random.Generator``.
"""

from gradlab.engine.activations import (
    ACTIVATIONS,
    ELU,
    GELU,
    Erf,
    LeakyReLU,
    SiLU,
    Softplus,
    make_activation,
)
from gradlab.engine.clip import (
    ClipResult,
    clip_by_global_norm,
    clip_by_layer_norm,
    clip_by_value,
    clip_gradients,
    global_norm,
)
from gradlab.engine.dropout import Dropout
from gradlab.engine.layers import Identity, Linear, ReLU, Sigmoid, Tanh
from gradlab.engine.losses import LOSSES, bce_with_logits, cross_entropy, get_loss, mse
from gradlab.engine.model import MLP, HiddenBlock
from gradlab.engine.normalization import BatchNorm, LayerNorm
from gradlab.engine.norms import combine_norms, l2_norm
from gradlab.engine.optim import SGD, Adam, make_optimizer
from gradlab.engine.probe import Probe

__all__ = [
    "ACTIVATIONS",
    "ELU",
    "GELU",
    "LOSSES",
    "MLP",
    "SGD",
    "Adam",
    "BatchNorm",
    "ClipResult",
    "Dropout",
    "Erf",
    "HiddenBlock",
    "Identity",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "Probe",
    "ReLU",
    "SiLU",
    "Sigmoid",
    "Softplus",
    "Tanh",
    "bce_with_logits",
    "clip_by_global_norm",
    "clip_by_layer_norm",
    "clip_by_value",
    "clip_gradients",
    "combine_norms",
    "cross_entropy",
    "get_loss",
    "global_norm",
    "l2_norm",
    "make_activation",
    "make_optimizer",
    "mse",
]
