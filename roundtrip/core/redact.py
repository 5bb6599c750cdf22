"""One redaction for every message, log line and stored field that might carry a secret.

Drivers put what they were given into their errors: psycopg repeats the connection string
(``password=...``), URL-shaped settings carry ``user:password@``, tokens travel as
``token=...`` or ``Authorization: Bearer ...``. ``redact`` replaces each secret with ``***``
and leaves everything else as it was, so the message still says what failed and where.
"""

from __future__ import annotations

import re

MASK = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host  ->  scheme://user:***@host   (also scheme://:password@host)
    (
        re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s'\"]*:)(?P<secret>[^\s'\"/]+)(?=@)"),
        r"\g<head>" + MASK,
    ),
    # key=value pairs of DSNs, query strings and settings: password=..., token=..., secret=...
    (
        re.compile(
            r"(?P<head>\b(?:password|passwd|pwd|token|access_token|refresh_token|secret|client_secret|api_key|apikey)"
            r"\s*[=:]\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s'\"&;,)]+)",
            re.IGNORECASE,
        ),
        r"\g<head>" + MASK,
    ),
    # HTTP authorization headers
    (re.compile(r"(?P<head>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE), r"\g<head>" + MASK),
)


def redact(text: object, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with credentials masked; ``secrets`` are literal values to mask too (e.g. a
    password the caller knows, wherever it appears)."""
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            out = out.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        out = pattern.sub(replacement, out)
    return out
