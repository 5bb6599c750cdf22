"""Rows of a model, streamed from the warehouse in Arrow record batches (memory ~ batch size)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from reverse_etl.errors import SyncError
from reverse_etl.spec import SyncSpec
from roundtrip.paths import duckdb_path


def read_model(spec: SyncSpec) -> Iterator[pa.RecordBatch]:
    """The model's rows, columns renamed by ``columns``, ordered by the group key if any."""
    from roundtrip.duckdb_extensions import connect

    path = duckdb_path()
    if not path.exists():
        raise SyncError(f"warehouse {path} not found: run the loaders and `dbt build` first")
    con = connect(path, read_only=True)
    try:
        settings = spec.settings
        if settings.columns:
            projection = ", ".join(f'"{src}" as "{dst}"' for src, dst in settings.columns.items())
        else:
            projection = "*"
        order = ""
        if settings.group_by:
            # rows of one group arrive together, in a stable order: the group key, then the rest
            names = [r[0] for r in con.execute(f"describe select {projection} from {spec.relation}").fetchall()]
            rest = [n for n in (settings.order_by or names) if n != settings.group_by]
            order = " order by " + ", ".join(f'"{n}"' for n in [settings.group_by, *rest])
        try:
            reader = con.execute(f"select {projection} from {spec.relation}{order}").fetch_record_batch(
                settings.batch_rows
            )
        except Exception as exc:
            raise SyncError(f"sync {spec.name}: cannot read model {spec.model} ({spec.relation}): {exc}") from exc
        yield from reader
    finally:
        con.close()
