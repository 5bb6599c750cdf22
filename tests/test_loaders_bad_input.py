"""Bad input through ``python -m loaders files`` on DuckDB and Postgres: a corpus of broken
JSON lines, CSV and Parquet files, each next to good lines and followed by good files.

For every kind: each good line is in bronze exactly once, with its physical line; each bad line
(or file) is in ``_roundtrip.file_quarantine`` with its line, byte offset and reason; the files
sorted after it load; the run exits 2. A second run reads nothing again and holds nothing back
twice; a fixed file loads on the next run and leaves the quarantine.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loaders.warehouse import Warehouse
from roundtrip.core.paths import PROJECT_ROOT

COLUMNS = ["order_id", "quantity", "note"]
BOM = b"\xef\xbb\xbf"


def rec(order_id: str | None, **fields: Any) -> bytes:
    """One good JSON line (no line break)."""
    record = {"order_id": order_id, "quantity": "1", "note": "ok", **fields}
    return json.dumps({k: v for k, v in record.items() if v is not ...}, ensure_ascii=False).encode()


def lines(*parts: bytes, end: bytes = b"\n") -> bytes:
    return b"\n".join(parts) + end


def parquet(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


@dataclass
class Kind:
    """One kind of bad (or tricky) input, in a file of its own."""

    name: str
    stream: str  # jsonl | csv | parquet
    content: bytes
    good: list[tuple[int, str | None]]  # (physical line, order_id) expected in bronze
    bad: list[tuple[int | None, str]] = field(default_factory=list)  # (line or None: the file, reason part)
    missing: dict[str, str] = field(default_factory=dict)  # order_id -> _missing_fields (others: NULL)
    values: dict[str, dict[str, str | None]] = field(default_factory=dict)  # order_id -> some columns

    @property
    def file(self) -> str:
        number = CORPUS.index(self) + 1
        return f"{number:02d}-{self.name}.{'jsonl' if self.stream == 'jsonl' else self.stream}"


_LONG = b'{"order_id": "' + b"x" * 5000 + b"  truncated"
_TABLE = pa.table({"order_id": ["pq-1", "pq-2"], "quantity": ["1", "2"], "note": ["a", None]})

CORPUS: list[Kind] = [
    # --------------------------------------------------------------- JSON lines
    Kind(
        "truncated-line",
        "jsonl",
        lines(rec("tr-1"), b'{"order_id": "tr-2", "quan', rec("tr-3")),
        [(1, "tr-1"), (3, "tr-3")],
        [(2, "Unterminated string")],
    ),
    Kind(
        "invalid-utf8",
        "jsonl",
        lines(rec("u8-1"), b'{"order_id": "caf\xe9"}', rec("u8-3")),
        [(1, "u8-1"), (3, "u8-3")],
        [(2, "not valid UTF-8 (byte 0xe9")],
    ),
    Kind(
        "nul-byte",
        "jsonl",
        lines(rec("nul-1"), b'{"order_id": "a\x00b"}', rec("nul-3")),
        [(1, "nul-1"), (3, "nul-3")],
        [(2, "NUL byte at column 16")],
    ),
    Kind("bom-at-start", "jsonl", BOM + lines(rec("bom-1"), rec("bom-2")), [(1, "bom-1"), (2, "bom-2")]),
    Kind(
        "array-line",
        "jsonl",
        lines(rec("arr-1"), b"[1, 2]", rec("arr-3")),
        [(1, "arr-1"), (3, "arr-3")],
        [(2, "a JSON array, not an object")],
    ),
    Kind("empty-jsonl", "jsonl", b"", []),
    Kind(
        "blank-lines",
        "jsonl",
        lines(rec("bl-1"), b"", b"   ", rec("bl-4"), b"\t\r", rec("bl-6")),
        [(1, "bl-1"), (4, "bl-4"), (6, "bl-6")],
    ),
    Kind("crlf", "jsonl", rec("crlf-1") + b"\r\n" + rec("crlf-2") + b"\r\n", [(1, "crlf-1"), (2, "crlf-2")]),
    Kind(
        "trailing-comma",
        "jsonl",
        lines(b'{"order_id": "tc-1", "quantity": "1",}', rec("tc-2")),
        [(2, "tc-2")],
        [(1, "not valid JSON: Expecting property name")],
    ),
    Kind(
        "nan",
        "jsonl",
        lines(rec("nan-1"), b'{"order_id": "nan-2", "quantity": NaN}'),
        [(1, "nan-1")],
        [(2, "NaN is not a JSON number")],
    ),
    Kind(
        "duplicate-key",
        "jsonl",
        lines(b'{"order_id": "dk-1", "order_id": "dk-1b"}', rec("dk-2")),
        [(2, "dk-2")],
        [(1, "field 'order_id' appears more than once")],
    ),
    Kind(
        "unexpected-field",
        "jsonl",
        lines(rec("uf-1", price="2"), rec("uf-2")),
        [(2, "uf-2")],
        [(1, "unexpected field(s) 'price'")],
    ),
    Kind(
        "scalar-lines",
        "jsonl",
        lines(b"42", b'"text"', b"true", rec("sc-4")),
        [(4, "sc-4")],
        [(1, "a JSON number, not an object"), (2, "a JSON string"), (3, "a JSON boolean")],
    ),
    Kind("null-line", "jsonl", lines(b"null", rec("nl-2")), [(2, "nl-2")], [(1, "a JSON null, not an object")]),
    Kind(
        "escaped-nul",
        "jsonl",
        lines(rec("en-1"), b'{"order_id": "en-2", "note": "a\\u0000b"}'),
        [(1, "en-1")],
        [(2, "NUL character (\\u0000)")],
    ),
    Kind(
        "lone-surrogate",
        "jsonl",
        lines(b'{"order_id": "ls-1", "note": "\\ud800"}', rec("ls-2")),
        [(2, "ls-2")],
        [(1, "no low surrogate")],
    ),
    Kind(
        "two-objects-on-a-line",
        "jsonl",
        lines(rec("two-1") + rec("two-1b"), rec("two-2")),
        [(2, "two-2")],
        [(1, "Extra data")],
    ),
    Kind("no-final-line-break", "jsonl", lines(rec("nf-1"), rec("nf-2"), end=b""), [(1, "nf-1"), (2, "nf-2")]),
    Kind(
        "truncated-last-line",
        "jsonl",
        lines(rec("tl-1"), b'{"order_id": "tl-2", "qu', end=b""),
        [(1, "tl-1")],
        [(2, "Unterminated string")],
    ),
    Kind(
        "raw-control-character",
        "jsonl",
        lines(b'{"order_id": "cc-1", "note": "a\tb"}', rec("cc-2")),
        [(2, "cc-2")],
        [(1, "Invalid control character")],
    ),
    Kind("bom-inside", "jsonl", lines(rec("bi-1"), BOM + rec("bi-2")), [(1, "bi-1"), (2, "bi-2")]),
    Kind(
        "missing-fields",
        "jsonl",
        lines(
            b'{"order_id": "mf-1"}',
            b'{"order_id": "mf-2", "quantity": null, "note": null}',
            b'{"order_id": "mf-3", "note": "x"}',
            b"{}",
        ),
        [(1, "mf-1"), (2, "mf-2"), (3, "mf-3"), (4, None)],
        missing={"mf-1": "quantity,note", "mf-3": "quantity", "": "order_id,quantity,note"},
        values={"mf-2": {"quantity": None, "note": None}},
    ),
    Kind(
        "names-that-sanitize-alike",
        "jsonl",
        lines(b'{"Order ID": "sa-1", "order_id": "sa-1b"}', b'{"Order ID": "sa-2", "Quantity": "3"}'),
        [(2, "sa-2")],
        [(1, "fields 'Order ID' and 'order_id' both become column 'order_id'")],
        missing={"sa-2": "note"},
        values={"sa-2": {"quantity": "3"}},
    ),
    Kind(
        "latin1-file",
        "jsonl",
        lines(b'{"order_id": "l1-1", "note": "caf\xe9"}', b'{"order_id": "l1-2", "note": "na\xefve"}'),
        [],
        [(1, "not valid UTF-8"), (2, "not valid UTF-8")],
    ),
    Kind(
        "nested-and-numbers",
        "jsonl",
        lines(b'{"order_id": "nv-1", "quantity": 2, "note": {"a": [1, 2.5]}}'),
        [(1, "nv-1")],
        values={"nv-1": {"quantity": "2", "note": '{"a":[1,2.5]}'}},
    ),
    Kind(
        "single-quotes-and-comments",
        "jsonl",
        lines(b"{'order_id': 'sq-1'}", b"// a comment", rec("sq-3")),
        [(3, "sq-3")],
        [(1, "Expecting property name enclosed in double quotes"), (2, "Expecting value")],
    ),
    Kind(
        "csv-named-jsonl",
        "jsonl",
        lines(b"order_id,quantity", b"x,1"),
        [],
        [(1, "not valid JSON"), (2, "not valid JSON")],
    ),
    Kind(
        "long-bad-line",
        "jsonl",
        lines(_LONG, rec("ll-2")),
        [(2, "ll-2")],
        [(1, "Unterminated string")],
    ),
    # --------------------------------------------------------------- CSV
    Kind(
        "csv-missing-field",
        "csv",
        lines(b"order_id,quantity,note", b"cm-1,1,ok", b"cm-2,1", b"cm-3,1,ok"),
        [(2, "cm-1"), (4, "cm-3")],
        [(3, "2 field(s), the header has 3")],
    ),
    Kind(
        "csv-extra-field",
        "csv",
        lines(b"order_id,quantity,note", b"ce-1,1,ok,extra", b"ce-2,1,ok"),
        [(3, "ce-2")],
        [(2, "4 field(s), the header has 3")],
    ),
    Kind(
        "csv-unterminated-quote",
        "csv",
        lines(b"order_id,quantity,note", b"cu-1,1,ok", b'cu-2,1,"never closed', b"cu-3,1,ok"),
        [(2, "cu-1")],
        [(3, "unexpected end of data")],
    ),
    Kind(
        "csv-text-after-a-quote",
        "csv",
        lines(b"order_id,quantity,note", b'cq-1,1,"a"b', b"cq-2,1,ok"),
        [(3, "cq-2")],
        [(2, "',' expected after '\"'")],
    ),
    Kind("csv-header-collision", "csv", lines(b"Order ID,order_id", b"x,y"), [], [(None, "both become 'order_id'")]),
    Kind(
        "csv-header-unexpected", "csv", lines(b"order_id,price", b"x,1"), [], [(None, "unexpected column(s) ['price']")]
    ),
    Kind(
        "csv-quoted-line-break",
        "csv",
        lines(b"order_id,quantity,note", b'cl-1,1,"two', b'lines"', b"cl-2,1,ok"),
        [(2, "cl-1"), (4, "cl-2")],
        values={"cl-1": {"note": "two\nlines"}},
    ),
    Kind("csv-bom", "csv", BOM + lines(b"order_id,quantity,note", b"cb-1,1,ok"), [(2, "cb-1")]),
    Kind("csv-empty", "csv", b"", []),
    Kind("csv-header-only", "csv", lines(b"order_id,quantity,note"), []),
    Kind(
        "csv-invalid-utf8",
        "csv",
        lines(b"order_id,quantity,note", b"cv-1,1,caf\xe9", b"cv-2,1,ok"),
        [(3, "cv-2")],
        [(2, "not valid UTF-8")],
    ),
    Kind(
        "csv-nul-byte",
        "csv",
        lines(b"order_id,quantity,note", b"cn-1,1,a\x00", b"cn-2,1,ok"),
        [(3, "cn-2")],
        [(2, "NUL byte")],
    ),
    Kind(
        "csv-header-lacks-a-column",
        "csv",
        lines(b"order_id,quantity", b"ch-1,1", b"", b"ch-2,"),
        [(2, "ch-1"), (4, "ch-2")],
        missing={"ch-1": "note", "ch-2": "note"},
        values={"ch-2": {"quantity": None}},
    ),
    # --------------------------------------------------------------- Parquet
    Kind("parquet-empty", "parquet", b"", []),
    Kind("parquet-corrupt", "parquet", b"PAR1 this is not Parquet PAR1", [], [(None, "cannot read as parquet")]),
    Kind("parquet-truncated", "parquet", parquet(_TABLE)[:-40], [], [(None, "cannot read as parquet")]),
    Kind(
        "parquet-lacks-a-column",
        "parquet",
        parquet(pa.table({"order_id": ["pl-1"], "quantity": [7]})),
        [(1, "pl-1")],
        missing={"pl-1": "note"},
        values={"pl-1": {"quantity": "7"}},
    ),
    Kind(
        "parquet-unexpected-column",
        "parquet",
        parquet(pa.table({"order_id": ["pu-1"], "price": [1.5]})),
        [],
        [(None, "unexpected column(s) ['price']")],
    ),
]
# what comes after every bad file, in each stream: it must load
AFTER = {
    "jsonl": Kind("after", "jsonl", lines(rec("after-j1"), rec("after-j2")), [(1, "after-j1"), (2, "after-j2")]),
    "csv": Kind("after", "csv", lines(b"order_id,quantity,note", b"after-c1,1,ok"), [(2, "after-c1")]),
    "parquet": Kind(
        "after",
        "parquet",
        parquet(pa.table({"order_id": ["after-p1"], "quantity": ["1"], "note": ["ok"]})),
        [(1, "after-p1")],
    ),
}
STREAMS = ("jsonl", "csv", "parquet")
CONFIG = "files:\n" + "".join(
    f"  {s}:\n    path: ${{ROUNDTRIP_LANDING_PATH}}/{s}\n    format: {s}\n    table: {s}\n"
    f"    columns: [order_id, quantity, note]\n"
    for s in STREAMS
)


def test_the_corpus_has_more_than_25_kinds() -> None:
    assert len(CORPUS) >= 25
    assert len({k.name for k in CORPUS}) == len(CORPUS)


def _write_landing(landing: Path) -> None:
    for kind in CORPUS:
        (landing / kind.stream).mkdir(parents=True, exist_ok=True)
        (landing / kind.stream / kind.file).write_bytes(kind.content)
    for stream, kind in AFTER.items():
        (landing / stream / f"zz-{kind.name}.{stream}").write_bytes(kind.content)


def _cli(data: Path, env_extra: dict[str, str], target: str, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUNDTRIP_")}
    env.update(
        {"ROUNDTRIP_DATA_DIR": str(data), "ROUNDTRIP_DUCKDB_EXTENSION_DIR": str(PROJECT_ROOT / ".duckdb_extensions")}
    )
    env.update(env_extra)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loaders",
            *args,
            "--config",
            str(data / "loaders.yml"),
            "--target",
            target,
            "--json",
            "-q",
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


@dataclass
class Landed:
    target: str
    data: Path
    env: dict[str, str]

    def cli(self, *args: str) -> tuple[int, list[dict[str, Any]], str]:
        return _cli(self.data, self.env, self.target, *args)

    def open(self) -> Warehouse:
        if self.target == "duckdb":
            from loaders.warehouse.duckdb import DuckDBWarehouse

            return DuckDBWarehouse(self.data / "warehouse.duckdb")
        from loaders.warehouse.postgres import PostgresWarehouse

        return PostgresWarehouse(self.env["ROUNDTRIP_WAREHOUSE_URL"])

    def snapshot(self) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]], list[dict[str, Any]]]:
        """(bronze rows per stream, quarantine rows, manifest rows)."""
        warehouse = self.open()
        try:
            bronze = {}
            for stream in STREAMS:
                table = warehouse.read_table("bronze", stream)
                bronze[stream] = table.to_pylist() if table is not None else []
            quarantine = warehouse.read_table("_roundtrip", "file_quarantine")
            manifest = warehouse.read_table("_roundtrip", "file_manifest")
            return (
                bronze,
                quarantine.to_pylist() if quarantine is not None else [],
                manifest.to_pylist() if manifest is not None else [],
            )
        finally:
            warehouse.close()


@pytest.fixture(params=[pytest.param("duckdb"), pytest.param("postgres", marks=pytest.mark.postgres)])
def landed(request: pytest.FixtureRequest, tmp_path: Path) -> Landed:
    data = tmp_path / "data"
    _write_landing(data / "landing")
    (data / "loaders.yml").write_text(CONFIG)
    env = {}
    if request.param == "postgres":
        env["ROUNDTRIP_WAREHOUSE_URL"] = request.getfixturevalue("pg_database").url()
    return Landed(request.param, data, env)


def _expected_bronze(kinds: list[Kind]) -> Counter[tuple[str, int, str | None]]:
    return Counter(
        (k.file if k.name != "after" else f"zz-after.{k.stream}", line, oid) for k in kinds for line, oid in k.good
    )


def test_every_good_line_loads_once_and_every_bad_one_is_held_back_with_its_line(landed: Landed) -> None:
    code, reports, stderr = landed.cli("files")
    assert code == 2, stderr
    bronze, quarantine, _ = landed.snapshot()

    for stream in STREAMS:
        kinds = [k for k in CORPUS if k.stream == stream] + [AFTER[stream]]
        got = Counter((Path(r["_source_file"]).name, r["_source_line"], r["order_id"]) for r in bronze[stream])
        assert got == _expected_bronze(kinds), stream  # every good line, exactly once
        by_id = {r["order_id"] or "": r for r in bronze[stream]}
        for kind in kinds:
            for order_id, missing in kind.missing.items():
                assert by_id[order_id]["_missing_fields"] == missing, (kind.name, order_id)
            for order_id, values in kind.values.items():
                assert {c: by_id[order_id][c] for c in values} == values, (kind.name, order_id)
            for _, order_id in kind.good:
                if (order_id or "") not in kind.missing:
                    assert by_id[order_id or ""]["_missing_fields"] is None, (kind.name, order_id)

    held = {(Path(r["source_file"]).name, r["source_line"]): r for r in quarantine}
    expected = {(k.file, line): reason for k in CORPUS for line, reason in k.bad}
    assert set(held) == set(expected)
    for key, reason in expected.items():
        assert reason in held[key]["reason"], (key, held[key]["reason"])
    # where each bad line starts, and what it was
    utf8 = held[(next(k.file for k in CORPUS if k.name == "invalid-utf8"), 2)]
    assert utf8["byte_offset"] == len(rec("u8-1")) + 1
    assert utf8["raw_text"] == '{"order_id": "caf\\xe9"}' and utf8["raw_bytes"] == 20
    nul = held[(next(k.file for k in CORPUS if k.name == "nul-byte"), 2)]
    assert nul["raw_text"] == '{"order_id": "a\\x00b"}'
    long = held[(next(k.file for k in CORPUS if k.name == "long-bad-line"), 1)]
    assert (len(long["raw_text"]), long["raw_bytes"]) == (1000, len(_LONG))
    whole = held[(next(k.file for k in CORPUS if k.name == "parquet-corrupt"), None)]
    assert whole["byte_offset"] is None

    by_stream = {r["source"]: r for r in reports}
    for stream in STREAMS:
        counted = sum(len(k.bad) for k in CORPUS if k.stream == stream)
        assert by_stream[f"files:{stream}"]["held_back"] == counted
        assert by_stream[f"files:{stream}"]["inserted"] == len(bronze[stream])


def test_a_second_run_reads_nothing_again_and_a_fixed_file_loads(landed: Landed) -> None:
    assert landed.cli("files")[0] == 2
    bronze, quarantine, manifest = landed.snapshot()

    code, reports, _ = landed.cli("files")
    assert code == 0  # nothing new held back
    assert all(r["files_loaded"] == 0 and r["read"] == 0 for r in reports)
    assert landed.snapshot() == (bronze, quarantine, manifest)  # not re-read: same rows, same held_at

    truncated = next(k for k in CORPUS if k.name == "truncated-line")
    path = landed.data / "landing" / "jsonl" / truncated.file
    path.write_bytes(lines(rec("tr-1"), rec("tr-2"), rec("tr-3")))
    code, reports, _ = landed.cli("files", "--stream", "jsonl")
    assert code == 0
    assert (reports[0]["files_loaded"], reports[0]["deleted"], reports[0]["inserted"]) == (1, 2, 3)
    after, held, _ = landed.snapshot()
    mine = sorted((r["_source_line"], r["order_id"]) for r in after["jsonl"] if r["_source_file"] == str(path))
    assert mine == [(1, "tr-1"), (2, "tr-2"), (3, "tr-3")]
    assert [r for r in held if r["source_file"] == str(path)] == []
    assert len(held) == len(quarantine) - 1


def test_quarantine_lists_what_was_held_back(landed: Landed) -> None:
    landed.cli("files")
    code, rows, _ = landed.cli("quarantine", "--stream", "csv", "--limit", "0")
    assert code == 0
    expected = sorted((k.file, line) for k in CORPUS if k.stream == "csv" for line, _ in k.bad)
    assert sorted((Path(r["file"]).name, r["line"]) for r in rows) == expected
    assert {r["kind"] for r in rows} == {"line", "file"}
