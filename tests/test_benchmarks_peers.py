"""The race against the sync's peers (benchmarks/sync_peers.py) and the pieces it stands on:
a process's peak memory, the check that refuses a wrong destination, the CLI-start probe, the
manifest the CLI reads, busy processes for a loaded machine."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import psycopg
import pytest

from benchmarks.cli import main
from benchmarks.destination_check import DestinationDiffers, check_equal
from benchmarks.peer_tools import MART, Race, Tool, add_bench_sync
from benchmarks.processes import busy_processes, measure
from benchmarks.sync_data import build_model
from benchmarks.sync_peers import SCENARIOS, one_run
from reverse_etl.spec import load_syncs
from roundtrip.dev.services import PostgresEndpoint

ALLOCATE = "import time; b = bytearray({mb} * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep({sleep})"


def test_the_peak_memory_of_a_process_is_its_own_not_ours() -> None:
    big = measure([sys.executable, "-c", ALLOCATE.format(mb=200, sleep=0.3)])  # lives past a few samples
    assert 200 <= big.peak_rss_mb < 260  # touched pages, plus the interpreter
    assert measure(["true"]).peak_rss_mb < 20  # not the ~100 MB of the benchmark process that forked it


def test_the_peak_memory_of_a_tree_counts_children_alive_together() -> None:
    child = f'{sys.executable} -c "{ALLOCATE.format(mb=100, sleep=0.5)}"'
    both = measure(["sh", "-c", f"{child} & {child}; wait"])
    assert both.peak_rss_mb >= 200


def test_a_failing_command_raises_with_its_output() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)exited 3:.*gone wrong"):
        measure([sys.executable, "-c", "import sys; print('gone wrong'); sys.exit(3)"])


def test_a_hung_command_and_its_children_are_killed_at_the_timeout() -> None:
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"killed after 1 s"):
        measure(["sh", "-c", "sleep 61.25 & sleep 61.25; wait"], timeout=1)
    assert time.perf_counter() - started < 30
    left = [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p) == b"sleep\x0061.25\x00"]
    assert left == []  # the grandchild too


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def test_the_cli_refuses_an_unknown_peer_and_a_negative_load(capsys: pytest.CaptureFixture[str]) -> None:
    for args, says in ((["--peers", "dlt,fivetran"], "unknown peer"), (["--load", "-1"], "--load must be 0 or more")):
        with pytest.raises(SystemExit):
            main(["--only", "sync_peers", *args])
        assert says in capsys.readouterr().err


def test_busy_processes_spin_while_asked_and_are_stopped_by_pid() -> None:
    with busy_processes(2) as pids:
        assert len(pids) == 2
        states = [Path(f"/proc/{pid}/stat").read_text().split()[2] for pid in pids]
        assert all(state in "RS" for state in states)  # alive (running, or waiting for a core)
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_the_bench_sync_added_to_a_manifest_is_what_reverse_etl_reads(tmp_path: Path) -> None:
    manifest = {"metadata": {"project_name": "demo", "adapter_type": "duckdb"}, "nodes": {}, "exposures": {}}
    add_bench_sync(manifest, "bench_x", 'crm."odd;name"')
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    specs, invalid = load_syncs(path, "duckdb")
    assert invalid == []
    [spec] = specs
    assert (spec.name, spec.mode, spec.settings.primary_key, spec.table) == (
        "bench_x",
        "upsert",
        ["user_id"],
        ("crm", "odd;name"),
    )
    assert (spec.source.schema_, spec.source.identifier) == MART


@pytest.fixture
def race(tmp_path: Path, pg_database: PostgresEndpoint) -> Race:
    warehouse = tmp_path / "warehouse.duckdb"
    build_model(warehouse, 300)
    return Race(tmp_path, warehouse, pg_database)


def copy_mart(race: Race, table: str, extra: str = "") -> None:
    """The mart into Postgres by DuckDB's postgres extension, then ``extra`` SQL there."""
    from roundtrip.core.duckdb_extensions import connect

    con = connect(extensions=("postgres",))
    try:
        con.execute(f"attach '{race.warehouse}' as wh (read_only)")
        con.execute(f"attach '{race.url}' as pg (type postgres)")
        con.execute("create schema if not exists pg.crm")
        con.execute(f"create table pg.crm.{table} as select *, 'x' as _tool_column from wh.marts.bench_segments")
    finally:
        con.close()
    if extra:
        race.execute(extra)


@pytest.mark.postgres
def test_a_destination_equal_to_the_mart_passes_whatever_its_own_column_types(race: Race) -> None:
    copy_mart(race, "same", "alter table crm.same alter column last_order_at type timestamptz, "
                            "alter column lifetime_value type numeric")  # fmt: skip
    assert check_equal(race.warehouse, MART, race.url, ("crm", "same"), "tool") == 300


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("update crm.t set engagement_score = engagement_score + 1e-9 where user_id = 7", "holds 300 rows"),
        ("delete from crm.t where user_id = 8", "holds 299 rows"),
        ("insert into crm.t select * from crm.t where user_id = 9", "holds 301 rows"),  # a repeated row
        ("update crm.t set email = null where user_id = 10", "user10@example.com"),
    ],
)
def test_a_destination_that_differs_from_the_mart_is_refused(race: Race, damage: str, says: str) -> None:
    copy_mart(race, "t", damage)
    with pytest.raises(DestinationDiffers, match=says):
        check_equal(race.warehouse, MART, race.url, ("crm", "t"), "tool")


class WrongTool(Tool):
    """A 'peer' whose process copies the mart but one value off: the race must not time it."""

    def command(self) -> list[str]:
        script = (
            "import sys, psycopg; c = psycopg.connect(sys.argv[1], autocommit=True); "
            "c.execute('update crm.wrong set order_count = order_count + 1 where user_id = 42')"
        )
        return [sys.executable, "-c", script, self.race.url]


@pytest.mark.postgres
def test_the_race_reports_no_figure_for_a_tool_whose_destination_is_wrong(race: Race) -> None:
    copy_mart(race, "wrong")
    with pytest.raises(DestinationDiffers, match=r"crm\.wrong holds 300 rows"):
        one_run(WrongTool("wrong", "a wrong tool", ("crm", "wrong"), race), race, {})
    with psycopg.connect(race.url) as conn:  # the process did run, and its damage is there
        assert conn.execute("select order_count from crm.wrong where user_id = 42").fetchone() is not None


@pytest.mark.postgres
def test_the_cli_start_probe_notes_cpu_at_the_first_database_call(
    tmp_path: Path, pg_database: PostgresEndpoint
) -> None:
    out = tmp_path / "first.json"
    env = {"ROUNDTRIP_POSTGRES_URL": pg_database.url(), "ROUNDTRIP_DATA_DIR": str(tmp_path),
           "BENCH_FIRST_CALL_FILE": str(out)}  # fmt: skip
    measured = measure([sys.executable, "-m", "benchmarks.cli_start", "status", "--json"], env)
    first = json.loads(out.read_text())
    assert first["what"] == "psycopg connect"  # `status` reads the run history first
    assert 0 < first["cpu_seconds"] < measured.seconds * os.cpu_count()  # type: ignore[operator]
    assert first["modules"] > 100  # the CLI's imports had happened


PEERS_INSTALLED = all(importlib.util.find_spec(m) for m in ("dlt", "drt", "sling_linux_amd64", "duckdb_cli"))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not PEERS_INSTALLED, reason="the peers are the bench extra (make bench installs them)")
def test_the_race_runs_end_to_end_at_a_toy_size(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    main(["--size", "2000", "--only", "sync_peers", "--repeat", "1", "--out", str(out), "--workdir", str(tmp_path)])
    report = json.loads(out.read_text())
    results = report["benchmarks"]["sync_peers"]["results"]
    peers = results[0]["details"]["peers"]
    assert len(peers) == 4
    races = [r for r in results if r["target"] == "<= 1.0"]
    assert [(r["metric"].split(",")[1].split("(")[0].strip(), r["baseline_name"]) for r in races] == [
        (scenario, peer) for scenario in SCENARIOS for peer in peers
    ]
    assert all(r["value"] > 0 and r["baseline"] > 0 for r in races)
    runs = results[0]["details"]["runs"]
    # every run of every tool read back equal to the mart: 2000 rows each time
    assert {run["rows"] for scenario in SCENARIOS for tool in runs[scenario].values() for run in tool} == {2000}
    [start] = [r for r in results if r["target"] == "<= 0.3 s"]
    assert start["value"] > 0
