"""Loader errors: each stops the run with a clear message (what, where, and what to do).

There is no transient kind: nothing in the loaders retries. A busy DuckDB file is waited for
(``--wait``); object-store clients (gcsfs, s3fs, adlfs) retry their own requests; anything else
that fails a run leaves the warehouse as it was, so running the command again is the retry.
"""

from roundtrip.core.errors import RoundtripError


class LoaderError(RoundtripError):
    """A load cannot proceed; the message names the table, file, row or setting at fault."""
