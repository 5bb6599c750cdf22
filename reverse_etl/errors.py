"""reverse_etl errors: the type decides whether a retry may help."""

from roundtrip.errors import RoundtripError


class SyncError(RoundtripError):
    """A sync cannot run or failed for good; the message names the sync and the cause."""


class TransientSyncError(SyncError):
    """Connection lost, server restarting, lock timeout: retried with backoff."""
