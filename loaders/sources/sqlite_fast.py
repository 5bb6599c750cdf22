"""Vectorised conversions of SQLite values that give exactly what the per-value rules of
``loaders.sources.sqlite`` give, or None when they cannot promise it (the caller then runs
those rules, which also word the error). Nothing here raises for a bad value.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loaders.config import TimestampKind

TIMESTAMP = pa.timestamp("us", tz="UTC")
# |seconds| < 2**32 (|ms| < 2**42): a double's spacing there is under a microsecond, so at most
# one multiple of 1e-6 s (1e-3 ms) rounds to it, and that one is its shortest repr, the text the
# exact rule reads. The products stay under 2**53: the float arithmetic below is exact.
_FACTOR = {"epoch_s": 1_000_000, "epoch_ms": 1_000}
_BOUND = {"epoch_s": 2.0**32, "epoch_ms": 2.0**42}


def epoch_micros(values: pa.Array, kind: TimestampKind) -> pa.Array | None:
    """Epoch seconds or milliseconds (int64 or double) as UTC microseconds, exactly."""
    factor, bound = _FACTOR[kind], _BOUND[kind]
    if not (pa.types.is_int64(values.type) or pa.types.is_float64(values.type)):
        return None
    mask = values.is_null().to_numpy(zero_copy_only=False)
    x = values.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if not np.all(np.abs(x) < bound):  # also false for NaN and infinities
            return None
        micros = np.rint(x * factor)
        if pa.types.is_float64(values.type) and not np.array_equal(micros / factor, x):
            return None  # more digits than microseconds: the Decimal rule rounds them
    return pa.array(micros.astype(np.int64), TIMESTAMP, mask=mask)


def iso_micros(values: list[object]) -> pa.Array | None:
    """ISO-8601 text as UTC timestamps (no offset: UTC), the way ``datetime.fromisoformat`` reads
    it; pyarrow converts an aware datetime by its offset, a naive one as it is."""
    try:
        parsed = [None if v is None else datetime.fromisoformat(v) for v in values]  # type: ignore[arg-type]
        return pa.array(parsed, TIMESTAMP)
    except (TypeError, ValueError, OverflowError, pa.ArrowException):
        return None


def plain(values: list[object], wanted: pa.DataType) -> pa.Array | None:
    """Values that need no coercion (``sqlite._coerce`` leaves them as they are) straight into
    Arrow: anything else (a number in a text column, 0/1 for a boolean) fails here."""
    if pa.types.is_boolean(wanted):
        return None
    try:
        return pa.array(values, wanted)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None


def raw_max(values: pa.Array) -> object | None:
    """The largest non-NULL value, as the Python value SQLite gives for it."""
    return pc.max(values).as_py()
