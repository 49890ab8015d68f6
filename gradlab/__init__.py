"""gradlab: a lab for vanishing and exploding gradients in deep networks.

Heavy pieces load lazily, so `import gradlab` (and `gradlab --help`) stays fast and
`gradlab.engine` can be used without yaml, click or matplotlib.
"""

__version__ = "0.1.0"

_LAZY = {
    "MLP": ("gradlab.engine.model", "MLP"),
    "run": ("gradlab.api", "run"),
    "load_config": ("gradlab.config", "load_config"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'gradlab' has no attribute {name!r}")
