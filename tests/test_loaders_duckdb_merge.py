"""The DuckDB warehouse's merge, by each of its ways: into an empty table (straight insert),
changed rows deleted and inserted again, and the in-place MERGE when the table has columns of
its own. The same rows and counts whichever way runs."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from loaders.errors import LoaderError
from loaders.warehouse.base import WriteResult
from loaders.warehouse.duckdb import DuckDBWarehouse


def _rows(ids: list[int], names: list[str | None]) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "name": pa.array(names, pa.string())})


def _read(warehouse: DuckDBWarehouse, columns: str = "id, name") -> list[tuple[object, ...]]:
    return warehouse.con.execute(f"select {columns} from s.t order by id").fetchall()


@pytest.fixture
def warehouse(tmp_path: Path) -> DuckDBWarehouse:
    w = DuckDBWarehouse(tmp_path / "w.duckdb")
    yield w  # type: ignore[misc]
    w.close()


def test_a_merge_into_an_empty_table_inserts_every_batch(warehouse: DuckDBWarehouse) -> None:
    batches = [_rows([1, 2], ["a", None]), _rows([3], ["c"])]
    assert warehouse.merge("s", "t", batches, ["id"]) == WriteResult(inserted=3)
    assert _read(warehouse) == [(1, "a"), (2, None), (3, "c")]


def test_a_repeated_key_into_an_empty_table_is_an_error_and_leaves_nothing(warehouse: DuckDBWarehouse) -> None:
    warehouse.ensure_table("s", "t", _rows([], []).schema)
    with pytest.raises(LoaderError, match=r"key \{'id': 2\} appears 2 times"):
        warehouse.merge("s", "t", [_rows([1, 2], ["a", "b"]), _rows([2], ["b again"])], ["id"])
    assert _read(warehouse) == []


def test_changed_rows_are_replaced_new_ones_added_equal_ones_left(warehouse: DuckDBWarehouse) -> None:
    warehouse.merge("s", "t", [_rows([1, 2, 3], ["a", "b", None])], ["id"])
    result = warehouse.merge("s", "t", [_rows([1, 2, 3, 4], ["a", "B", "now", None])], ["id"])
    assert result == WriteResult(inserted=1, updated=2, unchanged=1)
    assert _read(warehouse) == [(1, "a"), (2, "B"), (3, "now"), (4, None)]


def test_a_column_only_the_table_has_keeps_its_values_on_update(warehouse: DuckDBWarehouse) -> None:
    warehouse.merge("s", "t", [_rows([1, 2], ["a", "b"])], ["id"])
    warehouse.con.execute("alter table s.t add column note varchar")
    warehouse.con.execute("update s.t set note = 'kept'")
    result = warehouse.merge("s", "t", [_rows([1, 2, 3], ["a", "B", "c"])], ["id"])
    assert result == WriteResult(inserted=1, updated=1, unchanged=1)
    assert _read(warehouse, "id, name, note") == [(1, "a", "kept"), (2, "B", "kept"), (3, "c", None)]
