"""lrbench: reproduce LRFormer (Low-Resolution Self-Attention) and its baselines without mmcv/mmseg.

``lrbench.create_model``, ``lrbench.list_models``, ``lrbench.load_checkpoint``, ``lrbench.predict``,
``lrbench.evaluate``, ``lrbench.robust`` and ``lrbench.analyze`` come from :mod:`lrbench.engine.api`; they are imported on first use so that the command line (:mod:`lrbench.cli`) starts
without importing torch. Type checkers see them through the ``TYPE_CHECKING`` import below, and ``dir(lrbench)``
lists them.
"""

from typing import TYPE_CHECKING

from .version import __version__

if TYPE_CHECKING:  # what the lazy attributes are, for type checkers and IDEs (never executed)
    from .engine.api import analyze, create_model, evaluate, list_models, load_checkpoint, predict, robust

__all__ = [
    "__version__",
    "analyze",
    "create_model",
    "evaluate",
    "list_models",
    "load_checkpoint",
    "predict",
    "robust",
]
_API = tuple(__all__[1:])


def __getattr__(name: str):
    if name in _API:
        from .engine import api

        return getattr(api, name)
    raise AttributeError(f"module 'lrbench' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
