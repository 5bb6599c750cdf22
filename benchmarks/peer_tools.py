"""The tools raced by benchmarks/sync_peers.py, each run as a process the way its users run it.

- ``roundtrip``: ``python -m reverse_etl run --sync bench_peers --json``, the sync declared as a
  dbt exposure in the project's own manifest (parsed once by ``roundtrip dbt parse``, the bench
  model and its exposure added), upsert on the primary key.
- ``dlt``: ``python -m benchmarks.peer_dlt`` (dlt 1.31, merge on the key, CSV files by COPY).
- ``sling_incremental`` / ``sling_full_refresh``: the sling binary of the ``sling-linux-amd64``
  wheel reading the DuckDB file through the ``duckdb-cli`` wheel's binary; incremental with the
  primary key (an upsert of every row: no update key), or full refresh (drop and reload). Both
  create the table with its primary key (``table_keys``), as roundtrip does.
- ``drt``: drt-core's ``drt run`` of a sync YAML, mode upsert, into a table with the primary key
  it needs for ``ON CONFLICT`` (drt creates no table), 10,000 rows a batch.
Every tool gets its own destination table on the same server, its own home and state folders
under the run's work folder; nothing is read from or written to the user's home.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import yaml

from benchmarks.core import environment, run_checked
from benchmarks.processes import Measured
from benchmarks.sync_data import MODEL, forget_state
from roundtrip.dev.services import PostgresEndpoint

KEY = "user_id"
MART: tuple[str, str] = (MODEL.split(".")[0], MODEL.split(".")[1])  # (schema, table) in the warehouse
DDL_COLUMNS = """user_id bigint primary key, email text, display_name text, segment text,
                 lifetime_value numeric(18, 2), order_count bigint, last_order_at timestamp,
                 engagement_score double precision"""
DRT_BATCH_ROWS = 10_000
PEERS = ("dlt", "sling_incremental", "sling_full_refresh", "drt")


@dataclass
class Race:
    """What every tool shares: the mart's file, the server, the run's folder."""

    folder: Path
    warehouse: Path
    postgres: PostgresEndpoint

    @property
    def url(self) -> str:
        return self.postgres.url()

    def url_with_password(self) -> str:
        """dlt wants a password even where the server trusts loopback (it is then ignored)."""
        pg = self.postgres
        password = quote(pg.password or "unused", safe="")
        return f"postgresql://{quote(pg.user, safe='')}:{password}@{pg.host}:{pg.port}/{pg.dbname}"

    def execute(self, *statements: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)  # type: ignore[arg-type]  # the benchmark's own SQL


@dataclass
class Tool:
    name: str
    label: str  # how the tables name it
    table: tuple[str, str]  # its destination (schema, table)
    race: Race
    env: dict[str, str] = field(default_factory=dict)

    def prepare(self) -> None:
        """Once per run: configuration files, folders."""

    def reset(self) -> None:
        """Before each repetition's first sync: no table, no state."""
        self.race.execute(f'drop table if exists "{self.table[0]}"."{self.table[1]}"')

    def command(self) -> list[str]:
        raise NotImplementedError

    def cwd(self) -> Path | None:
        return None

    def check(self, measured: Measured, expected: dict[str, int]) -> dict[str, Any]:
        """What the tool said it did (only roundtrip's counts are checked: the others' tables are)."""
        return {}


class Roundtrip(Tool):
    sync = "bench_peers"

    def __init__(self, race: Race) -> None:
        super().__init__("roundtrip", "roundtrip", ("crm", "bench_peers"), race)
        self.target = race.folder / "dbt_target"
        self.data = race.folder / "roundtrip_data"
        self.env = {
            "ROUNDTRIP_DUCKDB_PATH": str(race.warehouse),
            "ROUNDTRIP_POSTGRES_URL": race.url,
            "ROUNDTRIP_DATA_DIR": str(self.data),
            "DBT_TARGET_PATH": str(self.target),
        }

    def prepare(self) -> None:
        """The project's manifest, as ``roundtrip dbt parse`` writes it, plus the bench model and
        its sync: what the CLI reads at its start is a real project's manifest."""
        with environment(**self.env):
            run_checked([sys.executable, "-m", "roundtrip", "dbt", "parse", "--target", "duckdb"])
        path = self.target / "manifest.json"
        manifest = json.loads(path.read_text())
        add_bench_sync(manifest, self.sync, f"{self.table[0]}.{self.table[1]}")
        path.write_text(json.dumps(manifest))

    def reset(self) -> None:
        super().reset()
        with environment(**self.env):
            forget_state(self.race.url, self.sync)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "reverse_etl", "run", "--sync", self.sync, "--json"]

    def check(self, measured: Measured, expected: dict[str, int]) -> dict[str, Any]:
        lines = [line for line in measured.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"roundtrip printed no result:\n{(measured.stdout + measured.stderr)[-2000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        got = {k: result.get(k) for k in expected}
        if result.get("status") != "succeeded" or got != expected:
            raise RuntimeError(
                f"roundtrip: {result.get('status')} {result.get('error', '')} {got}, expected {expected}"
            )
        return {"in_process_seconds": result.get("seconds"), "phases": result.get("phases")}


def add_bench_sync(manifest: dict[str, Any], sync: str, target: str) -> None:
    """The bench model (``marts.bench_segments``, beside the project's marts) and an upsert
    exposure of it, in ``manifest`` as dbt would have written them."""
    project = manifest["metadata"]["project_name"]
    schema, table = MART
    marts = [n for n in manifest["nodes"].values() if n["resource_type"] == "model" and n["schema"] == schema]
    database = marts[0]["database"] if marts else "warehouse"
    uid = f"model.{project}.{table}"
    manifest["nodes"][uid] = {
        "unique_id": uid,
        "resource_type": "model",
        "package_name": project,
        "name": table,
        "alias": table,
        "database": database,
        "schema": schema,
        "relation_name": f'"{database}"."{schema}"."{table}"',
        "config": {"materialized": "table"},
        "depends_on": {"macros": [], "nodes": []},
        "checksum": {"name": "none", "checksum": ""},
        "raw_code": "",
    }
    meta = {"sync": {"destination": "postgres", "target": target, "mode": "upsert", "primary_key": [KEY]}}
    manifest["exposures"][f"exposure.{project}.{sync}"] = {
        "unique_id": f"exposure.{project}.{sync}",
        "resource_type": "exposure",
        "package_name": project,
        "name": sync,
        "type": "application",
        "owner": {"name": "benchmarks"},
        "depends_on": {"macros": [], "nodes": [uid]},
        "meta": meta,
        "config": {"enabled": True, "meta": meta},
    }
    manifest.setdefault("child_map", {})[uid] = [f"exposure.{project}.{sync}"]
    manifest.setdefault("parent_map", {})[f"exposure.{project}.{sync}"] = [uid]


class Dlt(Tool):
    def __init__(self, race: Race) -> None:
        super().__init__("dlt", "dlt 1.31 merge (csv/COPY)", ("bench_dlt", "segments"), race)
        self.pipelines = race.folder / "dlt_pipelines"

    def prepare(self) -> None:
        import dlt  # noqa: F401  (ImportError: not installed)

    def reset(self) -> None:
        schema = self.table[0]
        self.race.execute(
            f'drop schema if exists "{schema}" cascade', f'drop schema if exists "{schema}_staging" cascade'
        )
        shutil.rmtree(self.pipelines, ignore_errors=True)

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "benchmarks.peer_dlt", str(self.race.warehouse), ".".join(MART),
            self.race.url_with_password(), self.table[0], self.table[1], "--pipelines-dir", str(self.pipelines),
        ]  # fmt: skip

    def cwd(self) -> Path:
        folder = self.race.folder / "dlt_project"  # where dlt looks for a .dlt config: none there
        folder.mkdir(exist_ok=True)
        return folder


def sling_binaries() -> tuple[str, str]:
    """(sling, duckdb CLI) from the bench extra's wheels; ImportError names what is missing."""
    import duckdb_cli
    import sling_linux_amd64

    duckdb_binary = Path(duckdb_cli.__file__).parent / "duckdb"
    if not sling_linux_amd64.SLING_BIN or not duckdb_binary.exists():
        raise ImportError("the sling-linux-amd64 wheel has no binary for this machine, or duckdb-cli none")
    return sling_linux_amd64.SLING_BIN, str(duckdb_binary)


class Sling(Tool):
    def __init__(self, race: Race, mode: str) -> None:
        name = f"sling_{mode.replace('-', '_')}"
        label = {"incremental": "sling 1.4 incremental + PK", "full-refresh": "sling 1.4 full-refresh"}[mode]
        super().__init__(name, label, ("crm", name), race)
        self.mode = mode
        self.binary, duckdb_binary = sling_binaries()
        home = race.folder / "sling_home"
        separator = "&" if "?" in race.url else "?"
        self.env = {
            "HOME": str(home),
            "SLING_HOME_DIR": str(home / ".sling"),
            "SLING_DISABLE_TELEMETRY": "true",
            "DUCKDB_PATH": duckdb_binary,  # else sling downloads a DuckDB CLI at first use
            "DUCKDB_USE_INSTALLED_EXTENSIONS": "true",  # LOAD, never INSTALL (no internet)
            "BENCH_DUCKDB": f"duckdb://{race.warehouse}",
            "BENCH_POSTGRES": race.url + ("" if "sslmode" in race.url else f"{separator}sslmode=disable"),
        }

    def prepare(self) -> None:
        Path(self.env["SLING_HOME_DIR"]).mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            self.binary, "run", "--src-conn", "BENCH_DUCKDB", "--src-stream", ".".join(MART),
            "--tgt-conn", "BENCH_POSTGRES", "--tgt-object", ".".join(self.table), "--mode", self.mode,
            "--primary-key", KEY, "--tgt-options", json.dumps({"table_keys": {"primary": [KEY]}}),
        ]  # fmt: skip


class Drt(Tool):
    def __init__(self, race: Race) -> None:
        super().__init__("drt", f"drt-core 1.2 upsert ({DRT_BATCH_ROWS:,} a batch)", ("crm", "bench_drt"), race)
        self.project = race.folder / "drt_project"
        home = race.folder / "drt_home"
        self.env = {"HOME": str(home), "BENCH_DRT_PASSWORD": race.postgres.password}
        self.binary = str(Path(sys.executable).parent / "drt")

    def prepare(self) -> None:
        import drt  # noqa: F401  (ImportError: not installed)

        pg = self.race.postgres
        profiles = Path(self.env["HOME"]) / ".drt" / "profiles.yml"
        profiles.parent.mkdir(parents=True, exist_ok=True)
        profiles.write_text(yaml.safe_dump({"bench": {"type": "duckdb", "database": str(self.race.warehouse)}}))
        (self.project / "syncs").mkdir(parents=True, exist_ok=True)
        (self.project / "drt_project.yml").write_text(yaml.safe_dump({"name": "bench", "profile": "bench"}))
        destination: dict[str, Any] = {
            "type": "postgres", "host": pg.host, "port": pg.port, "dbname": pg.dbname, "user": pg.user,
            "table": ".".join(self.table), "upsert_key": [KEY],
        }  # fmt: skip
        if pg.password:
            destination["password_env"] = "BENCH_DRT_PASSWORD"
        sync = {
            "name": "bench_drt",
            "model": f"select * from {'.'.join(MART)}",
            "destination": destination,
            "sync": {"mode": "upsert", "batch_size": DRT_BATCH_ROWS},
        }
        (self.project / "syncs" / "bench_drt.yml").write_text(yaml.safe_dump(sync, sort_keys=False))

    def reset(self) -> None:
        schema, table = self.table
        self.race.execute(
            f'drop table if exists "{schema}"."{table}"',
            f'create schema if not exists "{schema}"',
            f'create table "{schema}"."{table}" ({DDL_COLUMNS})',
        )
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.project / ".drt")  # its run history

    def command(self) -> list[str]:
        return [self.binary, "run"]

    def cwd(self) -> Path:
        return self.project


def tools(race: Race, peers: tuple[str, ...]) -> list[Tool]:
    """roundtrip and the chosen peers (all by default); a peer that is not installed raises."""
    chosen = peers or PEERS
    unknown = [p for p in chosen if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
    makers = {
        "dlt": lambda: Dlt(race),
        "sling_incremental": lambda: Sling(race, "incremental"),
        "sling_full_refresh": lambda: Sling(race, "full-refresh"),
        "drt": lambda: Drt(race),
    }
    found: list[Tool] = [Roundtrip(race)]
    found[0].prepare()
    for name in chosen:
        try:
            tool = makers[name]()
            tool.prepare()
        except ImportError as exc:
            raise RuntimeError(
                f"peer {name} is not installed ({exc}): `make bench` installs the bench extra of pyproject.toml"
            ) from exc
        found.append(tool)
    return found
