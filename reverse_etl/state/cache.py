"""The local cache of one sync's state: a DuckDB file under ``$ROUNDTRIP_DATA_DIR/reverse_etl/``.

It holds the current state (identity, fingerprint) stamped with the ``epoch`` and ``version``
it reflects. A run whose cache carries the epoch and version of the ``syncs`` row classifies
against it and never reads the log over the network; any other (a first run on this machine, a
run killed between its commit and the cache update, a state changed from another machine or
rebuilt, a file deleted or damaged) is rebuilt from the log first. The cache is updated after
the commit, from what the run itself changed; a run that dies before that leaves an older
version in the file, which the next run notices. A sync's first state, with nothing to update
in place, is written whole before the commit into a file of its own (``<id>.next.duckdb``) that
takes the cache's place only once the commit is in. The cache can be lost at no cost but one
rebuild; it can never make a run trust more than Postgres says.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from roundtrip.core.sql import duck_ident, literal

log = logging.getLogger(__name__)
ALIAS = "rt_cache"


def remove_duckdb_file(path: Path) -> None:
    for p in (path, path.with_suffix(path.suffix + ".wal")):
        p.unlink(missing_ok=True)


class LocalCache:
    def __init__(self, con: Any, path: Path, sync: str, read_only: bool) -> None:
        self.con = con
        self.path = path
        self.sync = sync
        self.read_only = read_only
        self.attached = False
        self.prepared: Path | None = None  # a first state's file, waiting for the commit

    @property
    def state(self) -> str:
        return f"{ALIAS}.state"

    def _attach(self) -> bool:
        if self.attached:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = " (read_only)" if self.read_only else ""
        try:
            self.con.execute(f"attach {literal(str(self.path))} as {ALIAS}{mode}")
        except Exception as exc:  # a cache is only ever a cache: a broken file is rebuilt
            log.warning("sync %s: local state cache %s unusable (%s); rebuilding it", self.sync, self.path, exc)
            if self.read_only:
                return False
            remove_duckdb_file(self.path)
            self.con.execute(f"attach {literal(str(self.path))} as {ALIAS}")
        self.attached = True
        return True

    def detach(self) -> None:
        if self.attached:
            with contextlib.suppress(Exception):
                self.con.execute(f"detach {ALIAS}")
            self.attached = False

    def stamp(self) -> tuple[str, int] | None:
        """(epoch, version) the cache reflects; None when there is no usable cache."""
        if not self.path.exists() or not self._attach():
            return None
        try:
            row = self.con.execute(f"select epoch, version from {ALIAS}.meta").fetchone()
            self.con.execute(f"select count(*) from {ALIAS}.state limit 0")
        except Exception:
            return None
        return (str(row[0]), int(row[1])) if row else None

    def rebuild(self, current: str, epoch: str, version: int, in_memory: str) -> str:
        """The cache rewritten from ``current`` (a DuckDB query of the state); returns the
        relation to classify against (a dry run keeps it in ``in_memory``, writing no file)."""
        if self.read_only:
            self.con.execute(f"create or replace table {in_memory} as {current}")
            return in_memory
        self.detach()
        remove_duckdb_file(self.path)
        self._attach()
        self.con.execute(f"create table {ALIAS}.state as {current}")
        self._write_stamp(ALIAS, epoch, version)
        return self.state

    def _write_stamp(self, alias: str, epoch: str, version: int) -> None:
        self.con.execute(f"create or replace table {alias}.meta (epoch varchar, version bigint)")
        self.con.execute(f"insert into {alias}.meta values ({literal(epoch)}, {int(version)})")

    def prepare_first(self, con: Any, state: str, epoch: str, version: int) -> None:
        """Before the commit: a sync's first state (``state``: what it sends) written whole,
        stamped, into a file beside the cache (``con``: a cursor outside the run's transaction).
        ``apply`` puts it in place once the commit is in; ``close`` removes it otherwise."""
        if self.read_only:
            return
        prepared = self.path.with_suffix(".next.duckdb")
        remove_duckdb_file(prepared)
        prepared.parent.mkdir(parents=True, exist_ok=True)
        alias = f"{ALIAS}_next"
        con.execute(f"attach {literal(str(prepared))} as {alias}")
        try:
            con.execute(f"create table {alias}.state as {state}")
            con.execute(
                f"create table {alias}.meta as select {literal(epoch)} as epoch, {int(version)}::bigint as version"
            )
        finally:
            con.execute(f"detach {alias}")
        self.prepared = prepared

    def apply(
        self, epoch: str, version: int, changed: str | None, added: str, gone: str | None, whole: str | None
    ) -> None:
        """After the commit: the cache becomes the state just committed. ``changed`` / ``added``
        (identity, fingerprint) and ``gone`` (identities): what this run changed; ``whole``: the
        whole new state, when the cache had none to update. A failure only leaves the cache
        stale: the next run rebuilds it."""
        if self.read_only:
            return
        try:
            if self.prepared is not None:  # a first state, written before the commit
                self.detach()
                remove_duckdb_file(self.path)
                self.prepared.replace(self.path)
                self.prepared = None
                return
            if not self._attach():
                return
            ids = None
            if whole is not None:  # via a copy: it may read the cache itself
                self.con.execute(f"create or replace temp table rt_next_state as {whole}")
                self.con.execute(f"create or replace table {self.state} as select * from temp.rt_next_state")
            else:
                if gone:  # (computed from the cache itself: taken before the cache changes)
                    self.con.execute(f"create or replace temp table rt_gone_now as {gone}")
                names = [r[0] for r in self.con.execute(f"describe {self.state}").fetchall() if r[0] != "fingerprint"]
                ids = names
                on = " and ".join(f"s.{duck_ident(c)} = c.{duck_ident(c)}" for c in ids)
                if changed:
                    self.con.execute(
                        f"update {self.state} s set fingerprint = c.fingerprint from ({changed}) c where {on}"
                    )
                self.con.execute(f"insert into {self.state} {added}")
                if gone:
                    on_gone = " and ".join(f"s.{duck_ident(c)} = g.{duck_ident(c)}" for c in ids)
                    self.con.execute(f"delete from {self.state} s using temp.rt_gone_now g where {on_gone}")
            self._write_stamp(ALIAS, epoch, version)
        except Exception as exc:
            log.warning(
                "sync %s: could not update the local state cache (%s); the next run rebuilds it", self.sync, exc
            )
            self.drop()

    def drop(self) -> None:
        self.detach()
        remove_duckdb_file(self.path)

    def close(self) -> None:
        self.detach()
        if self.prepared is not None:  # the commit never came: the file never was the state
            remove_duckdb_file(self.prepared)
            self.prepared = None
