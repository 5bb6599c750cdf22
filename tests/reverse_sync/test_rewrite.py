"""A Postgres upsert / mirror run where most records changed empties the table and writes it whole
(``rewrite_above_pct``), and only where that leaves the table exactly as the upsert would: each
test reads the destination back, and tells the two writes apart by the table's file node (a
TRUNCATE gives the table a new one; an upsert keeps it)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import psycopg
import pytest

from reverse_etl.engine import SyncResult
from reverse_etl.spec import SyncSpec

from .conftest import Harness
from .test_world_faults import run

pytestmark = pytest.mark.postgres


def things(n: int, price_step: float = 0.5, dropped: int = 0, added: int = 0) -> str:
    """``n`` records (the first ``dropped`` left out, ``added`` more at the end); every price moves
    with ``price_step``."""
    return f"""select (i // 10)::integer as shop_id, 's' || (i % 10) as sku, 'label ' || i as label,
                      (i + {price_step})::decimal(10, 2) as price
               from range({dropped}, {n + added}) r(i)"""


def mirror(h: Harness, **settings: Any) -> SyncSpec:
    return h.variant("shop_things", "things_rewrite", "things", batch_rows=1000, **settings)


def counts(result: SyncResult) -> dict[str, int]:
    assert result.error is None, result.error
    found = result.counts.as_dict()
    return {k: v for k, v in found.items() if v}


def held(h: Harness) -> set[tuple[Any, ...]]:
    return {(r[0], r[1], r[2], str(r[3])) for r in h.sql("select shop_id, sku, title, price from shop.things")}


def expected(h: Harness, n: int, price_step: float, dropped: int = 0, added: int = 0) -> set[tuple[Any, ...]]:
    return {(i // 10, f"s{i % 10}", f"label {i}", f"{i + price_step:.2f}") for i in range(dropped, n + added)}


def filenode(h: Harness) -> int:
    return int(h.sql("select pg_relation_filenode('shop.things')")[0][0])


def test_every_record_changed_writes_the_table_whole_keeping_what_hangs_on_it(harness: Harness) -> None:
    spec = mirror(harness)
    harness.model("things", things(300))
    assert counts(harness.run(spec)) == {"read": 300, "inserted": 300}
    # what people hang on a table the sync writes: a view, an index, a grant, a comment
    harness.sql("create view shop.cheap_things as select shop_id, sku, price from shop.things where price < 50")
    harness.sql("create index things_by_title on shop.things (title)")
    harness.sql("create role things_reader")
    harness.sql("grant select on shop.things to things_reader")
    harness.sql("comment on table shop.things is 'kept'")
    oid, node = harness.sql("select 'shop.things'::regclass::oid")[0][0], filenode(harness)

    # every price moves, 20 records leave the mart, 10 arrive
    harness.model("things", things(300, price_step=0.75, dropped=20, added=10))
    result = harness.run(spec)

    assert counts(result) == {"read": 290, "inserted": 10, "updated": 280, "deleted": 20}
    assert held(harness) == expected(harness, 300, 0.75, dropped=20, added=10)
    assert filenode(harness) != node  # written whole
    assert harness.sql("select 'shop.things'::regclass::oid")[0][0] == oid
    assert harness.sql("select count(*), min(price)::text from shop.cheap_things") == [(30, "20.75")]
    assert harness.sql("select indexrelid::regclass::text from pg_index where indrelid = 'shop.things'::regclass "
                       "and not indisprimary") == [("shop.things_by_title",)]  # fmt: skip
    assert harness.sql("select has_table_privilege('things_reader', 'shop.things', 'select')") == [(True,)]
    assert harness.sql("select obj_description('shop.things'::regclass)") == [("kept",)]
    assert harness.owned(spec.name) == sorted((i // 10, f"s{i % 10}") for i in range(20, 310))

    # the state was recorded as of the rewrite: the next run finds nothing to write
    node = filenode(harness)
    assert counts(harness.run(spec)) == {"read": 290, "unchanged": 290}
    assert filenode(harness) == node


def test_a_few_changed_records_are_upserted(harness: Harness) -> None:
    spec = mirror(harness)
    harness.model("things", things(300))
    harness.run(spec)
    node = filenode(harness)
    harness.model("things", things(300, dropped=50, added=50))  # a third of the records: new or gone

    assert counts(harness.run(spec)) == {"read": 300, "inserted": 50, "unchanged": 250, "deleted": 50}
    assert filenode(harness) == node
    assert held(harness) == expected(harness, 300, 0.5, dropped=50, added=50)


def test_the_threshold_is_a_setting(harness: Harness) -> None:
    spec = mirror(harness, rewrite_above_pct=100)  # never
    harness.model("things", things(300))
    harness.run(spec)
    node = filenode(harness)
    harness.model("things", things(300, price_step=0.75))

    assert counts(harness.run(spec)) == {"read": 300, "updated": 300}
    assert filenode(harness) == node
    assert held(harness) == expected(harness, 300, 0.75)


# what an upsert keeps and a rewrite would lose: each keeps the upsert, whatever the share changed
KEPT = {
    "a row the app inserted": ("insert into shop.things values (999, 'app', 'the app''s', 1)", None),
    "a column people fill": (
        "alter table shop.things add column notes text; update shop.things set notes = 'call back' where shop_id = 3",
        None,
    ),
    "a trigger": (
        """create table shop.audit (op text);
           create function shop.audit() returns trigger language plpgsql as
             $$ begin insert into shop.audit values (tg_op); return new; end $$;
           create trigger audit after insert or update on shop.things for each row execute function shop.audit()""",
        "select op, count(*) from shop.audit group by op",
    ),
    "a foreign key that points at it": (
        """create table shop.orders (shop_id int, sku text, foreign key (shop_id, sku) references shop.things);
           insert into shop.orders values (1, 's1')""",
        "select count(*) from shop.orders",
    ),
    "row-level security": ("alter table shop.things enable row level security", None),
    "a publication (change data capture)": ("create publication things_changes for table shop.things", None),
}


@pytest.mark.parametrize("what", list(KEPT))
def test_what_a_rewrite_would_lose_keeps_the_upsert(harness: Harness, what: str) -> None:
    spec = mirror(harness)
    harness.model("things", things(300))
    harness.run(spec)
    setup, probe = KEPT[what]
    harness.sql(setup)
    node = filenode(harness)
    harness.model("things", things(300, price_step=0.75))

    assert counts(harness.run(spec)) == {"read": 300, "updated": 300}
    assert filenode(harness) == node
    assert expected(harness, 300, 0.75) <= held(harness)
    if what == "a row the app inserted":
        assert harness.sql("select title from shop.things where shop_id = 999") == [("the app's",)]
    if what == "a column people fill":
        assert harness.sql("select count(*) from shop.things where notes = 'call back'") == [(10,)]
    if what == "a trigger":
        assert dict(harness.sql(probe or "")) == {"UPDATE": 300}  # each row updated, none inserted again
    if what == "a foreign key that points at it":
        assert harness.sql(probe or "") == [(1,)]


def test_a_reader_in_an_open_transaction_keeps_the_upsert_and_is_not_waited_for(harness: Harness) -> None:
    """An app's session that read the table and left its transaction open holds a lock TRUNCATE
    would wait for (until that session ends): the run upserts instead, beside the reader."""
    spec = mirror(harness)
    harness.model("things", things(300))
    harness.run(spec)
    node = filenode(harness)
    harness.model("things", things(300, price_step=0.75))
    with psycopg.connect(harness.postgres.url()) as reader:
        assert reader.execute("select count(*) from shop.things").fetchone() == (300,)  # its transaction stays open
        started = time.monotonic()
        assert counts(harness.run(spec)) == {"read": 300, "updated": 300}
        assert time.monotonic() - started < 30
        assert reader.execute("select count(*) from shop.things").fetchone() == (300,)
    assert filenode(harness) == node
    assert held(harness) == expected(harness, 300, 0.75)


def test_an_upsert_whose_mart_dropped_records_keeps_them(harness: Harness) -> None:
    """upsert never deletes: rows it wrote that the mart lost stay, so the table is not rewritten."""
    spec = mirror(harness, mode="upsert")
    harness.model("things", things(300))
    harness.run(spec)
    harness.model("things", things(300, price_step=0.75, dropped=30))

    assert counts(harness.run(spec)) == {"read": 270, "updated": 270}
    assert held(harness) == expected(harness, 30, 0.5) | expected(harness, 300, 0.75, dropped=30)


def test_a_hand_edited_table_is_healed_by_the_upsert_not_rewritten(harness: Harness) -> None:
    spec = mirror(harness)
    harness.model("things", things(300))
    harness.run(spec)
    harness.sql("update shop.things set title = 'edited' where shop_id < 5")
    node = filenode(harness)
    harness.model("things", things(300, price_step=0.75))

    result = harness.run(spec)
    assert result.error is None, result.error
    assert filenode(harness) == node
    assert held(harness) == expected(harness, 300, 0.75)


def test_a_failed_rewrite_leaves_the_table_as_it_was(harness: Harness) -> None:
    spec = mirror(harness)
    harness.model("things", things(300))
    harness.run(spec)
    before = held(harness)
    harness.sql("alter table shop.things add constraint cheap check (price < 290) not valid")  # the last rows break it
    harness.model("things", things(300, price_step=0.75))

    result = harness.run(spec)

    assert result.error is not None and "cheap" in result.error
    assert held(harness) == before
    harness.sql("alter table shop.things drop constraint cheap")
    assert counts(harness.run(spec)) == {"read": 300, "updated": 300}
    assert held(harness) == expected(harness, 300, 0.75)


def test_a_role_without_the_truncate_privilege_upserts(harness: Harness) -> None:
    """The app owns the table and grants the sync's role what an upsert needs, not TRUNCATE:
    a rewrite would fail every run where most records changed ("permission denied")."""
    harness.sql("create role syncer login")
    harness.sql(f'grant create on database "{harness.postgres.dbname}" to syncer')
    harness.sql("create schema shop")
    harness.sql("grant usage on schema shop to syncer")
    harness.sql(
        "create table shop.things (shop_id int, sku text, title text, price numeric(10, 2), primary key (shop_id, sku))"
    )
    harness.sql("grant select, insert, update, delete on shop.things to syncer")
    as_syncer = dataclasses.replace(harness.postgres, user="syncer", password="").url()
    spec = mirror(harness)
    harness.model("things", things(300))
    assert counts(run(harness, spec, pg_url=as_syncer)) == {"read": 300, "inserted": 300}
    node = filenode(harness)
    harness.model("things", things(300, price_step=0.75))

    assert counts(run(harness, spec, pg_url=as_syncer)) == {"read": 300, "updated": 300}
    assert filenode(harness) == node
    assert held(harness) == expected(harness, 300, 0.75)
