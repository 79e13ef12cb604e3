"""lrbench: reproduce LRFormer (Low-Resolution Self-Attention) and its baselines without mmcv/mmseg.

``lrbench.create_model``, ``lrbench.list_models``, ``lrbench.load_checkpoint`` and ``lrbench.predict`` come from
:mod:`lrbench.engine.api`; they are imported on first use so that the command line (``lrbench.cli``) starts without importing torch.
"""

from .version import __version__

_API = ("create_model", "list_models", "load_checkpoint", "predict")


def __getattr__(name: str):
    if name in _API:
        from .engine import api

        return getattr(api, name)
    raise AttributeError(f"module 'lrbench' has no attribute '{name}'")


__all__ = ["__version__", *_API]
