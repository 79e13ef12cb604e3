"""lrbench: reproduce LRFormer (Low-Resolution Self-Attention) and its baselines without mmcv/mmseg."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lrbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
