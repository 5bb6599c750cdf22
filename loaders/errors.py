"""Loader errors: terminal ones stop the run with a clear message; transient ones may be retried."""

from roundtrip.core.errors import RoundtripError


class LoaderError(RoundtripError):
    """A load cannot proceed; the message names the table, file, row or setting at fault."""


class TransientLoaderError(LoaderError):
    """A network or server hiccup: retrying the same call may succeed."""
