"""Every mode, read from each warehouse dbt builds on: DuckDB, Postgres and BigQuery (the
emulator, through the Storage Read API). Against the real Postgres and Redis, the destination
equals the mart row for row after a first run, after a run with changes, and after an unchanged
run, which writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import redis

from reverse_etl.engine import Connections, RunOptions, SyncResult, run_sync
from reverse_etl.spec import load_specs
from roundtrip.core.duckdb_extensions import connect
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.dev.services import PostgresEndpoint, RedisEndpoint

from .conftest import FIXTURE_PROJECT

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
SOURCES = ["duckdb", "postgres", pytest.param("bigquery", marks=pytest.mark.bigquery)]


def _parse(target: str, out: Path, env: dict[str, str]) -> Path:
    """`dbt parse` of the fixture project for ``target``: its manifest names that warehouse."""
    subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), "--quiet", "parse", "--project-dir", str(FIXTURE_PROJECT),
         "--profiles-dir", str(PROJECT_ROOT / "profiles"), "--target", target, "--target-path", str(out / "target"),
         "--log-path", str(out / "logs")],
        check=True, env={**os.environ, **env, "ROUNDTRIP_TARGET": target}, cwd=FIXTURE_PROJECT,
    )  # fmt: skip
    return out / "target" / "manifest.json"


class Models:
    """Builds the fixture's models in one warehouse: rows written as DuckDB SQL, pushed there
    (``pg``: the Postgres warehouse, a database of its own next to the destination's)."""

    def __init__(self, source: str, root: Path, pg: PostgresEndpoint, emulator: Any) -> None:
        self.source, self.root, self.pg, self.emulator = source, root, pg, emulator
        self.duckdb = root / "warehouse.duckdb"

    def build(self, name: str, select_sql: str) -> None:
        con = connect(self.duckdb, extensions=("postgres",) if self.source == "postgres" else ())
        try:
            con.execute("create schema if not exists marts")
            con.execute(f"create or replace table marts.{name} as {select_sql}")
            if self.source == "postgres":
                con.execute(f"attach '{self.pg.url()}' as pg (type postgres)")
                con.execute("create schema if not exists pg.marts")
                con.execute(f"drop table if exists pg.marts.{name}")
                con.execute(f"create table pg.marts.{name} as select * from marts.{name}")
                con.execute("detach pg")
            elif self.source == "bigquery":
                self._to_bigquery(name, con.execute(f"select * from marts.{name}").to_arrow_table())
        finally:
            con.close()

    def _to_bigquery(self, name: str, table: Any) -> None:
        from loaders.warehouse.bigquery import BigQuerySettings, BigQueryWarehouse

        settings = BigQuerySettings(
            project=self.emulator.project,
            location="US",
            api_endpoint=self.emulator.rest_url,
            storage_endpoint=self.emulator.grpc_endpoint,
        )
        warehouse = BigQueryWarehouse(settings)
        try:
            warehouse.replace("marts", name, [table])
        finally:
            warehouse.close()

    def rows(self, name: str) -> list[dict[str, Any]]:
        """The mart as the warehouse holds it now (the truth the destination must equal)."""
        if self.source == "postgres":
            with psycopg.connect(self.pg.url()) as conn:
                cur = conn.execute(f"select * from marts.{name}")
                names = [d.name for d in cur.description or []]
                return [dict(zip(names, r)) for r in cur.fetchall()]
        if self.source == "bigquery":
            client = self.emulator.client()
            return [dict(r.items()) for r in client.query(f"select * from marts.{name}").result()]
        con = duckdb.connect(str(self.duckdb), read_only=True)
        try:
            return con.execute(f"select * from marts.{name}").to_arrow_table().to_pylist()
        finally:
            con.close()


@dataclass
class World:
    models: Models
    destination: PostgresEndpoint
    redis_url: str
    run: Callable[[str], SyncResult]


@pytest.fixture
def warehouse_db(postgres: PostgresEndpoint) -> Iterator[PostgresEndpoint]:
    """The Postgres warehouse: a database of its own, as in production."""
    name = f"wh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield PostgresEndpoint(postgres.host, postgres.port, postgres.user, name, postgres.password, postgres.external)
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(params=SOURCES)
def world(
    request: pytest.FixtureRequest,
    data_dir: Path,
    pg_database: PostgresEndpoint,
    warehouse_db: PostgresEndpoint,
    redis_endpoint: RedisEndpoint,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    source: str = request.param
    emulator = None
    env: dict[str, str] = {}
    if source == "bigquery":
        emulator = request.getfixturevalue("bigquery_emulator")
        env = {**emulator.dbt_env("marts"), "ROUNDTRIP_BQ_LOCATION": "US"}
    elif source == "postgres":
        env = {"ROUNDTRIP_WAREHOUSE_URL": warehouse_db.url()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    manifest = _parse(source, tmp_path_factory.mktemp(f"manifest_{source}"), env)
    specs = {s.name: s for s in load_specs(manifest, target=source)}
    assert {s.warehouse for s in specs.values()} == {source}
    endpoints = Connections.of(postgres_url=pg_database.url(), redis_url=redis_endpoint.url())

    def run(sync: str) -> SyncResult:
        spec = specs[sync]
        if spec.mode == "replace":  # the serving refresh does not depend on the source (test_replace.py)
            spec = spec.model_copy(update={"refresh": []})
        result = run_sync(spec, endpoints, RunOptions(dbt_project_dir=FIXTURE_PROJECT))
        assert result.error is None, result.error
        return result

    return World(Models(source, data_dir, warehouse_db, emulator), pg_database, redis_endpoint.url(), run)


def _pg(endpoint: PostgresEndpoint, query: str) -> list[dict[str, Any]]:
    with psycopg.connect(endpoint.url()) as conn:
        cur = conn.execute(query)
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r)) for r in cur.fetchall()]


def _num(value: Any) -> Any:
    """Numbers compare by value: BigQuery's NUMERIC comes back with 9 decimals, DuckDB's with 2."""
    return Decimal(str(value)).normalize() if isinstance(value, (Decimal, float)) else value


def _as_set(rows: list[dict[str, Any]], columns: list[str]) -> set[tuple[Any, ...]]:
    return {tuple(_num(r[c]) for c in columns) for r in rows}


def _writes(result: SyncResult) -> int:
    c = result.counts
    return c.inserted + c.updated + c.deleted + c.healed


SEGMENTS = "t(user_id, email, segment, lifetime_value, order_count)"
THINGS = "t(shop_id, sku, label, price)"
TRIGGERS = "t(trigger_id, user_id, trigger_type, payload)"
ITEMS = "t(item_id, title, price)"


def test_postgres_modes_equal_the_mart_from_every_warehouse(world: World) -> None:
    models, pg, run = world.models, world.destination, world.run

    def check(queue: set[tuple[str, str]]) -> None:
        columns = ["user_id", "email", "segment", "lifetime_value"]
        assert _as_set(_pg(pg, "select * from crm.segments"), columns) == _as_set(models.rows("segments"), columns)
        things = {(r["shop_id"], r["sku"], r["label"], _num(r["price"])) for r in models.rows("things")}
        written = {(r["shop_id"], r["sku"], r["title"], _num(r["price"])) for r in _pg(pg, "select * from shop.things")}
        assert written == things
        assert _as_set(_pg(pg, "select * from crm.email_queue"), ["trigger_id", "payload"]) == queue
        columns = ["item_id", "title", "price"]
        assert _as_set(_pg(pg, "select * from marts.items_export"), columns) == _as_set(
            models.rows("items_export"), columns
        )

    models.build(
        "segments",
        f"""select * from (values (1, 'ann@example.com', 'high_value', 812.40::decimal(18, 2), 7),
                                                     (2, 'bob@example.com', 'regular', 20.00, 1)) {SEGMENTS}""",
    )
    models.build(
        "things", f"select * from (values (1, 'a', 'A', 1.5), (1, 'b', 'B', 2.5), (2, 'a', 'C', 3.5)) {THINGS}"
    )
    models.build(
        "triggers",
        f"""select * from (values ('t1', 1, 'welcome', '{{"n":1}}'),
                                                     ('t2', 2, 'welcome', '{{"n":2}}')) {TRIGGERS}""",
    )
    models.build(
        "items_export",
        f"""select * from (values (1, 'lamp', 10.00::decimal(10, 2)), (2, 'desk', 99.00),
                                                         (3, 'chair', 45.50)) {ITEMS}""",
    )
    syncs = ["crm_segments", "shop_things", "queue_a", "serving_items"]
    first = {s: run(s) for s in syncs}
    assert [first[s].counts.inserted for s in syncs] == [2, 3, 2, 3]
    check({("t1", '{"n":1}'), ("t2", '{"n":2}')})

    models.build(
        "segments",
        f"""select * from (values (1, 'ann@example.com', 'at_risk', 812.40::decimal(18, 2), 7),
                                                     (3, 'cy@example.com', 'new_user', 0.00, 0),
                                                     (2, 'bob@example.com', 'regular', 20.00, 1)) {SEGMENTS}""",
    )
    models.build(
        "things", f"select * from (values (1, 'a', 'A', 1.5), (2, 'a', 'C2', 3.5), (2, 'b', 'D', 4.5)) {THINGS}"
    )
    models.build(
        "triggers",
        f"""select * from (values ('t1', 1, 'welcome', '{{"n":9}}'),
                                                     ('t3', 3, 'welcome', '{{"n":3}}')) {TRIGGERS}""",
    )
    models.build(
        "items_export",
        f"""select * from (values (1, 'lamp', 12.00::decimal(10, 2)), (3, 'chair', 45.50),
                                                         (4, 'rug', 30.00)) {ITEMS}""",
    )
    second = {s: run(s) for s in syncs}
    counts = {s: (r.counts.inserted, r.counts.updated, r.counts.unchanged, r.counts.deleted) for s, r in second.items()}
    assert counts == {
        "crm_segments": (1, 1, 1, 0),
        "shop_things": (1, 1, 1, 1),
        "queue_a": (1, 0, 1, 0),  # t1 is never updated, t2 never deleted: insert_only
        "serving_items": (1, 1, 1, 1),
    }
    check({("t1", '{"n":1}'), ("t2", '{"n":2}'), ("t3", '{"n":3}')})

    third = {s: run(s) for s in syncs}
    assert all(_writes(r) == 0 for r in third.values()), {s: r.counts for s, r in third.items()}
    check({("t1", '{"n":1}'), ("t2", '{"n":2}'), ("t3", '{"n":3}')})


def test_redis_values_equal_the_mart_from_every_warehouse(world: World) -> None:
    models, run = world.models, world.run
    client = redis.Redis.from_url(world.redis_url)
    client.flushdb()

    def values() -> dict[str, Any]:
        return {k.decode(): json.loads(client.get(k), parse_float=Decimal) for k in client.scan_iter("*")}

    def expected() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for r in models.rows("segments"):  # profile:{user_id}: the whole row as a JSON object
            out[f"profile:{r['user_id']}"] = {k: _num(v) for k, v in r.items()}
        recos = sorted(models.rows("recos"), key=lambda r: (r["user_id"], r["recommendation_rank"]))
        for r in recos:
            member = {
                "item_id": r["item_id"],
                "score": _num(r["score"]),
                "recommendation_rank": r["recommendation_rank"],
            }
            out.setdefault(f"reco:{r['user_id']}", []).append(member)
        return out

    def normalized(got: dict[str, Any]) -> dict[str, Any]:
        def norm(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: norm(x) for k, x in v.items()}
            if isinstance(v, list):
                return [norm(x) for x in v]
            return _num(v)

        return {k: norm(v) for k, v in got.items()}

    models.build(
        "segments",
        f"""select * from (values (1, 'ann@example.com', 'high_value', 812.40::decimal(18, 2), 7),
                                                     (2, 'bob@example.com', 'regular', 20.00, 1)) {SEGMENTS}""",
    )
    models.build(
        "recos",
        """select user_id, item_id, score::double as score, recommendation_rank
           from (values (1, 10, 0.5, 2), (1, 11, 0.9, 1), (2, 12, 0.25, 1)) t(user_id, item_id, score, recommendation_rank)""",
    )
    assert run("profile_cache").counts.inserted == 2 and run("reco").counts.inserted == 2
    assert normalized(values()) == normalized(expected())

    models.build(
        "segments",
        f"""select * from (values (1, 'ann@example.com', 'at_risk', 812.40::decimal(18, 2), 7),
                                                     (2, 'bob@example.com', 'regular', 20.00, 1),
                                                     (3, 'cy@example.com', 'new_user', 0.00, 0)) {SEGMENTS}""",
    )
    models.build(
        "recos",
        """select user_id, item_id, score::double as score, recommendation_rank
           from (values (1, 11, 0.9, 1), (3, 12, 0.5, 1)) t(user_id, item_id, score, recommendation_rank)""",
    )
    profile, reco = run("profile_cache"), run("reco")
    assert (profile.counts.inserted, profile.counts.updated, profile.counts.unchanged) == (1, 1, 1)
    assert (reco.counts.inserted, reco.counts.updated, reco.counts.deleted) == (1, 1, 1)
    assert normalized(values()) == normalized(expected())

    sets = int(client.info("commandstats").get("cmdstat_set", {}).get("calls", 0))
    assert _writes(run("profile_cache")) == 0 and _writes(run("reco")) == 0
    assert int(client.info("commandstats").get("cmdstat_set", {}).get("calls", 0)) == sets  # nothing re-sent
    client.close()
