"""What a sync did, row by row: every row read ends in exactly one bucket."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SyncCounts:
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (key, reason), first few

    def add(self, other: SyncCounts) -> None:
        for name in ("read", "inserted", "updated", "unchanged", "deleted", "rejected"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.rejections.extend(other.rejections[: max(0, 20 - len(self.rejections))])

    def as_dict(self) -> dict[str, int]:
        data = asdict(self)
        data.pop("rejections")
        return data
