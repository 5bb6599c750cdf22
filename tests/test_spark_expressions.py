"""The column rules of the Spark jobs, case by case, against values worked out from docs/contract.md."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

import pytest
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.testing import assertDataFrameEqual

from spark_jobs.bronze_to_silver import transform_clicks, transform_orders
from spark_jobs.config import DateWindow
from spark_jobs.expressions import parse_decimal, parse_integer, parse_iso_timestamp, round_ratio

pytestmark = [pytest.mark.spark, pytest.mark.filterwarnings("ignore::FutureWarning")]

TIMESTAMPS = [
    ("2026-11-20T10:00:00Z", datetime(2026, 11, 20, 10, 0)),
    ("2026-11-20 10:00:00", datetime(2026, 11, 20, 10, 0)),  # no offset: UTC
    ("2026-11-20T01:30:00+02:00", datetime(2026, 11, 19, 23, 30)),  # the UTC date is the day before
    ("2026-11-19T22:15:00.5-05:00", datetime(2026, 11, 20, 3, 15, 0, 500_000)),
    ("2026-11-20T10:00:00.123456Z", datetime(2026, 11, 20, 10, 0, 0, 123_456)),
    ("2024-02-29T00:00:00Z", datetime(2024, 2, 29)),
    ("2026-11-20T10:00:00.1234567Z", None),  # 7 fraction digits
    ("2026-02-30T10:00:00Z", None),  # not a real day
    ("2026-11-20 25:61:00", None),  # not a real time
    ("2026-13-01T00:00:00+01:00", None),
    ("2026-11-20T10:00:00+0200", None),  # offset without colon
    ("2026-11-20T10:00:00Z\n", None),  # a line break after it
    ("20/11/2026 10:00", None),
    ("1700000000", None),
    ("not-a-timestamp", None),
    ("", None),
    (None, None),
]


def test_parse_iso_timestamp(spark: SparkSession) -> None:
    given = spark.createDataFrame([(t,) for t, _ in TIMESTAMPS], "text string")
    expected = spark.createDataFrame(TIMESTAMPS, "text string, ts timestamp_ntz")
    assertDataFrameEqual(given.select("text", parse_iso_timestamp(F.col("text")).alias("ts")), expected)


def test_parse_iso_timestamp_ignores_the_session_time_zone(spark: SparkSession) -> None:
    given = spark.createDataFrame([(t,) for t, _ in TIMESTAMPS], "text string")
    zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "Asia/Kolkata")
    try:
        rows = given.select("text", parse_iso_timestamp(F.col("text")).alias("ts")).collect()
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone or "UTC")
    assert sorted(rows, key=str) == sorted((Row(text=t, ts=ts) for t, ts in TIMESTAMPS), key=str)


NOT_PLAIN = (" 12", "12 ", "12\n", "1e3", "0x1F", "1_000", "12a", "", "½", "١٢")  # '١٢': Arabic-Indic digits


@pytest.mark.parametrize(
    ("parse", "type_", "cases"),
    [
        (
            parse_integer,
            "bigint",
            [("12", 12), ("+12", 12), ("-3", -3), ("012", 12), ("1.5", None), ("9223372036854775808", None)]
            + [(text, None) for text in NOT_PLAIN],
        ),
        (
            lambda text, type_: parse_integer(text, type_),
            "int",
            [("2147483647", 2147483647), ("2147483648", None)],
        ),
        (
            parse_decimal,
            "decimal(12, 2)",
            [("12.5", Decimal("12.50")), ("12.345", Decimal("12.35")), ("-12.345", Decimal("-12.35"))]
            + [("8.0", Decimal("8.00")), ("10000", Decimal("10000.00")), ("99999999999.99", None)]
            + [(text, None) for text in (*NOT_PLAIN, "5.", ".5", "12,5", "NaN", "1.2.3")],
        ),
    ],
)
def test_numbers_parse_from_plain_notation_only(
    spark: SparkSession, parse: Callable[[Column, str], Column], type_: str, cases: list[tuple[str, object]]
) -> None:
    given = spark.createDataFrame([(t,) for t, _ in cases], "text string")
    expected = spark.createDataFrame(cases, f"text string, value {type_}")
    assertDataFrameEqual(given.select("text", parse(F.col("text"), type_).alias("value")), expected)


def _half_away_from_zero(n: Decimal, d: Decimal, scale: int) -> Decimal | None:
    if d == 0:
        return None
    return (n / d).quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)  # ROUND_HALF_UP: away from zero


def test_round_ratio_is_exact_and_rounds_half_away_from_zero(spark: SparkSession) -> None:
    rng = random.Random(7)
    pairs = [
        (Decimal("1"), Decimal("8"), 2),  # 0.125 -> 0.13
        (Decimal("-1"), Decimal("8"), 2),  # -0.125 -> -0.13
        (Decimal("1"), Decimal("-8"), 2),
        (Decimal("0.05"), Decimal("10"), 2),  # 0.005 -> 0.01
        (Decimal("4999999"), Decimal("1000000000"), 2),  # 0.004999999 -> 0.00, not 0.005000 -> 0.01
        (Decimal("1"), Decimal("3"), 4),
        (Decimal("2"), Decimal("3"), 4),
        (Decimal("0"), Decimal("7"), 2),
        (Decimal("5"), Decimal("0"), 2),  # no denominator: NULL
        (Decimal("123456789012.34"), Decimal("7"), 2),
    ]
    pairs += [
        (
            Decimal(rng.randint(-(10**9), 10**9)).scaleb(-2),
            Decimal(rng.randint(1, 10**6)) * rng.choice([1, -1]),
            rng.choice([2, 4]),
        )
        for _ in range(300)
    ]
    schema = "n decimal(20, 2), d decimal(20, 0), scale int"
    given = spark.createDataFrame(pairs, schema)
    for scale in (2, 4):
        expected = spark.createDataFrame(
            [(n, d, s, _half_away_from_zero(n, d, s)) for n, d, s in pairs if s == scale],
            f"{schema}, ratio decimal(38, {scale})",
        )
        actual = given.where(F.col("scale") == scale).withColumn("ratio", round_ratio(F.col("n"), F.col("d"), scale))
        assertDataFrameEqual(actual, expected)


def landed(records: DataFrame, file: str = "orders/dt=2026-11-20/part-0.jsonl") -> DataFrame:
    """Records as the bronze reader gives them: with their landing file, line and landing time."""
    return records.withColumns(
        {
            "_source_file": F.lit(file),
            "_source_line": F.monotonically_increasing_id() + 1,
            "_loaded_at": F.lit(None).cast("timestamp_ntz"),
        }
    )


ORDER = "ingestion_id string, order_id string, user_id string, item_id string, session_id string, quantity string, unit_price string, currency string, event_ts string, ingested_at string, _missing_fields string"
CATALOG = "item_id bigint, item_title string, category string"


def test_orders_duplicates_and_validation_codes(spark: SparkSession) -> None:
    t0, t1 = "2026-11-20T10:00:00Z", "2026-11-20T10:05:00Z"
    orders = spark.createDataFrame(
        [
            # a record and its later redelivery (the quantity tells them apart)
            ("o-0-1", "o-1", "7", "1", "s-1", "1", "10.50", "EUR", "2026-11-20T09:00:00Z", t1, None),
            ("o-0-1", "o-1", "7", "1", "s-1", "2", "10.50", "EUR", "2026-11-20T09:00:00Z", t0, None),
            # an exact tie on ingested_at: the raw event_ts text decides before the quantity does
            ("o-0-2", "o-2", "7", "1", "s-1", "1", "3", "EUR", "2026-11-20T11:00:00+02:00", t0, None),
            ("o-0-2", "o-2", "7", "1", "s-1", "5", "3", "EUR", "2026-11-20T09:00:00Z", t0, None),
            # NULL ingestion ids never group
            (None, "o-3", "8", "2", "s-2", "1", "1", "EUR", "2026-11-20T09:00:00Z", t0, None),
            (None, "o-3", "8", "2", "s-2", "1", "1", "EUR", "2026-11-20T09:00:00Z", t0, None),
            # every rule at once
            ("o-0-4", None, "x", None, "s-3", "0", "10000", "EUR", "2026-02-30T10:00:00Z", t0, None),
            ("o-0-5", "o-5", "9", "99", "s-3", None, "-1", "EUR", None, t0, None),
            # a record sent without its currency field (not the same as a null currency)
            ("o-0-6", "o-6", "7", "2", "s-4", "1", "2", None, "2026-11-20T09:00:00Z", t0, "currency"),
        ],
        ORDER,
    )
    items = spark.createDataFrame([(1, "Lamp", "home"), (2, "Book", "books")], CATALOG)
    actual = transform_orders(landed(orders), items, DateWindow()).select(
        "ingestion_id", "quantity", "event_ts", "amount", "item_title", "is_duplicate", "validation_errors", "is_valid"
    )
    nine = datetime(2026, 11, 20, 9, 0)
    expected = [
        Row("o-0-1", 1, nine, Decimal("10.50"), "Lamp", True, None, True),
        Row("o-0-1", 2, nine, Decimal("21.00"), "Lamp", False, None, True),
        Row("o-0-2", 1, nine, Decimal("3.00"), "Lamp", True, None, True),  # '...T11:00:00+02:00' sorts after
        Row("o-0-2", 5, nine, Decimal("15.00"), "Lamp", False, None, True),  # '...T09:00:00Z'
        Row(None, 1, nine, Decimal("1.00"), "Book", False, None, True),
        Row(None, 1, nine, Decimal("1.00"), "Book", False, None, True),
        Row(
            "o-0-4",
            0,
            None,
            Decimal("0.00"),
            None,
            False,
            "missing_order_id,missing_user_id,missing_item_id,invalid_event_ts,invalid_quantity,invalid_price",
            False,
        ),
        Row(
            "o-0-5",
            None,
            None,
            None,
            None,
            False,
            "invalid_event_ts,invalid_quantity,invalid_price,unknown_item",
            False,
        ),
        Row("o-0-6", 1, nine, Decimal("2.00"), "Book", False, "missing_fields", False),
    ]
    assertDataFrameEqual(actual, expected)


def test_exact_copies_tie_on_their_place_in_the_landing_files(spark: SparkSession) -> None:
    """Two deliveries equal in every field and instant: the one in the first file (byte-wise),
    then at the first line, is the original, as in dbt; silver keeps each copy's lineage."""
    ts = "2026-11-20T10:00:00Z"
    record = ("o-0-1", "o-1", "7", "1", "s-1", "1", "2", "EUR", ts, ts, None)
    copies = [("orders/b.jsonl", 1), ("orders/a.jsonl", 9), ("orders/a.jsonl", 7), ("orders/B.jsonl", 3)]
    orders = spark.createDataFrame(
        [(*record, file, line, None) for file, line in copies],
        ORDER + ", _source_file string, _source_line bigint, _loaded_at timestamp_ntz",
    )
    items = spark.createDataFrame([(1, "Lamp", "home")], CATALOG)
    actual = transform_orders(orders, items, DateWindow()).select("source_file", "source_line", "is_duplicate")
    expected = [
        Row("orders/B.jsonl", 3, False),  # 'B' (0x42) sorts before 'a' and 'b'
        Row("orders/a.jsonl", 7, True),
        Row("orders/a.jsonl", 9, True),
        Row("orders/b.jsonl", 1, True),
    ]
    assertDataFrameEqual(actual, expected)


def test_clicks_validation_codes_and_window(spark: SparkSession) -> None:
    ts = "2026-11-20T10:00:00Z"
    clicks = spark.createDataFrame(
        [
            ("c-1", "e-1", "s-1", "1", None, "search", "lamp", ts, ts, None),  # a search needs no item
            ("c-2", "e-2", "s-1", "1", None, "view", None, ts, ts, None),
            ("c-3", None, None, None, None, None, None, ts, ts, None),
            ("c-4", "e-4", "s-1", "1", "5", "VIEW", None, "2026-11-19T10:00:00Z", ts, None),  # another day
            ("c-5", "e-5", "s-1", "1", "5", "click", None, "bad", ts, None),  # undated: kept by every run
            ("c-6", "e-6", "s-1", "1", "5", "view", None, ts, ts, "query"),  # sent without a query field
        ],
        "ingestion_id string, event_id string, session_id string, user_id string, item_id string, "
        "event_type string, query string, event_ts string, ingested_at string, _missing_fields string",
    )
    one_day = DateWindow(date(2026, 11, 20), date(2026, 11, 20))
    actual = transform_clicks(landed(clicks), one_day).select("ingestion_id", "event_date", "validation_errors")
    expected = [
        Row("c-1", date(2026, 11, 20), None),
        Row("c-2", date(2026, 11, 20), "missing_item_id"),
        Row(
            "c-3",
            date(2026, 11, 20),
            "missing_event_id,missing_user_id,missing_session_id,invalid_event_type,missing_item_id",
        ),
        Row("c-5", None, "invalid_event_ts"),
        Row("c-6", date(2026, 11, 20), "missing_fields"),
    ]
    assertDataFrameEqual(actual, expected)
    assert actual.schema["event_date"].dataType == T.DateType()
