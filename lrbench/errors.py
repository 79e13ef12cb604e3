"""The one error type users see: every :class:`LrbenchError` is a problem the user can fix, and its message is one
line that names the file or argument and what to do. The CLI prints exactly those as ``error: ...`` (exit 2); any
other exception is a bug and keeps its traceback.

Subclasses also derive from the builtin a caller would expect (``ValueError``, ``FileExistsError``, ``KeyError``)
so that library users can catch them either way.
"""

from __future__ import annotations


class LrbenchError(Exception):
    """A user-fixable problem; ``str(e)`` is the one-line message."""

    def __str__(self) -> str:  # KeyError would quote its message; every subclass prints it as written
        return str(self.args[0]) if self.args else type(self).__name__


class UsageError(LrbenchError, ValueError):
    """A bad argument or option value."""


class UnknownNameError(LrbenchError, KeyError):
    """An unknown model, zoo entry, recipe or family; the message suggests close matches."""


class CheckpointError(LrbenchError, ValueError):
    """A checkpoint that cannot be read safely or does not fit the model."""


class ZooError(LrbenchError, ValueError):
    """A zoo problem: bad manifest, no weights, the hub unreachable, a checksum mismatch."""


class DatasetError(LrbenchError, ValueError):
    """A dataset folder or file that does not follow the standard layout or conventions."""


class OutputError(LrbenchError, FileExistsError):
    """An output that exists (and would be overwritten) or cannot be written."""


class ResultError(LrbenchError, ValueError):
    """A result file that cannot be used (invalid JSON, missing fields, saved by a different run)."""


class ConfigError(LrbenchError, ValueError):
    """A recipe file that is missing or malformed."""


class Terminated(BaseException):
    """SIGTERM (cluster pre-emption, ``kill``), raised like KeyboardInterrupt so that running work saves its state."""
