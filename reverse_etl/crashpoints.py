"""Deterministic crash points for the fault tests: ``ROUNDTRIP_TEST_CRASH_AT=<phase>`` makes
the process kill itself with SIGKILL (``kill -9``: no cleanup, no ``finally``) when a sync run
reaches that phase. Unset (always, outside the tests), nothing happens."""

from __future__ import annotations

import os
import signal

PHASES = (
    "classified",  # the state read and every record classified; nothing written
    "marked",  # write-ahead committed (Redis): the records about to be sent are in doubt
    "first_batch",  # the first batch of records handed to the destination
    "written",  # every record sent; the state not yet updated, nothing committed
    "committed",  # the writes and the state committed; the serving refresh not yet run
    "refreshed",  # the serving models refreshed; the run's final status not yet recorded
)


class CrashPoints:
    def __init__(self, at: str | None) -> None:
        if at is not None and at not in PHASES:
            raise ValueError(f"ROUNDTRIP_TEST_CRASH_AT={at!r} is not one of {', '.join(PHASES)}")
        self.at = at

    def reached(self, phase: str) -> None:
        if phase == self.at:
            os.kill(os.getpid(), signal.SIGKILL)
