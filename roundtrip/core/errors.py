"""Root exceptions: every CLI turns them into one clear line and a non-zero exit.

Each package has its own root below ``RoundtripError`` (``LoaderError``, ``SyncError``,
``SparkJobError``) with transient and terminal kinds, so that a retry is decided by the type.
"""

from __future__ import annotations


class RoundtripError(Exception):
    """Anything the user can act on: bad configuration, a missing binary, bad input.

    ``hint`` says what to do about it; the CLI prints it under the message."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ServiceError(RoundtripError):
    """A local server could not be started, reached or stopped."""


class ConfigError(RoundtripError):
    """A setting is missing or wrong; the message names it."""


class WarehouseBusyError(RoundtripError):
    """The DuckDB warehouse file is locked by another process (the message names it)."""
