"""Column expressions shared by the jobs: the Spark side of ``macros/cross_db.sql``.

Each function mirrors one dbt macro and follows docs/contract.md, so that a rule reads the same
in both engines. None of them depends on the session time zone.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# The dbt macros' patterns (iso_timestamp_pattern, parse_integer, parse_decimal). They end in
# \z, not $: Java's $ also matches before a final line break, RE2's (DuckDB, BigQuery) does not.
# docs/contract.md, "Timestamps": years 0001-9999, hours 00-23, seconds 00-59, offsets up to ±14:59
ISO_TIMESTAMP = (
    r"^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])?\z"
)
PLAIN_INTEGER = r"^[+-]?[0-9]+\z"
PLAIN_DECIMAL = r"^[+-]?[0-9]+([.][0-9]+)?\z"
_HAS_OFFSET = r"(Z|[+-][0-9]{2}:[0-9]{2})\z"
_FIRST_INSTANT, _LAST_INSTANT = "0001-01-01 00:00:00", "9999-12-31 23:59:59.999999"
# 1 to 6 fraction digits; XXX reads 'Z' or '+05:30'; Spark's strict resolver rejects 30 February
_ISO_FORMAT = "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS]XXX"
# exact decimal arithmetic for round_ratio: 32 integer digits, 6 fraction digits
_EXACT = "decimal(38, 6)"


def parse_iso_timestamp(text: Column) -> Column:
    """ISO-8601 text -> UTC timestamp without time zone (``timestamp_ntz``).

    NULL when the text is NULL, does not match ``ISO_TIMESTAMP`` (no 24:00:00, no year 0, no
    leap second, offsets up to ±14:59), is not a real day (30 February), or its UTC instant
    falls outside 0001-01-01 .. 9999-12-31. Text without an offset is UTC.
    """
    with_offset = F.when(text.rlike(_HAS_OFFSET), text).otherwise(F.concat(text, F.lit("Z")))
    instant = F.try_to_timestamp(F.regexp_replace(with_offset, " ", "T"), F.lit(_ISO_FORMAT))
    # microseconds since the epoch are the same in every session time zone; a cast to
    # timestamp_ntz would use the session's zone instead of UTC
    utc = F.timestamp_add("MICROSECOND", F.unix_micros(instant), F.lit("1970-01-01 00:00:00").cast("timestamp_ntz"))
    # the UTC instant itself within year 1 .. 9999 (an offset can move it across)
    in_range = utc.between(F.lit(_FIRST_INSTANT).cast("timestamp_ntz"), F.lit(_LAST_INSTANT).cast("timestamp_ntz"))
    return F.when(text.rlike(ISO_TIMESTAMP) & in_range, utc)


def parse_integer(text: Column, type_: str = "bigint") -> Column:
    """Plain decimal notation only (an optional sign, digits); NULL for anything else (' 7',
    '1.5', '1e3', '0x1F') and for a value out of the type's range."""
    return F.when(text.rlike(PLAIN_INTEGER), text.try_cast(type_))


def parse_decimal(text: Column, type_: str) -> Column:
    """Plain decimal notation only (sign, digits, optional fraction); more places than the type
    has are rounded half away from zero; NULL for anything else and out of range."""
    return F.when(text.rlike(PLAIN_DECIMAL), text.try_cast(type_))


def join_codes(rules: Sequence[tuple[str, Column]]) -> Column:
    """The codes whose condition holds, joined by ',' in the order given; NULL when none does."""
    codes = [F.when(condition, F.lit(code)) for code, condition in rules]
    return F.nullif(F.concat_ws(",", *codes), F.lit(""))


def round_ratio(numerator: Column, denominator: Column, scale: int = 2) -> Column:
    """round(numerator / denominator, scale), exact and half away from zero; NULL when the
    denominator is 0 or NULL. Result type ``decimal(38, scale)``.

    Spark's decimal division rounds its quotient to a few digits first, and rounding twice can
    move a result by one unit (0.004999996 -> 0.005000 -> 0.01). So the quotient is computed on
    whole numbers: floor((2·|n|·10^scale + |d|) / (2·|d|)), with the integer division done
    exactly through the remainder.
    """
    n, d = numerator.cast(_EXACT), denominator.cast(_EXACT)
    top = F.abs(n) * (2 * 10**scale) + F.abs(d)
    bottom = F.abs(d) * 2
    whole = (top - top % bottom) / bottom  # exact: top - top % bottom is a multiple of bottom
    signed = F.when((n < 0) != (d < 0), -whole).otherwise(whole)
    return F.when(d != 0, (signed / 10**scale).cast(f"decimal(38, {scale})"))


def valid_rows(silver: DataFrame) -> DataFrame:
    """Rows gold and marts use: valid and not a redelivered copy."""
    return silver.where(F.col("is_valid") & ~F.col("is_duplicate"))
