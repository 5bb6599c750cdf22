"""Errors of the Spark jobs: the CLI prints them as one clear line and exits non-zero."""

from roundtrip.core.errors import RoundtripError


class SparkJobError(RoundtripError):
    """A job cannot run or its input is bad; the message names the file, table or setting at fault."""
