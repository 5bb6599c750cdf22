"""Reading one version of a file, or knowing that it was not: the checks around every read.

A file can change while the loader reads it: a producer rewrites it in place, a sync tool
truncates and refills it. The bytes read are then no version of the file at all (a third of the
old content, the head of one and the tail of another). So every read is checked:

- the bytes are hashed as they are read (``Reading``): the manifest keeps the hash of exactly
  the bytes that were loaded, never one taken at another moment;
- what the store says about the file (``Version``: size, and the modification and change times
  and inode of a local file, or the generation / ETag of an object) is taken just before the
  file is opened and again after its last byte was read;
- the listing's view must still hold: its size, its content hash (a local file's MD5, GCS's
  ``md5Hash``, an S3 ETag) and its object generation.

Any difference (``changed``) means the bytes are not one version: nothing of them loads, and
the file is read again at the next run. A read that passes loaded exactly the version whose
fingerprint the manifest records.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, BinaryIO


class FetchError(Exception):
    """The bytes could not be fetched (network, permissions): not the file's fault."""


@dataclass(frozen=True)
class Version:
    """What the store says about a file at one instant; two equal versions saw the same file."""

    size: int
    stamp: str  # local: mtime, ctime and inode; object stores: generation or ETag


def is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def store_fingerprint(info: dict[str, Any]) -> str | None:
    """The object's generation or ETag, as the store lists it (None for a local file): it changes
    whenever the object is written."""
    for name in ("generation", "ETag", "etag", "md5Hash"):
        if info.get(name):
            return f"{name}:{str(info[name]).strip(chr(34))}"
    return None


def version_of(fs: Any, path: str) -> Version:
    """The file as the store sees it now (a symbolic link is followed). A local file's change
    time moves with every write, even one that sets the modification time back."""
    if is_local(fs):
        status = os.stat(path)
        return Version(status.st_size, f"mtime={status.st_mtime_ns} ctime={status.st_ctime_ns} ino={status.st_ino}")
    fs.invalidate_cache(path)  # the listing's cached answer is not "now"
    info = fs.info(path)
    return Version(int(info.get("size") or 0), store_fingerprint(info) or f"mtime={info.get('mtime')}")


class Reading:
    """A binary handle that hashes and counts every byte read through it; a failure to fetch
    is a ``FetchError``."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.md5(usedforsecurity=False)
        self.bytes = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.handle.read(size)
        except OSError as exc:
            raise FetchError(str(exc)) from exc
        self.digest.update(data)
        self.bytes += len(data)
        return data

    @property
    def content_hash(self) -> str:
        return f"md5:{self.digest.hexdigest()}"


def changed(
    listed_size: int,
    listed_fingerprint: str,
    listed_content_hash: str | None,
    before: Version,
    after: Version,
    reading: Reading,
) -> str | None:
    """Why the bytes read are not one version of the listed file; None when they are."""
    if after != before:
        sizes = f"{before.size:,} -> {after.size:,} bytes" if after.size != before.size else "rewritten"
        return f"the file changed while it was read ({sizes})"
    if reading.bytes != before.size:
        return f"the file changed while it was read ({reading.bytes:,} bytes read of {before.size:,})"
    if listed_size != before.size:
        return f"the file changed after it was listed ({listed_size:,} -> {before.size:,} bytes)"
    if listed_content_hash is not None and listed_content_hash != reading.content_hash:
        return "the file changed after it was listed (its content hash differs)"
    if listed_fingerprint.split(":", 1)[0] in ("generation", "ETag", "etag") and listed_fingerprint != before.stamp:
        return "the file changed after it was listed (a new generation)"
    return None
