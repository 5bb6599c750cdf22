"""`python -m loaders`: each command prints counts that match what the warehouse holds."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

CONFIG = """
sqlite:
  app:
    path: ${ROUNDTRIP_APP_DB}
    tables:
      - name: users
        primary_key: [user_id]
        cursor: updated_at
        timestamps: {updated_at: epoch_s}
files:
  orders:
    path: ${ROUNDTRIP_LANDING_PATH}/orders
    table: orders
exports:
  reco:
    destination: ${ROUNDTRIP_EXPORT_PATH}
    dataset: raw_app
    tables:
      - name: users
        columns: [user_id, email]
"""


def _cli(data: Path, config: Path, *args: str) -> list[dict]:  # type: ignore[type-arg]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUNDTRIP_")}
    env["ROUNDTRIP_DATA_DIR"] = str(data)
    done = subprocess.run(
        [sys.executable, "-m", "loaders", *args, "--config", str(config), "--target", "duckdb", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_cli_loads_exports_and_reimports_with_true_counts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "landing" / "orders").mkdir(parents=True)
    config = tmp_path / "loaders.yml"
    config.write_text(CONFIG)
    with sqlite3.connect(data / "app.db") as con:
        con.execute("create table users (user_id integer primary key, email text, updated_at integer)")
        con.executemany("insert into users values (?, ?, ?)", [(1, "a@x.fr", 10), (2, None, 20)])
    (data / "landing" / "orders" / "o.jsonl").write_text('{"order_id": "1"}\n{"order_id": "2"}\n{"order_id": "3"}\n')

    [users] = _cli(data, config, "sqlite")
    [orders] = _cli(data, config, "files")
    [again] = _cli(data, config, "files")
    [exported] = _cli(data, config, "export", "--date", "2024-05-17")
    [imported] = _cli(data, config, "import-table", "--name", "reco", "--table", "users", "--date", "20240517")

    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    try:
        assert (users["inserted"], users["updated"]) == (2, 0)
        assert con.execute("select count(*) from raw_app.users").fetchone() == (users["inserted"],)
        assert con.execute("select count(*) from bronze.orders").fetchone() == (orders["inserted"],) == (3,)
        assert (again["files_loaded"], again["files_skipped"], again["inserted"]) == (0, 1, 0)
        parquet = data / "export" / "20240517" / "users" / "users.parquet"
        assert exported["rows"] == 2 and exported["destination"] == str(parquet)
        assert sorted(pq.read_table(parquet).to_pylist(), key=lambda r: r["user_id"]) == [
            {"user_id": 1, "email": "a@x.fr"},
            {"user_id": 2, "email": None},
        ]
        assert imported["inserted"] == 2
        assert con.execute("select user_id, email from serving.users order by 1").fetchall() == [
            (1, "a@x.fr"),
            (2, None),
        ]
    finally:
        con.close()


HOLDER = (
    "import duckdb, sys, time\n"
    "con = duckdb.connect(sys.argv[1])\n"
    "print('holding', flush=True)\n"
    "time.sleep(float(sys.argv[2]))\n"
)


def _hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process with the DuckDB file open (as `dbt build` would), for ``seconds``."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def _files(data: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUNDTRIP_")}
    env["ROUNDTRIP_DATA_DIR"] = str(data)
    return subprocess.run(
        [sys.executable, "-m", "loaders", "files", "--config", str(config), "--target", "duckdb", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_busy_warehouse_is_one_line_naming_the_holder_and_wait_waits_for_it(tmp_path: Path) -> None:
    import time

    data = tmp_path / "data"
    (data / "landing" / "orders").mkdir(parents=True)
    (data / "landing" / "orders" / "o.jsonl").write_text('{"order_id": "1"}\n')
    config = tmp_path / "loaders.yml"
    config.write_text(CONFIG)
    warehouse = data / "warehouse.duckdb"

    holder = _hold(warehouse, 60)
    try:
        busy = _files(data, config)
    finally:
        holder.kill()
        holder.wait()
    assert busy.returncode == 1
    assert "Traceback" not in busy.stderr and busy.stdout == ""
    errors = [line for line in busy.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1  # one line, however long the path and the holder's command
    assert errors[0].startswith(
        f"error: warehouse {warehouse} is in use by PID {holder.pid} (python -c import duckdb, sys, time con = "
    )
    assert "hint: retry when it ends, or pass --wait SECONDS" in busy.stderr

    holder = _hold(warehouse, 3)
    started = time.monotonic()
    try:
        waited = _files(data, config, "--wait", "60")
    finally:
        holder.wait()
    assert waited.returncode == 0, waited.stderr
    assert time.monotonic() - started >= 2
    [report] = [json.loads(line) for line in waited.stdout.splitlines()]
    assert report["inserted"] == 1
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert con.execute("select order_id from bronze.orders").fetchall() == [("1",)]
    finally:
        con.close()
