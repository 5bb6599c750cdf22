"""What a dry run shows: the counts a run would report, and a sample of the records it would
insert, update, heal or delete, and of the rows it would reject."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from reverse_etl.counts import SyncCounts
from reverse_etl.records import CHANGE, CHANGED, HEALED, NEW, REASON, ROW, ROW_KEY, SENT, Plan, Records, payload_columns
from reverse_etl.spec import SyncSpec


def planned_counts(spec: SyncSpec, plan: Plan) -> SyncCounts:
    """What a run would count, from the sync state alone."""
    if spec.mode == "insert_only":
        counts = SyncCounts(inserted=plan.new, unchanged=plan.changed + plan.unchanged + plan.healed)
    else:
        counts = SyncCounts(inserted=plan.new, updated=plan.changed, unchanged=plan.unchanged, healed=plan.healed)
    counts.read, counts.rejected, counts.deleted = plan.rows + plan.rejected, plan.rejected, plan.gone
    return counts


def sample_changes(spec: SyncSpec, records: Records, limit: int) -> list[dict[str, Any]]:
    kinds = (NEW,) if spec.mode == "insert_only" else SENT
    action = {NEW: "insert", CHANGED: "update", HEALED: "heal"}
    shown = records.shape.shown
    out: list[dict[str, Any]] = []
    for batch in records.records(kinds):
        for i in range(min(batch.num_rows, limit - len(out))):
            if shown:  # a record that carries its own rendering (Redis: the key and the JSON value)
                row = {label: _parsed(batch[c][i].as_py()) for c, label in shown.items()}
            else:
                row = {c: batch[c][i].as_py() for c in payload_columns(batch)}
            out.append({"action": action[batch[CHANGE][i].as_py()], "key": _key(batch, i, records), "row": row})
        if len(out) >= limit:
            break
    return out


def sample_gone(records: Records, gone: str, limit: int) -> list[Any]:
    identity = list(records.shape.identity)
    order = ", ".join(f'"{c}"' for c in identity)
    sample: list[Any] = []
    for batch in records.stream(f"select * from ({gone}) order by {order} limit {int(limit)}"):
        for row in batch.to_pylist():
            sample.append(row[identity[0]] if len(identity) == 1 and identity[0].startswith("__rt_") else row)
    return sample[:limit]


def sample_rejections(batch: pa.RecordBatch, room: int) -> list[dict[str, Any]]:
    return [
        {
            "key": json.loads(batch[ROW_KEY][i].as_py()),
            "reason": batch[REASON][i].as_py(),
            "row": json.loads(batch[ROW][i].as_py()),
        }
        for i in range(min(batch.num_rows, max(0, room)))
    ]


def _parsed(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _key(batch: Any, i: int, records: Records) -> Any:
    """A record's identity as a person reads it: the Redis key, or {key column: value}."""
    identity = list(records.shape.identity)
    if len(identity) == 1 and identity[0].startswith("__rt_"):
        return batch[identity[0]][i].as_py()
    return {k: batch[k][i].as_py() for k in records.settings.primary_key}


FIELD_DIFF_LIMIT = 100_000  # changed records read back for the per-column counts of a dry run


def field_diff(records: Records, destination: Any, changed: int, limit: int) -> dict[str, Any]:
    """What the updates would change, field by field: for each column the number of records
    whose value changes, and a sample of records with each field's old -> new value (what the
    destination holds, what would be written). Counted over at most ``FIELD_DIFF_LIMIT``
    records (said in ``counted``)."""
    if not changed:
        return {}
    ids = ", ".join(f'"{c}"' for c in records.shape.identity)
    identities = f"select {ids} from ({records.identity_sql((CHANGED, HEALED))}) limit {FIELD_DIFF_LIMIT}"
    table = destination.fields(records, identities)
    con = records.con
    columns = {
        c: int(n)
        for c, n in con.execute(f"select __rt_column, count(*) from {table} group by 1 order by 2 desc, 1").fetchall()
    }
    keys = [
        c for c in con.execute(f"describe {table}").fetchall() if not c[0].startswith("__rt_") or c[0] == "__rt_target"
    ]
    names = [k[0] for k in keys]
    order = ", ".join(f'"{n}"' for n in names)
    sample: dict[str, dict[str, Any]] = {}
    for row in con.execute(
        f"select * from {table} where ({order}) in (select distinct {order} from {table} order by all limit {int(limit)}) order by all"
    ).fetchall():
        key_values = row[: len(names)]
        key = key_values[0] if names == ["__rt_target"] else dict(zip(names, key_values, strict=True))
        entry = sample.setdefault(json.dumps(key, default=str), {"key": key, "changes": {}})
        entry["changes"][row[len(names)]] = {"old": _parsed(row[len(names) + 1]), "new": _parsed(row[len(names) + 2])}
    return {"counted": min(changed, FIELD_DIFF_LIMIT), "columns": columns, "sample": list(sample.values())}
