"""What a sync did. ``read`` counts model rows; each ends rejected or in a written record.

Records are rows, except for Redis ``value: list`` syncs where one record (a key) holds the rows
of a group: there inserted / updated / unchanged / healed / deleted count keys. ``healed``
counts records the state said the destination held and it did not (a dropped or truncated
table, an evicted or expired key): they were written again. ``skipped`` counts records a write
policy kept from the destination (``match: create_only`` and a row already there,
``update_only`` and a row not there): the state does not record them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

FIELDS = ("read", "inserted", "updated", "unchanged", "healed", "deleted", "rejected", "skipped")


@dataclass
class SyncCounts:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    healed: int = 0
    deleted: int = 0
    rejected: int = 0
    skipped: int = 0

    def add(self, other: SyncCounts) -> None:
        for name in FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.healed + self.deleted

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
