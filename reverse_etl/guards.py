"""Alert thresholds, checked after the classification and before anything is written.

A mart built from an empty or broken upstream looks like "delete everything" or "reject most
rows"; a run that would delete more than ``max_delete_pct`` of the records the sync owns (mirror
deletes, replace swaps) or reject more than ``max_reject_pct`` of the model's rows stops there,
with status ``blocked``, and says why. ``run --max-delete-pct 100`` lets one deliberate run
through; the exposure's setting changes it for good.
"""

from __future__ import annotations

from dataclasses import dataclass

from reverse_etl.errors import SyncError


class GuardError(SyncError):
    """A threshold stopped the run before it wrote anything."""


class StalePlanError(SyncError):
    """``sync apply``: the mart, the state or the destination moved since the plan was made;
    nothing was written."""


def check_seal(sync: str, expected: dict[str, str], found: dict[str, str]) -> None:
    """The plan's seals against what the run finds, before it writes anything."""
    moved = [what for what in ("model", "state", "destination") if expected.get(what) != found.get(what)]
    if moved:
        what = {"model": "the mart", "state": "the sync's state (another run)", "destination": "the destination"}
        raise StalePlanError(
            f"sync {sync}: the plan is stale: {', '.join(what[m] for m in moved)} changed since it was made; "
            "nothing was written",
            hint="make a new plan (roundtrip sync plan --out ...) and review it",
        )


@dataclass(frozen=True)
class Thresholds:
    max_delete_pct: float
    max_reject_pct: float


def check(sync: str, thresholds: Thresholds, owned: int, deletes: int, read: int, rejected: int) -> None:
    if owned and deletes:
        share = 100.0 * deletes / owned
        if share > thresholds.max_delete_pct:
            raise GuardError(
                f"sync {sync}: would delete {deletes:,} of the {owned:,} records it owns ({share:.1f} %), "
                f"above max_delete_pct {thresholds.max_delete_pct:g}; nothing was written",
                hint="check the model (an empty upstream?); to let this run through: --max-delete-pct 100",
            )
    if read and rejected:
        share = 100.0 * rejected / read
        if share > thresholds.max_reject_pct:
            raise GuardError(
                f"sync {sync}: would reject {rejected:,} of {read:,} rows ({share:.1f} %), "
                f"above max_reject_pct {thresholds.max_reject_pct:g}; nothing was written",
                hint="see the rejections in the dry run (--dry-run); to let this run through: --max-reject-pct 100",
            )
