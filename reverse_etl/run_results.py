"""The results file of a `roundtrip sync` invocation (dbt's ``run_results.json``, for syncs).

One JSON document per invocation of ``run``, ``verify``, ``plan`` or ``apply``, at
``$ROUNDTRIP_DATA_DIR/reverse_etl/run_results.json`` unless ``--results PATH`` says otherwise,
replaced atomically (a temporary file renamed over it: a reader sees the previous document or
the new one, never half of one), whatever the invocation ended with:

```json
{"metadata": {"schema": "roundtrip.sync.run_results/v1", "invocation_id": "...", "generated_at": "..."},
 "command": "run", "args": {"select": ["tag:crm"], "dry_run": false, ...},
 "started_at": "...", "completed_at": "...", "elapsed_seconds": 4.21,
 "status": "failed", "exit_code": 1, "error": null, "hint": null,
 "results": [{"sync": "crm_user_segments", "model": "user_segments", "destination": "postgres",
              "target": "crm.user_segments", "mode": "upsert", "status": "succeeded",
              "run_id": 12, "attempts": 1, "seconds": 1.92,
              "counts": {"read": 5000, "inserted": 10, ...}, "checked": 100,
              "phases": {"read": 0.21, "shape": 0.05, ...}, "repairs": [], "refreshed": [],
              "error": null, "hint": null}]}
```

Texts are redacted, and the document holds counts, never row values (rejected rows stay in
``reverse_etl.rejected_rows``): it goes to the notification hooks as it is.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reverse_etl.results import SyncResult
from reverse_etl.spec import InvalidSync, SyncSpec
from roundtrip.core.redact import redact

log = logging.getLogger(__name__)

SCHEMA = "roundtrip.sync.run_results/v1"
FILE_NAME = "run_results.json"
# what a sync's result says when it needs someone's attention (run, and verify's own statuses)
FAILING = ("failed", "blocked", "locked", "invalid", "stale", "differs", "interrupted")
STATUS_OF_EXIT = {0: "succeeded", 1: "failed", 2: "succeeded_with_rejects", 130: "interrupted"}


def timestamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_path(data_dir: Path) -> Path:
    return data_dir / "reverse_etl" / FILE_NAME


def describe_spec(spec: SyncSpec) -> dict[str, Any]:
    return {
        "sync": spec.name,
        "model": spec.model,
        "destination": spec.settings.destination,
        "target": spec.target,
        "mode": spec.mode,
    }


def sync_entry(result: SyncResult) -> dict[str, Any]:
    """One sync's result, as the file keeps it."""
    return describe_spec(result.spec) | {
        "status": result.status,
        "run_id": result.run_id,
        "attempts": result.attempts,
        "seconds": round(result.seconds, 3),
        "counts": result.counts.as_dict(),
        "checked": result.checked,
        "phases": {name: round(seconds, 3) for name, seconds in result.phases.items()},
        "repairs": [redact(r) for r in result.repairs],
        "refreshed": list(result.refreshed),
        "error": redact(result.error) if result.error else None,
        "hint": redact(result.hint) if result.hint else None,
    }


def invalid_entry(invalid: InvalidSync) -> dict[str, Any]:
    return {"sync": invalid.name, "status": "invalid", "error": redact(invalid.reason), "hint": None}


def missing_entry(spec: SyncSpec, status: str, error: str | None, hint: str | None) -> dict[str, Any]:
    """A chosen sync that has no result: the invocation failed or was interrupted before it."""
    return describe_spec(spec) | {"status": status, "error": error, "hint": hint}


def encode(document: dict[str, Any]) -> bytes:
    """The document as UTF-8 JSON, one more redaction pass over the whole text."""
    return redact(json.dumps(document, indent=2, default=str, ensure_ascii=False)).encode("utf-8")


def write_atomically(path: Path, payload: bytes) -> None:
    """``payload`` at ``path`` by a temporary file in the same folder renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
