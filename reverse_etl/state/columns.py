"""The model columns each sync last sent (``reverse_etl.sync_schemas``, for ``on_schema_change``
and for reading the destination back), and the serving refreshes a replace sync still owes
(``reverse_etl.pending_refreshes``)."""

from __future__ import annotations

import json

from reverse_etl.pg import PgSession
from reverse_etl.state.schema import SCHEMA
from roundtrip.core.sql import literal


def recorded(pg: PgSession, sync: str) -> tuple[dict[str, str] | None, bool]:
    """(columns and DuckDB types in the model's order, whether the order is known); (None, True)
    when the sync never sent any. States written before version 2 kept them unordered."""
    rows = pg.query(f"select columns::text from {SCHEMA}.sync_schemas where sync = {literal(sync)}")
    if not rows:
        return None, True
    value = json.loads(rows[0][0])
    if isinstance(value, dict):
        return dict(value), False
    return {name: kind for name, kind in value}, True


def record(pg: PgSession, sync: str, columns: dict[str, str]) -> None:
    ordered = json.dumps([[c, t] for c, t in columns.items()])
    pg.execute(
        f"""insert into {SCHEMA}.sync_schemas (sync, columns) values ({literal(sync)}, {literal(ordered)}::jsonb)
            on conflict (sync) do update set columns = excluded.columns, recorded_at = now()
            where {SCHEMA}.sync_schemas.columns is distinct from excluded.columns"""
    )


def owed_refresh(pg: PgSession, sync: str) -> list[str]:
    rows = pg.query(f"select models from {SCHEMA}.pending_refreshes where sync = {literal(sync)}")
    return list(rows[0][0]) if rows else []


def owe_refresh(pg: PgSession, sync: str, models: list[str]) -> None:
    array = "array[" + ", ".join(literal(m) for m in models) + "]::text[]"
    pg.execute(
        f"""insert into {SCHEMA}.pending_refreshes (sync, models) values ({literal(sync)}, {array})
            on conflict (sync) do update set models = excluded.models, since = now()"""
    )


def clear_owed_refresh(conn: object, sync: str) -> None:
    """After the refresh (psycopg connection)."""
    conn.execute(f"delete from {SCHEMA}.pending_refreshes where sync = %s", (sync,))  # type: ignore[attr-defined]
