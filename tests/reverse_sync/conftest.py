"""Fixtures for the reverse_etl tests: a real manifest from `dbt parse` of a fixture project,
model tables in a real DuckDB warehouse, the session's real Postgres and Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest

from reverse_etl.engine import Connections, RunOptions, SyncResult, run_sync
from reverse_etl.spec import SyncSpec, load_specs
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.dev.services import PostgresEndpoint, RedisEndpoint

FIXTURE_PROJECT = Path(__file__).resolve().parent.parent / "fixtures" / "retl_project"


@pytest.fixture(scope="session")
def fixture_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`dbt parse` of tests/fixtures/retl_project: the exposures and relations reverse_etl reads."""
    out = tmp_path_factory.mktemp("retl_dbt")
    env = {**os.environ, "ROUNDTRIP_DUCKDB_PATH": str(out / "warehouse.duckdb"), "ROUNDTRIP_TARGET": "duckdb"}
    subprocess.run(
        [str(Path(sys.executable).parent / "dbt"), "--quiet", "parse", "--project-dir", str(FIXTURE_PROJECT),
         "--profiles-dir", str(PROJECT_ROOT / "profiles"), "--target-path", str(out / "target"),
         "--log-path", str(out / "logs")],
        check=True, env=env, cwd=FIXTURE_PROJECT,
    )  # fmt: skip
    return out / "target" / "manifest.json"


@dataclass
class Harness:
    """One test's world: the warehouse file, a fresh Postgres database, Redis."""

    warehouse: Path
    postgres: PostgresEndpoint
    redis: RedisEndpoint
    specs: dict[str, SyncSpec]

    def model(self, name: str, select_sql: str) -> None:
        """(Re)build a model's table in the warehouse, as `dbt build` would."""
        con = duckdb.connect(str(self.warehouse))
        try:
            con.execute("create schema if not exists marts")
            con.execute(f"create or replace table marts.{name} as {select_sql}")
        finally:
            con.close()

    def run(self, sync: str | SyncSpec, dry_run: bool = False, **options: Any) -> SyncResult:
        """Run a sync in this process (``options``: RunOptions fields, e.g. full_resync=True)."""
        spec = self.specs[sync] if isinstance(sync, str) else sync
        return run_sync(
            spec,
            Connections.of(postgres_url=self.postgres.url(), redis_url=self.redis.url()),
            RunOptions(dry_run=dry_run, dbt_project_dir=FIXTURE_PROJECT, **options),
        )

    def variant(self, base: str, name: str, model: str, **settings: Any) -> SyncSpec:
        """A sync like ``base`` under another name, reading ``model``, with other settings."""
        from reverse_etl.spec import SyncSettings

        spec = self.specs[base]
        merged = SyncSettings.model_validate({**spec.settings.model_dump(exclude_none=True), **settings})
        assert spec.source is not None
        source = spec.source.model_copy(update={"identifier": model})
        target = merged.target or spec.target
        return spec.model_copy(
            update={"name": name, "model": model, "settings": merged, "source": source, "target": target}
        )

    def owned(self, sync: str) -> list[tuple[Any, ...]]:
        """The identities the sync's state says it wrote (the last entry of each in its log)."""
        from reverse_etl.state.registry import tables_of

        rows_table = tables_of(sync)[0]
        columns = [
            r[0]
            for r in self.sql(
                "select column_name from information_schema.columns where table_schema = 'reverse_etl' "
                "and table_name = %s and column_name not in ('fingerprint', 'seq') order by ordinal_position",
                (rows_table,),
            )
        ]
        ids = ", ".join(f'"{c}"' for c in columns)
        return sorted(
            self.sql(
                f"""select {ids} from (select distinct on ({ids}) {ids}, fingerprint from reverse_etl."{rows_table}"
                    order by {ids}, seq desc) s where fingerprint is not null"""
            )
        )

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.postgres.url(), autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


@pytest.fixture
def harness(
    data_dir: Path, fixture_manifest: Path, pg_database: PostgresEndpoint, redis_endpoint: RedisEndpoint
) -> Iterator[Harness]:
    specs = {s.name: s for s in load_specs(fixture_manifest)}
    yield Harness(data_dir / "warehouse.duckdb", pg_database, redis_endpoint, specs)
