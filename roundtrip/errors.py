"""Root exceptions of the roundtrip package: the CLI turns them into a clear message and exit 1."""


class RoundtripError(Exception):
    """Anything the user can act on: bad configuration, a missing binary, bad input."""


class ServiceError(RoundtripError):
    """A local server could not be started, reached or stopped."""


class ConfigError(RoundtripError):
    """A setting is missing or wrong; the message names it."""
