"""The generator: deterministic, sized by its flags, and carrying every defect of the data contract (docs/contract.md)."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from roundtrip.core.contract import BRONZE_FIELDS
from roundtrip.dev.sample_data import SampleConfig, generate
from roundtrip.dev.sample_data import model as m

SMALL = SampleConfig(seed=7, users=300, items=120, orders=6_000, clicks=15_000, days=10, end_date=date(2026, 11, 20))


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.*"))}


def _events(folder: Path, stream: str) -> duckdb.DuckDBPyRelation:
    con = duckdb.connect()
    return con.sql(
        f"select * from read_json('{folder}/{stream}/*/*.jsonl', format='newline_delimited', "
        "hive_partitioning=false, columns={" + ", ".join(f"'{c}': 'varchar'" for c in _COLUMNS[stream]) + "})"
    )


_COLUMNS = BRONZE_FIELDS


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    for run in ("a", "b"):
        generate(SMALL, tmp_path / run / "app.db", tmp_path / run / "landing", None)
    assert _digest(tmp_path / "a" / "landing") == _digest(tmp_path / "b" / "landing")
    assert m.users_table(SMALL).equals(m.users_table(SMALL))
    other = SampleConfig(**{**SMALL.__dict__, "seed": 8})
    assert not m.users_table(other).equals(m.users_table(SMALL))


def test_sizes_follow_the_flags(tmp_path: Path) -> None:
    report = generate(SMALL, tmp_path / "app.db", tmp_path / "landing", None)
    assert report.users == 300
    # redeliveries come on top of the requested records
    assert SMALL.orders <= report.orders <= SMALL.orders * 1.03
    assert SMALL.clicks * 0.9 <= report.clicks <= SMALL.clicks * 1.1
    days = {p.name for p in (tmp_path / "landing" / "orders").iterdir()}
    assert all(d.startswith("dt=2026-1") for d in days) and len(days) >= SMALL.days


def test_every_defect_kind_is_present(tmp_path: Path) -> None:
    cfg = SampleConfig(**{**SMALL.__dict__, "orders": 40_000, "clicks": 40_000})
    generate(cfg, tmp_path / "app.db", tmp_path / "landing", None)
    orders = _events(tmp_path / "landing", "orders")
    counts = orders.aggregate(
        """
        count(*) filter (where ingestion_id is null) as null_ingestion,
        count(*) - count(distinct ingestion_id) - count(*) filter (where ingestion_id is null) as redelivered,
        count(*) filter (where order_id is null) as null_order,
        count(*) filter (where user_id is null) as null_user,
        count(*) filter (where item_id is null) as null_item,
        count(*) filter (where try_cast(quantity as int) <= 0 or quantity is null) as bad_quantity,
        count(*) filter (where unit_price is null) as null_price,
        count(*) filter (where try_cast(unit_price as decimal(12,2)) <= 0) as non_positive_price,
        count(*) filter (where try_cast(unit_price as decimal(12,2)) >= 10000) as huge_price,
        count(*) filter (where try_cast(item_id as bigint) > 120) as unknown_item,
        count(*) filter (where event_ts is null or try_cast(event_ts as timestamptz) is null) as bad_ts,
        count(*) filter (where regexp_matches(event_ts, '[+-][0-9]{2}:[0-9]{2}$')) as offset_ts
        """
    ).fetchone()
    assert counts is not None and all(c > 0 for c in counts), counts
    ties = orders.query(
        "o",
        "select count(*) from (select ingestion_id, ingested_at from o "
        "where ingestion_id is not null group by all having count(*) > 1)",
    ).fetchone()
    assert ties is not None and ties[0] > 0, "redeliveries with the very same ingested_at (ties)"
    clicks = _events(tmp_path / "landing", "clicks")
    c = clicks.aggregate(
        """
        count(*) filter (where event_type not in ('search', 'view', 'click', 'add_to_cart') or event_type is null),
        count(*) filter (where event_type = 'search' and item_id is null),
        count(*) filter (where event_type <> 'search' and item_id is null),
        count(*) filter (where session_id is null),
        count(*) filter (where query like '%''%' or query like '%"%'),
        count(*) filter (where regexp_matches(query, '[^\\x00-\\x7F]'))
        """
    ).fetchone()
    assert c is not None and all(x > 0 for x in c), c


def test_codes_and_text_keep_their_exact_form() -> None:
    users = m.users_table(SMALL)
    codes = set(users.column("iris_code").drop_null().to_pylist())
    assert {"2A0040101", "2B0330101"} & codes, "Corsican IRIS codes are used"
    assert any(code.startswith("0") for code in codes), "codes with a leading zero are used"
    assert users.schema.field("signup_at").type == pa.float64()
    names = users.column("display_name").to_pylist()
    assert any("'" in n for n in names) and any('"' in n for n in names) and any(not n.isascii() for n in names)


@pytest.mark.slow
def test_a_million_orders_take_seconds_not_minutes(tmp_path: Path) -> None:
    """Vectorized generation: about 1 M order lines + 1 M clicks, the scale of `make bench`."""
    import time

    cfg = SampleConfig(seed=1, users=50_000, items=5_000, orders=1_200_000, clicks=300_000, days=30)
    started = time.perf_counter()
    report = generate(cfg, tmp_path / "app.db", tmp_path / "landing", None)
    seconds = time.perf_counter() - started
    # printed, not asserted: speed is measured by benchmarks, not by timed tests
    print(f"generated {report.orders + report.clicks:,} events in {seconds:.1f}s")
    assert report.orders >= 1_200_000
    # two chunks: ids must not restart in the second one (an order belongs to one session)
    orders = _events(tmp_path / "landing", "orders")
    clashes = orders.query(
        "o",
        "select count(*) from (select order_id from o where order_id is not null "
        "group by order_id having count(distinct session_id) > 1)",
    ).fetchone()
    assert clashes == (0,)
    assert orders.query("o", "select count(distinct order_id) from o").fetchone()[0] > 700_000
