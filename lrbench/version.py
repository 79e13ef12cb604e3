"""The installed package version (a module of its own so that every layer can read it without importing more)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lrbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
