"""A change of the model's columns since the sync's last run, and what the sync does about it.

The vocabulary is dbt's ``on_schema_change`` (a sync setting):

- ``fail`` (default): the run stops before writing anything and says which columns changed;
- ``append_new_columns``: new columns are added to the destination; a removed column stays in
  the destination table but is set to NULL in every row this sync owns (never a stale value);
- ``sync_all_columns``: new columns are added, removed ones dropped, changed types altered.

Redis values are JSON documents rendered whole, so there a change only re-sends every record
(every fingerprint changes); ``fail`` still stops the run, so that nobody is surprised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from reverse_etl.errors import SyncError


@dataclass(frozen=True)
class SchemaChange:
    added: dict[str, str] = field(default_factory=dict)  # column -> type (DuckDB type names)
    removed: dict[str, str] = field(default_factory=dict)
    retyped: dict[str, tuple[str, str]] = field(default_factory=dict)  # column -> (was, now)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.retyped)

    def describe(self) -> str:
        parts = []
        if self.removed:
            parts.append("removed " + ", ".join(sorted(self.removed)))
        if self.added:
            parts.append("added " + ", ".join(sorted(self.added)))
        if self.retyped:
            parts.append("retyped " + ", ".join(f"{c} {a} -> {b}" for c, (a, b) in sorted(self.retyped.items())))
        return "; ".join(parts)


def same_type(a: str, b: str) -> bool:
    """Types that hold the same values: a decimal's precision is the model's estimate (DuckDB
    widens it with the literals), its scale is what the values are."""
    return _family(a) == _family(b)


def _family(duckdb_type: str) -> str:
    return re.sub(r"DECIMAL\(\d+,\s*(\d+)\)", r"DECIMAL(*,\1)", duckdb_type.upper())


def compare(recorded: dict[str, str] | None, current: dict[str, str]) -> SchemaChange:
    """What changed between the columns the last run sent and the model's now (None: first run)."""
    if recorded is None:
        return SchemaChange()
    return SchemaChange(
        added={c: t for c, t in current.items() if c not in recorded},
        removed={c: t for c, t in recorded.items() if c not in current},
        retyped={c: (recorded[c], t) for c, t in current.items() if c in recorded and not same_type(recorded[c], t)},
    )


def check(change: SchemaChange, policy: str, sync: str, model: str, keys: list[str]) -> None:
    """Refuse what the policy does not allow, before anything is written."""
    if not change:
        return
    if policy == "fail":
        raise SyncError(
            f"sync {sync}: the columns of model {model} changed since the last run ({change.describe()}); "
            "nothing was written",
            hint="set meta.sync.on_schema_change to append_new_columns or sync_all_columns, or restore the columns",
        )
    touched_keys = [k for k in keys if k in change.removed or k in change.retyped]
    if touched_keys:
        raise SyncError(
            f"sync {sync}: key column(s) {touched_keys} of model {model} changed ({change.describe()})",
            hint="a new key is a new sync: give it a new name (or drop the destination and --full-resync)",
        )
    if policy == "append_new_columns" and change.retyped:
        raise SyncError(
            f"sync {sync}: column types of model {model} changed ({change.describe()}); "
            "append_new_columns cannot alter them",
            hint="set on_schema_change: sync_all_columns, or cast the column back in the model",
        )
