"""``roundtrip sync plan --out plan.json`` and ``roundtrip sync apply plan.json``: review
before writing, as infrastructure tools do it.

A plan is a dry run of the chosen syncs, written to a file a person (or a CI step) reviews:
per sync the counts it would report, samples of the records it would insert, update or delete
with the fields that change, and a seal of what it was made from (the mart's classified
records, the sync's state, and what the destination holds that it would change). ``apply``
runs exactly those syncs, each checking inside its own transaction, before it writes anything,
that the seal still holds: a plan whose mart, state or destination moved since is refused
(status ``stale``), and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from reverse_etl.connections import Connections
from reverse_etl.engine import run_sync
from reverse_etl.errors import SyncError
from reverse_etl.results import STALE, RunOptions, SyncResult
from reverse_etl.spec import SyncSpec

FORMAT = 1


def spec_hash(spec: SyncSpec) -> str:
    """The sync's definition as the plan saw it (its exposure's settings and model)."""
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


def make_plan(
    specs: list[SyncSpec], connections: Connections, options: RunOptions, target: str
) -> tuple[dict[str, Any], list[SyncResult]]:
    """Dry runs of ``specs`` with their seals: the plan (a JSON document) and the results."""
    results = [run_sync(spec, connections, replace(options, dry_run=True, seal=True)) for spec in specs]
    plan = {
        "roundtrip_plan": FORMAT,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "target": target,
        "syncs": [
            {
                "sync": r.spec.name,
                "definition": spec_hash(r.spec),
                "status": r.status,
                "counts": r.counts.as_dict(),
                "seal": r.seal,
                "changes": r.changes,
                "fields": r.fields,
                "deletions": r.deletions,
                "rejections": r.rejections,
                "schema_change": r.schema_change,
                **({"error": r.error} if r.error else {}),
            }
            for r in results
        ],
    }
    return plan, results


def write_plan(plan: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(plan, indent=2, default=str) + "\n")
    partial.replace(path)


def read_plan(path: Path) -> dict[str, Any]:
    try:
        plan: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SyncError(f"cannot read plan {path}: {exc}", hint="make one: roundtrip sync plan --out PATH") from exc
    if plan.get("roundtrip_plan") != FORMAT:
        raise SyncError(f"{path} is not a roundtrip sync plan (format {FORMAT})")
    return plan


def apply_plan(
    plan: dict[str, Any], specs: list[SyncSpec], connections: Connections, options: RunOptions
) -> list[SyncResult]:
    """Run the plan's syncs, each refusing to write if what its plan saw has moved."""
    by_name = {s.name: s for s in specs}
    results = []
    for entry in plan["syncs"]:
        name = entry["sync"]
        spec = by_name.get(name)
        if spec is None:
            raise SyncError(f"the plan's sync {name} is no longer declared", hint="make a new plan")
        if entry.get("error") or not entry.get("seal"):
            result = SyncResult(
                spec, status=STALE, error=f"sync {name}: the plan holds no result to apply ({entry.get('error')})"
            )
        elif spec_hash(spec) != entry["definition"]:
            result = SyncResult(
                spec,
                status=STALE,
                error=f"sync {name}: the plan is stale: the sync's definition changed since it was made",
            )
        else:
            result = run_sync(spec, connections, replace(options, dry_run=False, expect=entry["seal"]))
        results.append(result)
    return results
