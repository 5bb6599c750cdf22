"""Tables of a PostgreSQL application database, read through DuckDB's postgres extension.

The extension comes from the ``duckdb-extension-postgres`` package (no internet needed) and
reads with COPY in binary, much faster than row-by-row fetching.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pyarrow as pa

from loaders.config import SqlSourceConfig, SqlTableConfig
from loaders.errors import LoaderError

log = logging.getLogger(__name__)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_table(
    source: SqlSourceConfig, table: SqlTableConfig, since: object | None = None, batch_rows: int = 250_000
) -> Iterator[pa.RecordBatch]:
    """Rows of ``source_schema.table`` (only ``cursor >= since`` when incremental)."""
    from roundtrip.duckdb_extensions import connect

    if not source.url:
        raise LoaderError(
            "loaders.yml: sql source has no url; set ROUNDTRIP_CATALOG_URL to the catalog's postgresql:// URL"
        )
    con = connect(extensions=("postgres",))
    try:
        try:
            literal = source.url.replace("'", "''")  # ATTACH takes no parameters
            con.execute(f"attach '{literal}' as src (type postgres, read_only)")
        except Exception as exc:  # the message may echo the URL and its password: redact it
            raise LoaderError(
                f"cannot attach the {source.source_schema} database (url in loaders.yml): "
                + str(exc).replace(source.url, "<url>")
            ) from None
        relation = f"src.{_quote(source.source_schema)}.{_quote(table.name)}"
        query = f"select * from {relation}"
        params: list[object] = []
        if table.cursor and since is not None:
            query += f" where {_quote(table.cursor)} >= ?"
            params.append(since)
        try:
            reader = con.execute(query, params).fetch_record_batch(batch_rows)
        except Exception as exc:
            raise LoaderError(f"cannot read {source.source_schema}.{table.name}: {exc}") from exc
        yield from reader
    finally:
        con.close()
