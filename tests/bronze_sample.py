"""A hand-written bronze set: a few dozen raw rows with every defect the data contract handles.

Redeliveries (later, earlier, and tied copies), NULL ingestion ids, every validation code, records
that lack a field entirely (not the same as null), numbers that do not parse, timestamps with offsets that cross midnight, without offset and with fractions,
unknown items, unicode and quotes, and no order on 2026-11-20 (growth after a missing day).

Events are grouped by landed file, so that a test can load them in increments like the file loader
does. tests/test_models_contract.py spells out every silver and gold row this set must give.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from tests.dbt_support import CLICK_FIELDS, ORDER_FIELDS

LOADED_AT = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


USERS = [
    # user_id, email, display_name, iris_code, birth_year, marketing_opt_in, signup_at
    (10, "user10@example.com", "Zoë O'Brien", "2A0040101", 1990, 1, "2026-01-01 09:00:00"),
    (11, "user11@example.com", "José García", "060880101", 1985, 0, "2026-11-18 08:00:00"),
    (12, "user12@example.com", 'Mary "May" Smith', None, None, 1, "2025-06-01 12:00:00"),
    (13, None, "李雷", "751010101", 2000, None, "2025-01-01 00:00:00"),
    (14, "user14@example.com", "Ørjan", "2B0330101", 1970, 1, "2024-03-01 10:00:00"),
]

ITEMS = [
    # item_id, title, category, price, stock, is_active, is_adult
    (1, "Crème lamp", "home", "20.00", 5, True, False),
    (2, "L'Original novel", "books", "10.00", 0, True, False),
    (3, "Mini guitar", "music", "99.99", 3, False, False),
    (4, "Adult thing", "beauty", "15.00", 2, True, True),
    (5, 'Vintage "scarf"', "fashion", "30.00", 10, True, False),
    (6, "Handmade teapot", "home", "5.00", 4, True, False),
]

ORDER_FILES: dict[str, list[tuple[str | None, ...]]] = {
    # ingestion_id, order_id, user_id, item_id, session_id, quantity, unit_price, currency, event_ts, ingested_at
    "orders/dt=2026-11-18/part-0.jsonl": [
        ("orders-0-1", "o-1", "10", "1", "s-1", "2", "20.00", "EUR", "2026-11-18T10:00:00Z", "2026-11-18T10:00:05Z"),
        ("orders-0-2", "o-1", "10", "5", "s-1", "1", "30.00", "EUR", "2026-11-18T10:00:00Z", "2026-11-18T10:00:06Z"),
        # +02:00 crosses midnight back to 2026-11-18; an earlier copy lands in the next file
        (
            "orders-0-3",
            "o-2",
            "11",
            "1",
            "s-2",
            "1",
            "20.00",
            "EUR",
            "2026-11-19T01:30:00+02:00",
            "2026-11-18T23:30:10Z",
        ),
        # later redelivery of orders-0-1
        ("orders-0-1", "o-1", "10", "1", "s-1", "2", "20.00", "EUR", "2026-11-18T10:00:00Z", "2026-11-18T12:00:00Z"),
        # no ingestion id: never a duplicate, even twice
        (None, "o-3", "12", "5", "s-3", "1", "30.00", "EUR", "2026-11-18T15:00:00Z", "2026-11-18T15:00:01Z"),
        (None, "o-3", "12", "5", "s-3", "1", "30.00", "EUR", "2026-11-18T15:00:00Z", "2026-11-18T15:00:01Z"),
        ("orders-0-7", None, "10", "1", "s-1", "1", "20.00", "EUR", "2026-11-18T10:05:00Z", "2026-11-18T10:05:01Z"),
        ("orders-0-8", "o-4", "abc", None, "s-4", "0", "-1.00", "EUR", "2026-02-30T10:00:00Z", "2026-11-18T10:06:00Z"),
        ("orders-0-9", "o-5", "10", "1", "s-5", "1", "10000.00", "EUR", "2026-11-18T11:00:00Z", "2026-11-18T11:00:01Z"),
        ("orders-0-10", "o-6", "12", "999", "s-6", "1", "5.00", "EUR", "2026-11-18T12:00:00Z", "2026-11-18T12:00:01Z"),
        ("orders-0-11", "o-7", "12", "1", "s-7", None, "20.00", "EUR", "2026-11-18T13:00:00Z", "2026-11-18T13:00:01Z"),
        ("orders-0-12", "o-8x", "12", "1", "s-7", "1.5", None, "EUR", "not-a-timestamp", "2026-11-18T13:30:00Z"),
        (
            "orders-0-13",
            "o-13",
            "13",
            "4",
            "s-13",
            "1",
            "9999.99",
            "EUR",
            "2026-11-18T15:30:00.5Z",
            "2026-11-18T15:30:01Z",
        ),
        # sent without a currency field at all (MISSING_FIELDS): not the same as a null currency
        ("orders-0-14", "o-15", "12", "5", "s-15", "1", "30.00", None, "2026-11-18T16:00:00Z", "2026-11-18T16:00:01Z"),
    ],
    "orders/dt=2026-11-19/part-0.jsonl": [
        ("orders-1-1", "o-8", "11", "2", "s-8", "1", "10.00", "EUR", "2026-11-19T09:00:00Z", "2026-11-19T09:00:05Z"),
        # same ingested_at: the raw event_ts text decides ("...T09" < "...T10")
        (
            "orders-1-1",
            "o-8",
            "11",
            "2",
            "s-8",
            "1",
            "10.00",
            "EUR",
            "2026-11-19T10:00:00+01:00",
            "2026-11-19T09:00:05Z",
        ),
        ("orders-1-3", "o-9", "12", "5", "s-9", "2", "30.00", "EUR", "2026-11-19T20:00:00Z", "2026-11-19T20:00:01Z"),
        # identical copy: the landing line decides
        ("orders-1-3", "o-9", "12", "5", "s-9", "2", "30.00", "EUR", "2026-11-19T20:00:00Z", "2026-11-19T20:00:01Z"),
        (
            "orders-1-5",
            "o-10",
            "10",
            "1",
            "s-10",
            "1",
            "20.00",
            "EUR",
            "2026-11-19T08:15:00.123456Z",
            "2026-11-19T08:15:01Z",
        ),
        # an earlier copy of orders-0-3, landing later: it is the original
        (
            "orders-0-3",
            "o-2",
            "11",
            "1",
            "s-2",
            "1",
            "20.00",
            "EUR",
            "2026-11-19T01:30:00+02:00",
            "2026-11-18T23:30:09Z",
        ),
    ],
    # nothing on 2026-11-20
    "orders/dt=2026-11-21/part-0.jsonl": [
        (
            "orders-3-1",
            "o-11",
            "10",
            "5",
            "s-11",
            "3",
            "30.00",
            "EUR",
            "2026-11-21T09:00:00-05:00",
            "2026-11-21T14:00:02Z",
        ),
        ("orders-3-2", "o-12", "12", "1", "s-12", "1", "20.01", "EUR", "2026-11-21T18:00:00", "2026-11-21T18:00:01Z"),
        (
            "orders-3-3",
            "o-11",
            "10",
            "6",
            "s-11",
            "1",
            "5.00",
            "EUR",
            "2026-11-21T09:00:00-05:00",
            "2026-11-21T14:00:03Z",
        ),
        # user 14's first order
        ("orders-3-4", "o-14", "14", "1", "s-14", "1", "20.00", "EUR", "2026-11-21T18:30:00Z", "2026-11-21T18:30:01Z"),
    ],
}

CLICK_FILES: dict[str, list[tuple[str | None, ...]]] = {
    # ingestion_id, event_id, session_id, user_id, item_id, event_type, query, event_ts, ingested_at
    "clicks/dt=2026-11-18/part-0.jsonl": [
        (
            "clicks-0-1",
            "e-1",
            "s-1",
            "10",
            None,
            "search",
            'crème "lamp"',
            "2026-11-18T09:58:00Z",
            "2026-11-18T09:58:01Z",
        ),
        ("clicks-0-2", "e-2", "s-1", "10", "1", "view", None, "2026-11-18T09:58:30Z", "2026-11-18T09:58:31Z"),
        ("clicks-0-3", "e-3", "s-1", "10", "1", "click", None, "2026-11-18T09:59:00Z", "2026-11-18T09:59:01Z"),
        ("clicks-0-4", "e-4", "s-1", "10", "1", "add_to_cart", None, "2026-11-18T09:59:30Z", "2026-11-18T09:59:31Z"),
        ("clicks-0-2", "e-2", "s-1", "10", "1", "view", None, "2026-11-18T09:58:30Z", "2026-11-18T11:00:00Z"),
        # session s-2 crosses midnight (UTC)
        ("clicks-0-6", "e-6", "s-2", "11", "1", "view", None, "2026-11-19T01:20:00+02:00", "2026-11-18T23:20:01Z"),
        ("clicks-0-7", "e-7", "s-2", "11", "2", "view", None, "2026-11-19T00:10:00Z", "2026-11-19T00:10:01Z"),
        ("clicks-0-8", "e-8", "s-3", "12", "5", "VIEW", None, "2026-11-18T14:01:00Z", "2026-11-18T14:01:01Z"),
        ("clicks-0-9", "e-9", "s-3", "12", None, None, None, "2026-11-18T14:02:00Z", "2026-11-18T14:02:01Z"),
        ("clicks-0-10", None, None, "12", "5", "view", None, "2026-11-18T14:03:00Z", "2026-11-18T14:03:01Z"),
        ("clicks-0-11", "e-11", "s-3", "x", "5", "view", None, "2026-11-18T14:04:00Z", "2026-11-18T14:04:01Z"),
        ("clicks-0-12", "e-12", "s-3", "12", None, "view", None, "2026-11-18T14:05:00Z", "2026-11-18T14:05:01Z"),
        ("clicks-0-13", "e-13", "s-3", "12", "5", "view", None, "2026-11-20 25:61:00", "2026-11-18T14:06:01Z"),
        (None, "e-14", "s-3", "12", None, "search", "back\\slash", "2026-11-18T14:00:00Z", "2026-11-18T14:00:01Z"),
        ("clicks-0-15", "e-15", "s-3", "12", "5", "view", None, "2026-11-18T14:10:00Z", "2026-11-18T14:10:01Z"),
        # same ingestion id, same ingested_at and event_ts: event_id decides ("e-15" < "e-16")
        ("clicks-0-15", "e-16", "s-3", "12", "5", "view", None, "2026-11-18T14:10:00Z", "2026-11-18T14:10:01Z"),
        ("clicks-0-17", "e-17", "s-3", "12", "5", "add_to_cart", None, "2026-11-18T14:11:00Z", "2026-11-18T14:11:01Z"),
        ("clicks-0-18", "e-18", "s-3", "12", "1", "view", None, "2026-11-18T14:20:00Z", "2026-11-18T14:20:01Z"),
        # sent without query and ingestion_id fields (MISSING_FIELDS)
        (None, "e-19", "s-3", "12", "1", "view", None, "2026-11-18T14:21:00Z", "2026-11-18T14:21:01Z"),
    ],
    "clicks/dt=2026-11-21/part-0.jsonl": [
        (
            "clicks-3-1",
            "e-21",
            "s-20",
            "12",
            None,
            "search",
            "café crème",
            "2026-11-21T17:00:00Z",
            "2026-11-21T17:00:01Z",
        ),
        (
            "clicks-3-2",
            "e-22",
            "s-21",
            "13",
            None,
            "search",
            "yoga mat 🧘",
            "2026-11-21T17:30:00Z",
            "2026-11-21T17:30:01Z",
        ),
        ("clicks-3-3", "e-23", "s-21", "13", "3", "view", None, "2026-11-21T17:31:00Z", "2026-11-21T17:31:01Z"),
        ("clicks-3-4", "e-24", "s-22", "10", "999", "view", None, "2026-11-21T19:00:00Z", "2026-11-21T19:00:01Z"),
    ],
}


# (file, line) -> the contract fields the record lacked entirely (the loader's `_missing_fields`)
MISSING_FIELDS: dict[tuple[str, int], str] = {
    ("orders/dt=2026-11-18/part-0.jsonl", 14): "currency",
    ("clicks/dt=2026-11-18/part-0.jsonl", 19): "ingestion_id,query",
}


def user_rows(loaded_at: datetime = LOADED_AT) -> list[dict[str, Any]]:
    return [
        {
            "user_id": user_id,
            "email": email,
            "display_name": name,
            "iris_code": iris,
            "birth_year": birth_year,
            "marketing_opt_in": opt_in,
            "signup_at": _ts(signup),
            "updated_at": _ts(signup),
            "last_login_at": None,
            "_loaded_at": loaded_at,
        }
        for user_id, email, name, iris, birth_year, opt_in, signup in USERS
    ]


def item_rows(items: Iterable[tuple[Any, ...]] = ITEMS, loaded_at: datetime = LOADED_AT) -> list[dict[str, Any]]:
    return [
        {
            "item_id": item_id,
            "title": title,
            "category": category,
            "price": price,
            "stock": stock,
            "is_active": active,
            "is_adult": adult,
            "created_at": _ts("2026-06-01 00:00:00"),
            "updated_at": _ts("2026-06-01 00:00:00"),
            "_loaded_at": loaded_at,
        }
        for item_id, title, category, price, stock, active, adult in items
    ]


def event_rows(
    fields: tuple[str, ...], files: Mapping[str, Sequence[tuple[str | None, ...]]], loaded_at: datetime
) -> list[dict[str, Any]]:
    """Bronze rows of landed files as the file loader appends them: one per record, numbered by line."""
    rows = []
    for name, records in files.items():
        for line, record in enumerate(records, start=1):
            fields_and_values = dict(zip(fields, record, strict=True))
            rows.append(
                {
                    **fields_and_values,
                    "_source_file": name,
                    "_source_line": line,
                    "_loaded_at": loaded_at,
                    "_missing_fields": MISSING_FIELDS.get((name, line)),
                }
            )
    return rows


def order_rows(files: Iterable[str] = tuple(ORDER_FILES), loaded_at: datetime = LOADED_AT) -> list[dict[str, Any]]:
    return event_rows(ORDER_FIELDS, {name: ORDER_FILES[name] for name in files}, loaded_at)


def click_rows(files: Iterable[str] = tuple(CLICK_FILES), loaded_at: datetime = LOADED_AT) -> list[dict[str, Any]]:
    return event_rows(CLICK_FIELDS, {name: CLICK_FILES[name] for name in files}, loaded_at)


def all_raw_rows() -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {
        ("raw_app", "users"): user_rows(),
        ("raw_catalog", "items"): item_rows(),
        ("bronze", "orders"): order_rows(),
        ("bronze", "clicks"): click_rows(),
    }
