"""The one error path: every mistake a user can make, or damaged input a user can fix, is a ``FacekdError``.

Scripts catch ``FacekdError`` and print its message as one paragraph (what is wrong, which key or file,
what to do), then exit with status 2 and no stack. Anything else is a bug and keeps its traceback.
Subclasses also derive from the builtin they replace (``ValueError``, ``FileNotFoundError``...), so
callers that caught the builtin keep working.
"""
from __future__ import annotations

__all__ = ["FacekdError", "ConfigError", "UnknownNameError", "InputFileError", "ArtifactError", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2


class FacekdError(Exception):
    """A user's mistake or a damaged input; the message says what is wrong, where, and what to do."""


class ConfigError(FacekdError, ValueError):
    """A config key holds a value facekd cannot use; the message names the key."""


class InputFileError(FacekdError, FileNotFoundError):
    """An input file or folder is missing, unreadable or of the wrong kind; the message names it."""


class ArtifactError(FacekdError, ValueError):
    """A run artifact is damaged, truncated, or differs from the checksum its manifest recorded."""


class UnknownNameError(ConfigError, KeyError):
    """A config names something no registry knows (a method, optimizer, preset...); the message lists the known."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
