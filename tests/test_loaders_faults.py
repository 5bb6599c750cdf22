"""Faults of the file system rather than of the content, through the file loader.

A file rewritten while it is read, a line without end, a CSV header wider than the stream
allows, symbolic links that loop or lead nowhere. For each: what bronze, the manifest and the
quarantine hold after the faulty run and after the next one. Every good row is loaded exactly
once, the faulty input is in the quarantine with its reason, and nothing else is held up.

A file that changes while it is read is driven deterministically, by a filesystem (fsspec's
local one, under its own protocol) that rewrites the file at a chosen instant of a chosen read.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem

from loaders import jobs, state
from loaders.config import FileStreamConfig
from loaders.warehouse import Warehouse
from roundtrip.core.paths import PROJECT_ROOT

COLUMNS = ["order_id", "quantity", "note"]


def _orders(prefix: str, count: int, note: str = "ok") -> bytes:
    return b"".join(
        json.dumps({"order_id": f"{prefix}{i}", "quantity": str(i), "note": note}).encode() + b"\n"
        for i in range(1, count + 1)
    )


def _md5(content: bytes) -> str:
    return "md5:" + hashlib.md5(content, usedforsecurity=False).hexdigest()


@pytest.fixture(params=[pytest.param("duckdb"), pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    wh: Warehouse
    if request.param == "duckdb":
        from loaders.warehouse.duckdb import DuckDBWarehouse

        wh = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    else:
        from loaders.warehouse.postgres import PostgresWarehouse

        wh = PostgresWarehouse(request.getfixturevalue("pg_database").url())
    try:
        yield wh
    finally:
        wh.close()


def _bronze(warehouse: Warehouse, table: str = "orders") -> Counter[tuple[str, str, int]]:
    """(file name, order_id, line) of every bronze row, counted: a row loaded twice counts 2."""
    data = warehouse.read_table("bronze", table)
    rows = data.to_pylist() if data is not None else []
    return Counter((Path(r["_source_file"]).name, r["order_id"], r["_source_line"]) for r in rows)


def _expected(name: str, prefix: str, count: int, first_line: int = 1) -> Counter[tuple[str, str, int]]:
    return Counter((name, f"{prefix}{i}", first_line + i - 1) for i in range(1, count + 1))


def _manifest(warehouse: Warehouse, stream: str) -> dict[str, state.ManifestEntry]:
    return {Path(p).name: e for p, e in state.read_manifest(warehouse, stream).items()}


def _quarantine(warehouse: Warehouse, stream: str) -> list[dict[str, Any]]:
    return [r for r in state.read_held_back(warehouse, stream) if r["kind"] != "value"]


# ---------------------------------------------------------------- 1. a file rewritten while it is read


class ChangingFileSystem(LocalFileSystem):
    """The local filesystem under ``changing://``, where a test can act on a file at the n-th
    time it is opened: when it opens, after the first block was read, or when it closes."""

    protocol = "changing"
    root_marker = "/"
    actions: ClassVar[dict[tuple[str, int, str], Callable[[], None]]] = {}  # (name, nth open, when) -> what
    opened: ClassVar[Counter[str]] = Counter()

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        path = str(path)
        if path.startswith("changing://"):
            path = path[len("changing://") :]
        return super()._strip_protocol(path)

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        name = Path(path).name
        self.opened[name] += 1
        act = self._action(name, self.opened[name])
        act("open")
        return _ActingFile(super()._open(path, mode, **kwargs), act)

    def _action(self, name: str, nth: int) -> Callable[[str], None]:
        def act(when: str) -> None:
            action = self.actions.pop((name, nth, when), None)
            if action is not None:
                action()

        return act


class _ActingFile:
    def __init__(self, handle: Any, act: Callable[[str], None]) -> None:
        self.handle, self.act, self.reads = handle, act, 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.reads += 1
        if self.reads == 1:
            self.act("after first read")
        return data

    def close(self) -> None:
        self.handle.close()
        self.act("close")

    def __enter__(self) -> _ActingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def changing() -> Iterator[type[ChangingFileSystem]]:
    fsspec.register_implementation("changing", ChangingFileSystem, clobber=True)
    ChangingFileSystem.actions, ChangingFileSystem.opened = {}, Counter()
    ChangingFileSystem.clear_instance_cache()
    yield ChangingFileSystem
    assert ChangingFileSystem.actions == {}, "every planned change happened"


FULL = _orders("r", 3000)
THIRD = FULL[: len(FULL) // 3]  # ends inside a line, like a file cut while it is rewritten


def _rewrite(path: Path, content: bytes) -> Callable[[], None]:
    def act() -> None:
        with open(path, "r+b") as handle:  # in place: the same inode, as a producer rewrites it
            handle.truncate(0)
            handle.write(content)

    return act


# (what happens, the file's content at the end, the reason's words): the listing is the file's
# first open (it hashes local files), the loader's read its second
CHANGES = {
    # the run: truncated to a third after the listing hashed it, written back after the read
    "truncated-after-listing-restored-after-read": (
        [(1, "close", THIRD), (2, "close", FULL)],
        FULL,
        "changed after it was listed",
    ),
    # cut to a third as the loader opens it, and written back when it closes it
    "truncated-while-read": ([(2, "open", THIRD), (2, "close", FULL)], FULL, "changed while it was read"),
    # rewritten with as many bytes, other values, between two blocks of the loader's read
    "same-size-rewrite-while-read": (
        [(2, "after first read", FULL.replace(b'"ok"', b'"OK"'))],
        FULL.replace(b'"ok"', b'"OK"'),
        "changed while it was read",
    ),
    # grown between two blocks of the read (a producer still appending)
    "appended-while-read": ([(2, "after first read", FULL + _orders("s", 5))], FULL + _orders("s", 5), "changed"),
}


@pytest.mark.parametrize("strategy", ["transactional", "catalog"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_file_changed_while_read_is_held_back_and_loads_whole_at_the_next_run(
    target: Warehouse, tmp_path: Path, changing: type[ChangingFileSystem], change: str, strategy: str
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a-steady.jsonl").write_bytes(_orders("a", 4))
    moving = landing / "b-moving.jsonl"
    moving.write_bytes(FULL)
    plan, final, reason = CHANGES[change]
    for nth, when, content in plan:
        changing.actions[("b-moving.jsonl", nth, when)] = _rewrite(moving, content)
    stream = FileStreamConfig.model_validate(
        {"path": f"changing://{landing}", "table": "orders", "target_schema": "bronze", "columns": COLUMNS}
        | {"strategy": strategy}
    )

    faulty = jobs.load_files("orders", stream, target)

    assert changing.actions == {}
    assert _bronze(target) == _expected("a-steady.jsonl", "a", 4)  # nothing of the torn bytes
    manifest = _manifest(target, "orders")
    assert (manifest["b-moving.jsonl"].status, manifest["b-moving.jsonl"].fingerprint) == (
        state.HELD_BACK,
        state.READ_AGAIN,
    )
    assert manifest["a-steady.jsonl"].status == state.LOADED
    [held] = _quarantine(target, "orders")
    assert (Path(str(held["file"])).name, held["line"], held["kind"]) == ("b-moving.jsonl", None, "file")
    assert reason in str(held["reason"]) and "read again at the next run" in str(held["reason"])
    assert faulty.held_back == 1
    assert moving.read_bytes() == final

    after = jobs.load_files("orders", stream, target)

    final_rows = final.count(b"\n")
    expected = _expected("a-steady.jsonl", "a", 4) + Counter(
        (("b-moving.jsonl", json.loads(line)["order_id"], n) for n, line in enumerate(final.splitlines(), 1))
    )
    assert _bronze(target) == expected  # every row of the file as it is now, exactly once
    assert sum(expected.values()) == 4 + final_rows
    manifest = _manifest(target, "orders")
    entry = manifest["b-moving.jsonl"]
    assert (entry.status, entry.fingerprint, entry.content_hash, entry.rows) == (
        state.LOADED,
        _md5(final),
        _md5(final),
        final_rows,
    )
    assert _quarantine(target, "orders") == []
    assert after.held_back == 0
    if change == "same-size-rewrite-while-read":
        notes = {r["note"] for r in target.read_table("bronze", "orders").to_pylist()}  # type: ignore[union-attr]
        assert notes == {"ok", "OK"}  # a-steady's, and the new version's only

    again = jobs.load_files("orders", stream, target)  # done now: nothing read again
    assert (again.read, again.files_skipped) == (0, 2)


def test_a_loaded_file_rewritten_while_its_new_version_is_read_ends_with_its_last_version(
    target: Warehouse, tmp_path: Path, changing: type[ChangingFileSystem]
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    path = landing / "o.jsonl"
    path.write_bytes(_orders("v1-", 5))
    stream = FileStreamConfig(path=f"changing://{landing}", table="orders", target_schema="bronze", columns=COLUMNS)
    jobs.load_files("orders", stream, target)
    assert _bronze(target) == _expected("o.jsonl", "v1-", 5)

    version2, version3 = _orders("v2-", 400), _orders("v3-", 300)
    path.write_bytes(version2)
    opened = changing.opened["o.jsonl"]
    changing.actions[("o.jsonl", opened + 2, "after first read")] = _rewrite(path, version3)  # listing, then read
    torn = jobs.load_files("orders", stream, target)

    assert torn.held_back == 1 and torn.result.deleted == 5  # the old version's rows went with it
    assert _bronze(target) == Counter()
    assert _manifest(target, "orders")["o.jsonl"].fingerprint == state.READ_AGAIN

    jobs.load_files("orders", stream, target)
    assert _bronze(target) == _expected("o.jsonl", "v3-", 300)
    assert _manifest(target, "orders")["o.jsonl"].fingerprint == _md5(version3)
    assert _quarantine(target, "orders") == []


def test_a_file_that_disappears_after_the_listing_is_held_back_then_forgotten(
    target: Warehouse, tmp_path: Path, changing: type[ChangingFileSystem]
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a.jsonl").write_bytes(_orders("a", 2))
    gone = landing / "b.jsonl"
    gone.write_bytes(_orders("b", 2))
    changing.actions[("b.jsonl", 1, "close")] = gone.unlink  # right after the listing hashed it
    stream = FileStreamConfig(path=f"changing://{landing}", table="orders", target_schema="bronze", columns=COLUMNS)

    faulty = jobs.load_files("orders", stream, target)
    assert faulty.held_back == 1
    assert _bronze(target) == _expected("a.jsonl", "a", 2)
    [held] = _quarantine(target, "orders")
    assert "disappeared" in str(held["reason"])

    jobs.load_files("orders", stream, target)
    assert _bronze(target) == _expected("a.jsonl", "a", 2)
    assert list(_manifest(target, "orders")) == ["a.jsonl"]
    assert _quarantine(target, "orders") == []


# ---------------------------------------------------------------- 2. a line without end


def _sparse_line_file(path: Path, before: bytes, line_bytes: int, after: bytes) -> None:
    """``before``, then a line of ``line_bytes`` NUL bytes that takes no disk space, then ``after``."""
    with open(path, "wb") as handle:
        handle.write(before)
        handle.seek(line_bytes, os.SEEK_CUR)
        handle.write(b"\n" + after)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_line_longer_than_max_line_bytes_is_held_back_with_its_offset_and_the_rest_loads(
    target: Warehouse, tmp_path: Path, fmt: str
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    if fmt == "jsonl":
        head, tail, first = _orders("h", 3), _orders("t", 2), 1
    else:
        head = b"order_id,quantity,note\n" + b"".join(f"h{i},{i},ok\n".encode() for i in range(1, 4))
        tail, first = b"".join(f"t{i},{i},ok\n".encode() for i in range(1, 3)), 2
    long_line = (130 << 20) + 7  # past two 64 MiB reads: counted and dropped as it comes
    _sparse_line_file(landing / f"a-long.{fmt}", head, long_line, tail)
    (landing / f"b-next.{fmt}").write_bytes(head)
    stream = FileStreamConfig.model_validate(
        {"path": str(landing), "format": fmt, "table": "orders", "target_schema": "bronze", "columns": COLUMNS}
    )

    for run in ("faulty", "next"):
        report = jobs.load_files("orders", stream, target)
        long_line_number = first + 3
        assert _bronze(target) == (
            _expected("a-long." + fmt, "h", 3, first)
            + _expected("a-long." + fmt, "t", 2, long_line_number + 1)
            + _expected("b-next." + fmt, "h", 3, first)
        ), run
        [held] = _quarantine(target, "orders")
        assert (Path(str(held["file"])).name, held["line"], held["byte_offset"]) == (
            f"a-long.{fmt}",
            long_line_number,
            len(head),
        )
        assert f"line of {long_line:,} bytes is longer than max_line_bytes ({64 << 20:,})" in str(held["reason"])
        assert held["raw_text"] == "\\x00" * 1000
        quarantined = target.read_table("_roundtrip", "file_quarantine").to_pylist()  # type: ignore[union-attr]
        assert [r["raw_bytes"] for r in quarantined] == [long_line]
        manifest = _manifest(target, "orders")
        entry = manifest[f"a-long.{fmt}"]
        assert (entry.status, entry.rows, entry.held_back) == (state.LOADED, 5, 1)
        content = (landing / f"a-long.{fmt}").read_bytes()
        assert entry.fingerprint == entry.content_hash == _md5(content)
        del content
        if run == "faulty":
            assert report.held_back == 1
        else:  # the same file: not read again, nothing held back twice
            assert (report.read, report.files_skipped, report.held_back) == (0, 2, 0)


def test_max_line_bytes_is_a_setting_and_a_line_at_the_limit_loads(target: Warehouse, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    at_limit = json.dumps({"order_id": "fits", "quantity": "1", "note": "x" * 100}).encode()
    over = json.dumps({"order_id": "over", "quantity": "1", "note": "x" * 101}).encode()
    (landing / "o.jsonl").write_bytes(at_limit + b"\r\n" + over + b"\n" + _orders("k", 2))
    stream = FileStreamConfig.model_validate(  # as loaders.yml gives it
        {"path": str(landing), "table": "orders", "target_schema": "bronze", "columns": COLUMNS}
        | {"max_line_bytes": len(at_limit)}
    )
    assert stream.max_line_bytes == len(at_limit)
    assert (
        FileStreamConfig.model_validate({"path": ".", "table": "t", "max_line_bytes": "2 MiB"}).max_line_bytes
        == 2 << 20
    )

    jobs.load_files("orders", stream, target)

    assert _bronze(target) == Counter({("o.jsonl", "fits", 1): 1, ("o.jsonl", "k1", 3): 1, ("o.jsonl", "k2", 4): 1})
    [held] = _quarantine(target, "orders")
    assert (held["line"], held["byte_offset"]) == (2, len(at_limit) + 2)
    assert f"line of {len(over):,} bytes" in str(held["reason"])
    assert held["raw_text"] == over.decode()


# ---------------------------------------------------------------- 3. a CSV header wider than allowed


@pytest.mark.parametrize("declared", [True, False], ids=["declared-columns", "max-columns"])
def test_a_csv_header_of_a_million_columns_holds_back_one_file(
    target: Warehouse, tmp_path: Path, declared: bool
) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    width = 1_000_000
    header = ",".join(f"c{i}" for i in range(width)).encode()
    (landing / "a-wide.csv").write_bytes(header + b"\n" + b",".join([b"1"] * width) + b"\n")
    (landing / "b-good.csv").write_bytes(b"order_id,quantity,note\ng1,1,ok\ng2,2,ok\n")
    stream = FileStreamConfig(
        path=str(landing),
        format="csv",
        table="orders",
        target_schema="bronze",
        columns=COLUMNS if declared else None,
    )

    for run in ("faulty", "next"):
        report = jobs.load_files("orders", stream, target)
        assert _bronze(target) == _expected("b-good.csv", "g", 2, first_line=2), run
        [held] = _quarantine(target, "orders")
        assert (Path(str(held["file"])).name, held["kind"]) == ("a-wide.csv", "file")
        limit = "the stream declares 3" if declared else "max_columns is 1,600"
        assert f"header: 1,000,000 columns, {limit}" in str(held["reason"])
        assert len(str(held["reason"])) < 300  # the reason names a few columns, not a million
        entry = _manifest(target, "orders")["a-wide.csv"]
        assert (entry.status, entry.rows, entry.held_back) == (state.HELD_BACK, 0, 1)
        assert report.held_back == (1 if run == "faulty" else 0)
    columns = target.read_table("bronze", "orders").column_names  # type: ignore[union-attr]
    assert len(columns) < 10  # no column of the wide file reached the table


def test_json_fields_past_max_columns_hold_back_the_file(target: Warehouse, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a-wide.jsonl").write_bytes(json.dumps({f"f{i}": "1" for i in range(7)}).encode() + b"\n")
    (landing / "b-good.jsonl").write_bytes(_orders("g", 2))
    stream = FileStreamConfig(path=str(landing), table="orders", target_schema="bronze", max_columns=5)

    jobs.load_files("orders", stream, target)

    assert _bronze(target) == _expected("b-good.jsonl", "g", 2)
    [held] = _quarantine(target, "orders")
    assert "more than max_columns (5) distinct fields" in str(held["reason"])


# ---------------------------------------------------------------- 4. links that loop or lead nowhere

CONFIG = """
files:
  orders:
    path: ${ROUNDTRIP_LANDING_PATH}/orders
    table: orders
    columns: [order_id, quantity, note]
  clicks:
    path: ${ROUNDTRIP_LANDING_PATH}/clicks
    table: clicks
    columns: [order_id, quantity, note]
"""


def _cli(data: Path, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUNDTRIP_")}
    env.update(
        {"ROUNDTRIP_DATA_DIR": str(data), "ROUNDTRIP_DUCKDB_EXTENSION_DIR": str(PROJECT_ROOT / ".duckdb_extensions")}
    )
    done = subprocess.run(
        [sys.executable, "-m", "loaders", *args, "--config", str(data / "loaders.yml"), "--target", "duckdb", "--json"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_links_that_loop_or_lead_nowhere_are_held_back_and_every_other_file_and_stream_loads(tmp_path: Path) -> None:
    from loaders.warehouse.duckdb import DuckDBWarehouse

    data = tmp_path / "data"
    orders, clicks = data / "landing" / "orders", data / "landing" / "clicks"
    orders.mkdir(parents=True)
    clicks.mkdir(parents=True)
    (data / "loaders.yml").write_text(CONFIG)
    (orders / "a.jsonl").write_bytes(_orders("a", 2))
    (orders / "loop1.jsonl").symlink_to("loop2.jsonl")
    (orders / "loop2.jsonl").symlink_to("loop1.jsonl")
    (orders / "dangling.jsonl").symlink_to("nowhere.jsonl")
    os.mkfifo(orders / "pipe.jsonl")  # opening it would wait for a writer forever
    (orders / "z.jsonl").write_bytes(_orders("z", 3))
    (clicks / "c.jsonl").write_bytes(_orders("c", 2))

    def look() -> tuple[Counter[tuple[str, str, int]], Counter[tuple[str, str, int]], dict[str, str], dict[str, str]]:
        warehouse = DuckDBWarehouse(data / "warehouse.duckdb")
        try:
            held = {Path(str(r["file"])).name: str(r["reason"]) for r in _quarantine(warehouse, "orders")}
            manifest = {name: e.status for name, e in _manifest(warehouse, "orders").items()}
            return _bronze(warehouse, "orders"), _bronze(warehouse, "clicks"), held, manifest
        finally:
            warehouse.close()

    code, reports, stderr = _cli(data, "files")
    assert code == 2, stderr  # done, with something held back
    bronze_orders, bronze_clicks, held, manifest = look()
    assert bronze_orders == _expected("a.jsonl", "a", 2) + _expected("z.jsonl", "z", 3)
    assert bronze_clicks == _expected("c.jsonl", "c", 2)
    assert set(held) == {"loop1.jsonl", "loop2.jsonl", "dangling.jsonl", "pipe.jsonl"}
    assert "Too many levels of symbolic links (a symbolic link to 'loop2.jsonl')" in held["loop1.jsonl"]
    assert "No such file or directory (a symbolic link to 'nowhere.jsonl')" in held["dangling.jsonl"]
    assert "not a regular file" in held["pipe.jsonl"]
    assert {name: status for name, status in manifest.items() if status == state.HELD_BACK} == dict.fromkeys(
        held, state.HELD_BACK
    )
    assert {r["source"]: r["held_back"] for r in reports} == {"files:orders": 4, "files:clicks": 0}

    code, reports, stderr = _cli(data, "files")  # the same folder: nothing new, nothing held back twice
    assert code == 0, stderr
    assert all(r["read"] == 0 for r in reports)
    assert look() == (bronze_orders, bronze_clicks, held, manifest)

    (orders / "nowhere.jsonl.real").write_bytes(_orders("n", 2))
    (orders / "dangling.jsonl").unlink()
    (orders / "dangling.jsonl").symlink_to("nowhere.jsonl.real")  # fixed: the link leads to a file now
    (orders / "loop1.jsonl").unlink()
    (orders / "loop1.jsonl").write_bytes(_orders("l", 1))  # the loop is broken by a real file
    code, _, stderr = _cli(data, "files", "--stream", "orders")
    assert code == 0, stderr
    bronze_orders, _, held, manifest = look()
    assert bronze_orders == (
        _expected("a.jsonl", "a", 2)
        + _expected("z.jsonl", "z", 3)
        + _expected("dangling.jsonl", "n", 2)
        + _expected("loop1.jsonl", "l", 1)
    )
    assert set(held) == {"pipe.jsonl"}  # loop2.jsonl now leads to loop1.jsonl: the same content
    assert manifest["loop2.jsonl"] == state.DUPLICATE
