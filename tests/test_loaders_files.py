"""Files -> every warehouse: the manifest, a changed file, catalog snapshots, coercion, remote stores."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from loaders import jobs, state
from loaders.config import FileStreamConfig
from loaders.warehouse import Warehouse
from tests.loader_fixtures import rows_by_key

ORDER_FIELDS = ["order_id", "quantity", "note"]


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def _write(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


def _orders(prefix: str, count: int, note: str = "ok") -> bytes:
    return _jsonl([{"order_id": f"{prefix}{i}", "quantity": str(i), "note": note} for i in range(1, count + 1)])


def _loaded(warehouse: Warehouse, schema: str) -> list[tuple[str, str, int, str | None]]:
    rows = rows_by_key(warehouse, schema, "orders", "order_id")
    return [(Path(r["_source_file"]).name, r["order_id"], r["_source_line"], r["note"]) for r in rows]


def test_rerun_loads_nothing_and_a_changed_file_replaces_exactly_its_rows(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    landing = tmp_path / "landing"
    _write(landing / "dt=2024-01-01" / "a.jsonl", _orders("a", 2))
    _write(landing / "dt=2024-01-02" / "b.jsonl", _orders("b", 3))
    stream = FileStreamConfig(path=str(landing), table="orders", target_schema=schema_name, columns=ORDER_FIELDS)

    first = jobs.load_files(schema_name, stream, warehouse)
    assert (first.files_loaded, first.result.inserted) == (2, 5)

    again = jobs.load_files(schema_name, stream, warehouse)
    assert (again.files_loaded, again.files_skipped, again.read, again.result.inserted) == (0, 2, 0, 0)

    _write(landing / "dt=2024-01-01" / "a.jsonl", _orders("a", 1, note="fixed"))  # a shorter, corrected file
    changed = jobs.load_files(schema_name, stream, warehouse)

    assert (changed.files_loaded, changed.files_skipped) == (1, 1)
    assert (changed.result.deleted, changed.result.inserted) == (2, 1)
    assert _loaded(warehouse, schema_name) == [
        ("a.jsonl", "a1", 1, "fixed"),
        ("b.jsonl", "b1", 1, "ok"),
        ("b.jsonl", "b2", 2, "ok"),
        ("b.jsonl", "b3", 3, "ok"),
    ]
    manifest = state.read_manifest(warehouse, schema_name)
    a_path = str(landing / "dt=2024-01-01" / "a.jsonl")
    assert sorted(Path(p).name for p in manifest) == ["a.jsonl", "b.jsonl"]
    assert (manifest[a_path].rows, manifest[a_path].size) == (1, (landing / "dt=2024-01-01" / "a.jsonl").stat().st_size)


def test_catalog_strategy_swaps_in_the_current_files_and_an_empty_source_empties_the_table(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    landing = tmp_path / "catalog"
    _write(landing / "part-1.csv", b"order_id,quantity,note\nc1,1,x\nc2,2,\n")
    _write(landing / "part-2.csv", b"order_id,quantity,note\nc3,3,\xc3\xa9t\xc3\xa9\n")
    stream = FileStreamConfig(
        path=str(landing),
        format="csv",
        strategy="catalog",
        table="orders",
        target_schema=schema_name,
        columns=ORDER_FIELDS,
    )
    assert jobs.load_files(schema_name, stream, warehouse).result.inserted == 3
    assert jobs.load_files(schema_name, stream, warehouse).files_skipped == 2  # unchanged set: nothing loaded

    (landing / "part-1.csv").unlink()
    report = jobs.load_files(schema_name, stream, warehouse)
    assert (report.result.inserted, report.result.deleted) == (1, 3)
    assert _loaded(warehouse, schema_name) == [("part-2.csv", "c3", 2, "été")]  # the physical line

    (landing / "part-2.csv").unlink()
    jobs.load_files(schema_name, stream, warehouse)
    emptied = warehouse.read_table(schema_name, "orders")
    assert emptied is not None and emptied.num_rows == 0
    assert state.read_manifest(warehouse, schema_name) == {}


def test_unparseable_values_are_rejected_with_file_and_line_and_the_rest_loads(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    landing = tmp_path / "typed"
    _write(
        landing / "t.jsonl",
        _jsonl(
            [
                {"order_id": "t1", "quantity": "2", "price": "9.99"},
                {"order_id": "t2", "quantity": None, "price": None},
                {"order_id": "t3", "quantity": "two", "price": "1.5"},
                {"order_id": "t4", "quantity": "4", "price": "12.345x"},
            ]
        ),
    )
    stream = FileStreamConfig(
        path=str(landing),
        table="orders",
        target_schema=schema_name,
        types={"quantity": "bigint", "price": "decimal(10, 2)"},
    )

    report = jobs.load_files(schema_name, stream, warehouse)

    assert (report.read, report.result.inserted, report.rejected) == (4, 2, 2)
    rows = rows_by_key(warehouse, schema_name, "orders", "order_id")
    assert [(r["order_id"], r["quantity"], r["price"], r["_source_line"]) for r in rows] == [
        ("t1", 2, Decimal("9.99"), 1),
        ("t2", None, None, 2),
    ]
    rejects = warehouse.read_table("_roundtrip", "file_rejects")
    assert rejects is not None
    found = sorted(
        (Path(r["source_file"]).name, r["source_line"], r["column_name"], r["value"])
        for r in rejects.to_pylist()
        if r["stream"] == schema_name
    )
    assert found == [("t.jsonl", 3, "quantity", "two"), ("t.jsonl", 4, "price", "12.345x")]


def test_two_columns_that_sanitize_alike_hold_the_file_back(tmp_path: Path) -> None:
    from loaders.warehouse.duckdb import DuckDBWarehouse

    _write(tmp_path / "in" / "x.csv", b"Order ID,order_id\n1,2\n")
    _write(tmp_path / "in" / "y.csv", b"Order ID,other\n3,4\n")
    stream = FileStreamConfig(path=str(tmp_path / "in"), format="csv", table="x")
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    try:
        report = jobs.load_files("x", stream, warehouse)
        rows = rows_by_key(warehouse, "bronze", "x", "order_id", drop=("_loaded_at",))
        held = state.read_held_back(warehouse, "x")
    finally:
        warehouse.close()
    assert (report.held_back, report.result.inserted) == (1, 1)
    assert [(Path(str(r["_source_file"])).name, r["order_id"], r["other"]) for r in rows] == [("y.csv", "3", "4")]
    assert [(Path(str(h["file"])).name, h["line"], h["reason"]) for h in held] == [
        ("x.csv", None, "cannot read as csv: header: columns 'Order ID' and 'order_id' both become 'order_id'")
    ]


def test_column_names_are_sanitized(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from loaders.warehouse.duckdb import DuckDBWarehouse

    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"Order ID": ["1"], "2nd-Value": ["v"]}), tmp_path / "in" / "x.parquet")
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    try:
        jobs.load_files("x", FileStreamConfig(path=str(tmp_path / "in"), format="parquet", table="x"), warehouse)
        data = warehouse.read_table("bronze", "x")
    finally:
        warehouse.close()
    assert data is not None
    assert data.column_names == ["order_id", "_2nd_value", "_source_file", "_source_line", "_loaded_at"]


def _remote_round(fs: Any, url: str, stream: FileStreamConfig, warehouse: Warehouse) -> None:
    """Load from an object store, re-run, overwrite one object: the same guarantees as locally."""
    fs.pipe(f"{url}/one.jsonl", _orders("r", 2))
    fs.pipe(f"{url}/two.jsonl", _orders("s", 1))
    assert jobs.load_files("remote", stream, warehouse).result.inserted == 3
    assert jobs.load_files("remote", stream, warehouse).files_skipped == 2
    fs.pipe(f"{url}/one.jsonl", _orders("r", 3, note="v2"))
    report = jobs.load_files("remote", stream, warehouse)
    assert (report.files_loaded, report.result.deleted, report.result.inserted) == (1, 2, 3)
    rows = rows_by_key(warehouse, "bronze", "orders", "order_id")
    assert [(r["order_id"], r["note"], r["_source_file"]) for r in rows] == [
        ("r1", "v2", f"{url}/one.jsonl"),
        ("r2", "v2", f"{url}/one.jsonl"),
        ("r3", "v2", f"{url}/one.jsonl"),
        ("s1", "ok", f"{url}/two.jsonl"),
    ]


@pytest.mark.object_store
def test_files_from_gcs(gcs_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    from loaders.warehouse.duckdb import DuckDBWarehouse

    for name, value in gcs_emulator.env().items():
        monkeypatch.setenv(name, value)
    gcs_emulator.create_bucket("landing-files")
    url = "gs://landing-files/orders"
    stream = FileStreamConfig(path=url, table="orders", columns=ORDER_FIELDS, storage_options={"token": "anon"})
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    try:
        _remote_round(fsspec.filesystem("gs", token="anon"), url, stream, warehouse)
    finally:
        warehouse.close()


@pytest.mark.object_store
def test_files_from_s3(s3_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    from loaders.warehouse.duckdb import DuckDBWarehouse

    for name, value in s3_emulator.env().items():
        monkeypatch.setenv(name, value)
    s3_emulator.create_bucket("landing-files")
    url = "s3://landing-files/orders"
    stream = FileStreamConfig(path=url, table="orders", columns=ORDER_FIELDS)
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    try:
        _remote_round(fsspec.filesystem("s3"), url, stream, warehouse)
    finally:
        warehouse.close()


@pytest.mark.object_store
def test_files_from_azure_blob(azure_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    from loaders.warehouse.duckdb import DuckDBWarehouse

    for name, value in azure_emulator.env().items():
        monkeypatch.setenv(name, value)
    azure_emulator.create_container("landing-files")
    url = "az://landing-files/orders"
    stream = FileStreamConfig(path=url, table="orders", columns=ORDER_FIELDS)
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    try:
        _remote_round(
            fsspec.filesystem("az", connection_string=azure_emulator.connection_string), url, stream, warehouse
        )
    finally:
        warehouse.close()


def test_json_values_land_in_bronze_as_the_text_that_was_sent(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    """No type guessing: timestamps keep their 'T', 'Z' and offsets, mixed-type fields keep
    their text, and a key missing from a line is NULL."""
    landing = tmp_path / "events"
    _write(
        landing / "e.jsonl",
        _jsonl(
            [
                {"order_id": "o1", "quantity": 2, "note": "2026-11-20T17:47:27.655Z"},
                {"order_id": "o2", "quantity": "two", "note": "2026-11-20T23:30:00+02:00"},
                {"order_id": "o3", "note": 'it\'s "quoted" ✓'},
            ]
        ),
    )
    stream = FileStreamConfig(path=str(landing), table="orders", target_schema=schema_name, columns=ORDER_FIELDS)
    jobs.load_files(schema_name, stream, warehouse)
    rows = rows_by_key(warehouse, schema_name, "orders", "order_id")
    assert [(r["order_id"], r["quantity"], r["note"]) for r in rows] == [
        ("o1", "2", "2026-11-20T17:47:27.655Z"),
        ("o2", "two", "2026-11-20T23:30:00+02:00"),
        ("o3", None, 'it\'s "quoted" ✓'),
    ]


def _manifest(warehouse: Warehouse, stream: str) -> dict[str, tuple[str, int, str | None]]:
    """File name -> (status, rows, name of the original path) of the stream's manifest."""
    return {
        Path(path).name: (e.status, e.rows, Path(e.original_path).name if e.original_path else None)
        for path, e in state.read_manifest(warehouse, stream).items()
    }


def _by_file(warehouse: Warehouse, schema: str) -> list[tuple[str, int, str]]:
    rows = rows_by_key(warehouse, schema, "orders", "order_id")
    return sorted((Path(r["_source_file"]).name, r["_source_line"], r["order_id"]) for r in rows)


def test_a_renamed_file_is_recognized_by_its_content_and_a_copy_is_not_loaded_twice(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    landing = tmp_path / "landing"
    _write(landing / "a.jsonl", _orders("a", 2) + b"not json\n")
    _write(landing / "b.jsonl", _orders("b", 1))
    stream = FileStreamConfig(path=str(landing), table="orders", target_schema=schema_name, columns=ORDER_FIELDS)
    first = jobs.load_files(schema_name, stream, warehouse)
    assert (first.result.inserted, first.held_back) == (3, 1)

    (landing / "archive").mkdir()
    (landing / "a.jsonl").rename(landing / "archive" / "a-2024.jsonl")
    _write(landing / "b-copy.jsonl", _orders("b", 1))
    report = jobs.load_files(schema_name, stream, warehouse)

    assert (report.files_moved, report.files_loaded, report.result.inserted, report.held_back) == (1, 0, 0, 0)
    assert _by_file(warehouse, schema_name) == [
        ("a-2024.jsonl", 1, "a1"),
        ("a-2024.jsonl", 2, "a2"),
        ("b.jsonl", 1, "b1"),
    ]
    assert _manifest(warehouse, schema_name) == {
        "a-2024.jsonl": ("moved", 2, "a.jsonl"),
        "b.jsonl": ("loaded", 1, None),
        "b-copy.jsonl": ("duplicate", 0, "b.jsonl"),
    }
    held = state.read_held_back(warehouse, schema_name)
    assert [(Path(str(h["file"])).name, h["line"]) for h in held] == [("a-2024.jsonl", 3)]  # it follows the file

    again = jobs.load_files(schema_name, stream, warehouse)
    assert (again.files_skipped, again.result.inserted, again.files_moved) == (3, 0, 0)


def test_a_deleted_file_keeps_its_rows_by_default(warehouse: Warehouse, tmp_path: Path, schema_name: str) -> None:
    landing = tmp_path / "landing"
    _write(landing / "a.jsonl", _orders("a", 2))
    _write(landing / "b.jsonl", _orders("b", 1))
    stream = FileStreamConfig(path=str(landing), table="orders", target_schema=schema_name, columns=ORDER_FIELDS)
    jobs.load_files(schema_name, stream, warehouse)

    (landing / "a.jsonl").unlink()
    report = jobs.load_files(schema_name, stream, warehouse)
    assert (report.result.deleted, report.files_skipped) == (0, 1)
    assert _by_file(warehouse, schema_name) == [("a.jsonl", 1, "a1"), ("a.jsonl", 2, "a2"), ("b.jsonl", 1, "b1")]
    assert _manifest(warehouse, schema_name)["a.jsonl"] == ("deleted", 2, None)

    _write(landing / "a.jsonl", _orders("a", 2))  # back, unchanged: nothing to load
    back = jobs.load_files(schema_name, stream, warehouse)
    assert (back.files_loaded, back.result.inserted) == (0, 0)
    assert _manifest(warehouse, schema_name)["a.jsonl"] == ("loaded", 2, None)


def test_deleted_files_drop_deletes_their_rows_and_a_copy_of_them_then_loads(
    warehouse: Warehouse, tmp_path: Path, schema_name: str
) -> None:
    landing = tmp_path / "landing"
    _write(landing / "a.jsonl", _orders("a", 2) + b"[1]\n")
    _write(landing / "b.jsonl", _orders("b", 1))
    stream = FileStreamConfig(
        path=str(landing), table="orders", target_schema=schema_name, columns=ORDER_FIELDS, deleted_files="drop"
    )
    jobs.load_files(schema_name, stream, warehouse)
    _write(landing / "c.jsonl", _orders("b", 1))  # a copy of b: not loaded while b is there
    assert jobs.load_files(schema_name, stream, warehouse).result.inserted == 0

    (landing / "a.jsonl").unlink()
    (landing / "b.jsonl").unlink()
    report = jobs.load_files(schema_name, stream, warehouse)

    assert (report.result.deleted, report.result.inserted) == (3, 1)
    assert _by_file(warehouse, schema_name) == [("c.jsonl", 1, "b1")]
    assert _manifest(warehouse, schema_name) == {"c.jsonl": ("loaded", 1, None)}
    assert state.read_held_back(warehouse, schema_name) == []
