"""What a run is asked (``RunOptions``) and what it says (``SyncResult``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reverse_etl.counts import SyncCounts
from reverse_etl.runs import SUCCEEDED, WITH_REJECTS
from reverse_etl.spec import SyncSpec
from roundtrip.core.paths import PROJECT_ROOT
from roundtrip.core.settings import Settings

LOCKED, PLANNED, STALE = "locked", "dry_run", "stale"


@dataclass
class RunOptions:
    dry_run: bool = False
    sample_size: int = 5  # dry run: changes, deletions and rejections shown
    dbt_project_dir: Path = PROJECT_ROOT  # where the serving models live (replace)
    # set by run_syncs: replace syncs note here the serving models they leave due (sync -> models)
    # instead of refreshing them at once, so that one dbt run refreshes them all at the end
    deferred_refresh: dict[str, list[str]] | None = None
    full_resync: bool = False  # send every record again, whatever the state says
    adopt: bool = False  # a sync without a state takes over the records its destination holds
    wait: float = 0  # seconds to wait for a DuckDB warehouse another process holds
    max_delete_pct: float | None = None  # this run's thresholds, overriding the sync's
    max_reject_pct: float | None = None
    verify_sample: int | None = None  # this run's sample read back (None: the sync's setting)
    verify_all: bool = False  # read every record back, and write again what differs (verify --repair)
    seal: bool = False  # dry run: seal what the plan is made of (sync plan)
    expect: dict[str, str] | None = None  # sync apply: the plan's seal, checked before anything is written
    settings: Settings | None = None  # resolved at the entry point (None: from the environment)
    on_rows: Callable[[str, int], None] | None = None  # progress: (sync name, rows handed over)


@dataclass
class SyncResult:
    spec: SyncSpec
    status: str = "failed"
    counts: SyncCounts = field(default_factory=SyncCounts)
    run_id: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    refreshed: list[str] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)  # dry run sample
    deletions: list[Any] = field(default_factory=list)  # dry run sample
    rejections: list[dict[str, Any]] = field(default_factory=list)  # first rejected rows
    repairs: list[str] = field(default_factory=list)  # what the state's self-check repaired, drift found
    checked: int = 0  # records read back from the destination (drift, verify_sample)
    committed: bool = False  # the writes are in (a failure after it is the refresh's)
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of the last attempt
    read_by: str = "every row"  # change detection by cursor: which rows were read
    fields: dict[str, Any] = field(default_factory=dict)  # dry run: the updates, field by field
    schema_change: str = ""  # dry run: the change of the model's columns the run would follow
    seal: dict[str, str] = field(default_factory=dict)  # sync plan: the mart, state and destination it saw

    @property
    def ok(self) -> bool:
        return self.status in (SUCCEEDED, WITH_REJECTS, PLANNED)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "sync": self.spec.name,
            "mode": self.spec.mode,
            "status": self.status,
            **self.counts.as_dict(),
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
        }
        if self.status != PLANNED:
            out["attempts"] = self.attempts
        if self.checked:
            out["checked"] = self.checked
        if self.read_by != "every row":
            out["read_by"] = self.read_by
        if self.repairs:
            out["repairs"] = self.repairs
        if self.refreshed:
            out["refreshed"] = self.refreshed
        if self.phases:
            out["phases"] = self.phases
        if self.error:
            out["error"] = self.error
        return out
