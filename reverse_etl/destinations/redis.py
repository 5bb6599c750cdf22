"""Redis destination: JSON values under a key template, sent in bulk with a TTL.

The key template becomes a DuckDB expression; each record's fingerprint is a hash of the model
row (or, for ``value: list``, of the list of the key's rows), so the classification never renders
JSON; a record's JSON value is rendered by DuckDB only when the record is sent. Rows are checked
before anything is sent: two rows whose keys render alike (``k:{a}:{b}`` with ``('x:y','z')``
and ``('x','y:z')``) are both rejected, and NaN / ±Infinity, which JSON cannot spell, reject
their row (or are written as null: ``non_finite: null``).

Changed records are ``SET`` (with ``EX ttl``); unchanged ones are not resent, only their TTL
renewed (``EXPIRE``, or ``EXISTS`` without a TTL): a key that expired, was evicted or flushed is
written again and counted as ``healed``. A redis-server that restarted since the last run (its
``run_id`` changed: it may have come back empty, or from an older snapshot) has every record
read back and compared, and what differs is written again; for ``mirror``, keys this sync had
deleted and the snapshot brought back are deleted again. ``insert_only`` uses ``SET NX`` and
never heals. Redis writes cannot join the state's transaction: the engine marks them in doubt
before they are sent (write-ahead).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from string import Formatter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from reverse_etl.counts import SyncCounts
from reverse_etl.destinations.base import Capabilities, Changes, Drift, Finished, Known, Verified, Written
from reverse_etl.destinations.redis_link import PIPELINE_COMMANDS, RedisLink, encoded_chunks
from reverse_etl.records import (
    CHANGE,
    CHANGED,
    FINGERPRINT,
    HEALED,
    NEW,
    ROWS,
    UNCHANGED,
    Model,
    Records,
    RecordShape,
    ValueRule,
    fingerprint,
    fingerprint_of,
    q,
)
from reverse_etl.spec import DestinationTests, SyncSpec, key_template_fields
from roundtrip.core.read_ahead import read_ahead
from roundtrip.core.sql import literal

log = logging.getLogger(__name__)
TARGET, VALUE = "__rt_target", "__rt_value"  # the rendered key and JSON value of a record
FLOATS = ("FLOAT", "DOUBLE")


class Unset:
    """Keys a SET NX / XX left unset, collected into a work table on a cursor of their own (the
    records stream on the run's)."""

    def __init__(self, records: Records, name: str) -> None:
        self.table = records.table(name)
        self.cursor = records.con.cursor()
        self.cursor.execute(f"create or replace table {self.table} ({q(TARGET)} varchar)")
        self.count = 0

    def add(self, keys: pa.Array) -> None:
        if len(keys):
            self.cursor.register("rt_unset", pa.table({TARGET: keys}))
            self.cursor.execute(f"insert into {self.table} select * from rt_unset")
            self.cursor.unregister("rt_unset")
            self.count += len(keys)

    def close(self) -> str:
        self.cursor.close()
        return self.table


def key_template_sql(template: str, alias: str | None = None) -> str:
    """``reco:{user_id}`` as a DuckDB expression (over ``alias``'s columns); NULL when a field is NULL."""
    parts = []
    prefix = f"{alias}." if alias else ""
    for text, field_name, _, _ in Formatter().parse(template):
        if text:
            parts.append(literal(text))
        if field_name:
            parts.append(f"cast({prefix}{q(field_name)} as varchar)")
    return " || ".join(parts)


def _path(column: str) -> str:
    """A JSON path to an object's member, whatever its name holds."""
    return '$."' + column.replace("\\", "\\\\").replace('"', '\\"') + '"'


def key_pattern(template: str) -> str:
    """The template as a Redis glob (``reco:*``), its literal parts escaped."""
    out = []
    for text, field_name, _, _ in Formatter().parse(template):
        out.append("".join("\\" + ch if ch in "*?[]\\" else ch for ch in text))
        if field_name:
            out.append("*")
    return "".join(out)


class RedisDestination:
    def __init__(self, spec: SyncSpec, link: RedisLink) -> None:
        self.spec = spec
        self.settings = spec.settings
        self.link = link
        self.capabilities = Capabilities(
            transactional=False,
            verifiable=True,
            keys="rendered key",
            values="json",
            modes=("upsert", "mirror", "insert_only"),
            digest_moves=False,
        )
        self.model: Model | None = None
        self.shape_: RecordShape | None = None

    # ---------------------------------------------------------------- records

    def shape(self, model: Model) -> RecordShape:
        """One record per key: the key rendered from the template, the value the row as a JSON
        object, or (``value: list``) the JSON list of the key's rows in ``order_by`` order."""
        self.model = model
        s, template, columns = self.settings, self.spec.target, model.columns
        target = key_template_sql(template)
        in_key = key_template_fields(template)
        required = {"key template": in_key, "order_by": s.order_by or []}
        keys = [q(k) for k in s.primary_key]
        valued = columns if s.value == "object" else [c for c in columns if c not in set(in_key)]
        rules = self._rules(model, valued)
        if s.value == "object":
            on = " and ".join(f"m.{k} = c.{k}" for k in keys)
            value = self._json(model, columns, "m")
            shape = RecordShape(
                identity={TARGET: target},
                identity_from=in_key,
                records=lambda rows: (
                    f"""select {target} as {TARGET}, {", ".join(keys)}, {fingerprint(columns)} as {FINGERPRINT},
                                               1 as {ROWS} from {rows}"""
                ),
                # the key rendered again from the model row: the join's build side then holds
                # only the keys and the kind, not every record's rendered key (memory at 10 M)
                written=lambda rows, chosen: (
                    f"""select {key_template_sql(template, "m")} as {TARGET}, {value} as {VALUE},
                        c.{CHANGE} from {rows} m join (select {", ".join(keys)}, {CHANGE} from {chosen}) c on {on}"""
                ),
                required=required,
                rules=rules,
                shown={TARGET: "key", VALUE: "value"},
            )
        else:
            order = ", ".join(q(c) for c in (s.order_by or [k for k in s.primary_key if k not in set(in_key)]))
            member = f"struct_pack({', '.join(f'{q(c)} := {self._member(model, c)}' for c in valued)})"
            listed = f"list({member} order by {order or '1'})"
            raw = f"list(struct_pack({', '.join(f'{q(c)} := {q(c)}' for c in valued)}) order by {order or '1'})"
            shape = RecordShape(
                identity={TARGET: target},
                identity_from=in_key,
                records=lambda rows: (
                    f"""select {target} as {TARGET}, {fingerprint_of(raw)} as {FINGERPRINT},
                                               count(*) as {ROWS} from {rows} group by 1"""
                ),
                written=lambda rows, chosen: (
                    f"""select c.{TARGET}, to_json({listed})::varchar as {VALUE},
                        any_value(c.{CHANGE}) as {CHANGE}
                        from (select *, {target} as {TARGET} from {rows}) m join {chosen} c using ({TARGET})
                        group by c.{TARGET}"""
                ),
                required=required,
                rules=rules,
                shown={TARGET: "key", VALUE: "value"},
            )
        self.shape_ = shape
        return shape

    def _rules(self, model: Model, valued: list[str]) -> list[ValueRule]:
        """NaN and ±Infinity have no JSON spelling: rejected, unless ``non_finite: null``."""
        if self.settings.non_finite == "null":
            return []
        rules = []
        for c in valued:
            kind = model.types[c].upper()
            if kind in FLOATS:
                condition = f"not isfinite({q(c)})"
            elif kind.removesuffix("[]") in FLOATS:
                condition = f"list_bool_or(list_transform({q(c)}, x -> not isfinite(x)))"
            else:
                continue
            rules.append(ValueRule(condition, literal(f"{c}: NaN or Infinity, which JSON cannot hold")))
        return rules

    def _member(self, model: Model, column: str, alias: str = "") -> str:
        """A column as it goes into JSON: non-finite floats as null when ``non_finite: null``."""
        ref = f"{alias}.{q(column)}" if alias else q(column)
        if self.settings.non_finite != "null":
            return ref
        kind = model.types[column].upper()
        if kind in FLOATS:
            return f"case when isfinite({ref}) then {ref} end"
        if kind.removesuffix("[]") in FLOATS:
            return f"list_transform({ref}, x -> case when isfinite(x) then x end)"
        return ref

    def _json(self, model: Model, columns: list[str], alias: str) -> str:
        fields = ", ".join(f"{q(c)} := {self._member(model, c, alias)}" for c in columns)
        return f"to_json(struct_pack({fields}))::varchar"

    # ---------------------------------------------------------------- drift

    def drift(self, records: Records, known: Known, sample: int) -> Drift:
        if self.settings.mode == "insert_only" or known.owned == 0:
            return Drift()
        if sample < 0:
            return self._compare(records, known, None, "asked to compare every key")
        server = f"redis:{self.link.server_id()}"
        if known.digest != server:
            reason = (
                "no server identity recorded yet"
                if known.digest is None
                else "redis-server restarted since the last run (it may have lost keys or loaded an older snapshot)"
            )
            log.warning("sync %s: %s: reading every key back", self.spec.name, reason)
            return self._compare(records, known, None, reason)
        if sample:
            drift = self._compare(records, known, sample, "the sample")
            if drift.lost is None:
                return Drift(checked=drift.checked)
            log.warning("sync %s: sampled keys differ from what was written: reading every key back", self.spec.name)
            return self._compare(records, known, None, "the sample found keys that differ")
        return Drift()

    def _compare(self, records: Records, known: Known, sample: int | None, reason: str) -> Drift:
        """The keys the state vouches for (all, or ``sample`` of them) read back and compared
        with what the model renders for them; lost: those missing or holding another value."""
        con = records.con
        shape = records.shape
        ids = ", ".join(q(c) for c in shape.identity)
        candidates = records.table("rt_candidates")
        con.execute(
            f"""create or replace table {candidates} as
                select r.*, {UNCHANGED}::tinyint as {CHANGE} from ({records.records_of_model()}) r
                semi join {known.state} s on {records.on("s", "r")} and s.recorded and s.fingerprint = r.{FINGERPRINT}"""
        )
        if sample is not None:
            con.execute(
                f"create or replace table {candidates} as select * from {candidates} using sample {int(sample)} rows"
            )
        lost = records.table("rt_drift_lost")
        con.execute(f"create or replace table {lost} as select {ids} from {candidates} limit 0")
        checked = 0
        writer = con.cursor()
        try:
            rendered = shape.written(records.accepted(), candidates) if shape.written else f"select * from {candidates}"
            for batch in records.stream(f"select {TARGET}, {VALUE} from ({rendered})"):
                held = pa.array(self.link.values(batch[TARGET]), pa.binary()).cast(pa.string())
                wrong = pc.invert(pc.fill_null(pc.equal(held, batch[VALUE]), False))
                missing = pc.filter(batch[TARGET], wrong)
                checked += batch.num_rows
                if len(missing):
                    writer.register("rt_missing", pa.table({TARGET: missing}))
                    writer.execute(f"insert into {lost} select * from rt_missing")
                    writer.unregister("rt_missing")
            extra = None
            if self.settings.mode == "mirror" and known.retired and sample is None:
                extra = records.table("rt_drift_extra")
                con.execute(f"create or replace table {extra} as select {ids} from {known.retired} limit 0")
                for batch in records.stream(f"select {ids} from {known.retired}"):
                    alive = self.link.replies([b"EXISTS", batch[TARGET]], batch.num_rows, 4)
                    back = batch[TARGET].filter(pa.array(alive[:, 1] == ord("1")))
                    if len(back):
                        writer.register("rt_back", pa.table({TARGET: back}))
                        writer.execute(f"insert into {extra} select * from rt_back")
                        writer.unregister("rt_back")
        finally:
            writer.close()
        n_lost = records.count(f"select * from {lost}")
        n_extra = records.count(f"select * from {extra}") if extra else 0
        if n_lost or n_extra:
            log.warning(
                "sync %s: %d of %d keys read back are missing or hold another value%s (%s); writing them again",
                self.spec.name, n_lost, checked,
                f", {n_extra} keys it had deleted are back" if n_extra else "", reason,
            )  # fmt: skip
        return Drift(lost=lost if n_lost else None, extra=extra if n_extra else None, checked=checked, reason=reason)

    def hold(self) -> None:
        """Nothing to hold: Redis writes are not in the transaction (the write-ahead covers them)."""

    def digest(self, columns: list[str]) -> str | None:
        return f"redis:{self.link.server_id()}"

    # ---------------------------------------------------------------- writing

    def _set_parts(self, keys: pa.Array, values: pa.Array, only: bytes | None) -> list[pa.Array | bytes]:
        """``SET key value [EX ttl] [NX|XX]``."""
        ttl = self.settings.ttl_seconds
        parts: list[pa.Array | bytes] = [b"SET", keys, values]
        if ttl:
            parts += [b"EX", str(ttl).encode()]
        if only:
            parts.append(only)
        return parts

    def _set_all(
        self, records: Records, query: str, changes: Changes | None, only: bytes | None = None
    ) -> Iterator[tuple[np.ndarray, pa.Array, pa.Array]]:
        """SET the records ``query`` renders, batch by batch; yields, per batch, which were set
        (``only`` NX or XX may leave some), their keys and their kinds. A helper thread renders
        the values (DuckDB) and encodes the commands (Arrow) of the next chunks while this
        thread sends and checks replies: both halves release the GIL."""

        def encoded() -> Iterator[tuple[memoryview, int, Any]]:
            for batch in records.stream(query):
                parts = self._set_parts(batch[TARGET], batch[VALUE], only)
                for start, (data, count) in enumerate(encoded_chunks(parts, batch.num_rows)):
                    last = (start + 1) * PIPELINE_COMMANDS >= batch.num_rows
                    yield data, count, (batch.num_rows, batch[TARGET], batch[CHANGE]) if last else None

        done: list[np.ndarray] = []
        # closed on any way out, so the encoder thread has stopped touching the run's DuckDB
        # connection before the engine uses it again (to roll back, say)
        with contextlib.closing(read_ahead(encoded(), depth=2, name="redis-encode")) as chunks:
            for replies, tag in self.link.exchange(chunks, 5):  # +OK, or $-1 (NX/XX: not set)
                done.append(replies[:, 0] == ord("+"))
                if tag is not None:  # the batch's last chunk is confirmed
                    rows, keys, kinds = tag
                    yield np.concatenate(done), keys, kinds
                    done.clear()
                    if changes is not None:
                        changes.handed(rows)

    def write(self, changes: Changes) -> Written:
        plan, records = changes.plan, changes.records
        counts = SyncCounts()
        if self.settings.mode == "insert_only":
            for was_set, _, _ in self._set_all(records, records.records_sql((NEW,)), changes, b"NX"):
                counts.inserted += int(was_set.sum())
            counts.unchanged = plan.records - counts.inserted
            return Written(counts)
        match = self.settings.match
        only = {"create_only": b"NX", "update_only": b"XX"}.get(match)
        unset = Unset(records, "rt_kept_out") if only else None
        for was_set, keys, kinds in self._set_all(records, records.records_sql((NEW, CHANGED, HEALED)), changes, only):
            if unset is None:
                continue  # every reply checked (+OK) by the link
            mask = pa.array(was_set)
            for kind, name in (
                (NEW, "inserted" if match == "create_only" else "updated"),
                (CHANGED, "updated"),
                (HEALED, "healed"),
            ):
                of_kind = pc.equal(kinds, kind)
                setattr(counts, name, getattr(counts, name) + int(pc.sum(pc.and_(of_kind, mask)).as_py() or 0))
            unset.add(keys.filter(pc.invert(mask)))
        if unset is None:
            counts.inserted, counts.updated, counts.healed = plan.new, plan.changed, plan.healed
        else:
            counts.skipped = unset.count
        lost = self._renew(changes, only)
        counts.healed += lost
        counts.unchanged = plan.unchanged - lost
        if unset is None:
            return Written(counts)
        table = unset.close()
        return Written(counts, absent=table) if match == "update_only" else Written(counts, kept=table)

    def _renew(self, changes: Changes, only: bytes | None = None) -> int:
        """Renew the TTL of the unchanged keys (``EXPIRE``; ``EXISTS`` without a TTL) and write
        again those Redis no longer has (flushed, evicted, expired); ``update_only`` (XX)
        writes none again. Returns how many were written again."""
        records = changes.records
        ttl = self.settings.ttl_seconds
        renew: list[pa.Array | bytes] = [b"EXPIRE"] if ttl else [b"EXISTS"]
        lost_table = records.table("rt_renew_lost")
        records.con.execute(f"create or replace table {lost_table} ({q(TARGET)} varchar)")
        writer = records.con.cursor()  # the stream below owns the connection's cursor
        lost = 0
        try:
            for batch in changes.batches((UNCHANGED,), rendered=False):
                keys = batch[TARGET]
                alive = self.link.replies([*renew, keys, *([str(ttl).encode()] if ttl else [])], len(keys), 4)
                gone = np.flatnonzero(alive[:, 1] == ord("0"))
                if len(gone):
                    writer.register("rt_gone", pa.table({TARGET: keys.take(pa.array(gone))}))
                    writer.execute(f"insert into {lost_table} select * from rt_gone")
                    writer.unregister("rt_gone")
                    lost += len(gone)
        finally:
            writer.close()
        if lost and only == b"XX":
            log.warning(
                "sync %s: %d unchanged keys were no longer in Redis; update_only does not create them",
                self.spec.name,
                lost,
            )
            return 0
        if lost:
            log.warning("sync %s: %d unchanged keys were no longer in Redis; writing them again", self.spec.name, lost)
            query = records.records_sql((UNCHANGED,))
            again = f"select * from ({query}) where {q(TARGET)} in (select {q(TARGET)} from {lost_table})"
            for _ in self._set_all(records, again, None):
                pass
        return lost

    # ---------------------------------------------------------------- end of run

    def finish(self, records: Records, gone: str | None, owed_refresh: list[str]) -> Finished:
        if self.settings.mode != "mirror" or gone is None:
            return Finished(SyncCounts())
        deleted = 0
        for batch in records.stream(f"select {q(TARGET)} from ({gone})"):
            replies = self.link.replies([b"DEL", batch[TARGET]], batch.num_rows, 4)
            deleted += int((replies[:, 1] == ord("1")).sum())  # expired keys are not counted
        return Finished(SyncCounts(deleted=deleted))

    # ---------------------------------------------------------------- verify

    def verify(self, records: Records, identities: str | None) -> Verified:
        """The model's keys (of ``identities``, else all) read back: missing, holding another
        value, or without the TTL the sync sets."""
        con = records.con
        shape = records.shape
        chosen = records.table("rt_verify_records")
        base = f"select r.*, {UNCHANGED}::tinyint as {CHANGE} from ({records.records_of_model()}) r"
        if identities is not None:
            base += f" semi join ({identities}) i on {records.on('i', 'r')}"
        con.execute(f"create or replace table {chosen} as {base}")
        table = records.table("rt_verified")
        con.execute(
            f"create or replace table {table} ({q(TARGET)} varchar, __rt_problem varchar, __rt_columns varchar[])"
        )
        rendered = shape.written(records.accepted(), chosen) if shape.written else f"select * from {chosen}"
        checked = 0
        writer = con.cursor()
        try:
            for batch in records.stream(f"select {TARGET}, {VALUE} from ({rendered})"):
                checked += batch.num_rows
                held = pa.array(self.link.values(batch[TARGET]), pa.binary()).cast(pa.string())
                problem = pc.if_else(
                    pc.is_null(held),
                    "missing",
                    pc.if_else(pc.equal(held, batch[VALUE]), pa.scalar(None, pa.string()), "differs"),
                )
                if self.settings.ttl_seconds:
                    ttls = pa.array(self.link.values(batch[TARGET], b"PTTL"), pa.int64())
                    problem = pc.if_else(pc.and_(pc.is_null(problem), pc.equal(ttls, -1)), "no ttl", problem)
                found = pa.table({TARGET: batch[TARGET], "__rt_problem": problem}).filter(pc.is_valid(problem))
                if found.num_rows:
                    writer.register("rt_found", found)
                    writer.execute(f"insert into {table} select *, []::varchar[] from rt_found")
                    writer.unregister("rt_found")
        finally:
            writer.close()
        return Verified(table, checked, records.count(f"select * from {table}"))

    def seal(self, records: Records) -> str:
        """What Redis holds now of the keys the run would write, for ``sync plan`` / ``apply``:
        a hash of their values (and the server's identity)."""
        digest = 0
        query = f"select {q(TARGET)} from {records.classified} where {CHANGE} in ({NEW}, {CHANGED}, {HEALED})"
        for batch in records.stream(query):
            values = pa.array(self.link.values(batch[TARGET]), pa.binary())
            table = pa.table({"k": batch[TARGET], "v": values})
            con = records.con.cursor()
            try:
                con.register("rt_seal", table)
                row = con.execute("select coalesce(bit_xor(hash(k, v)), 0) from rt_seal").fetchone()
            finally:
                con.close()
            digest ^= int(row[0]) if row else 0
        return f"{self.link.server_id()}:{digest}"

    def fields(self, records: Records, identities: str) -> str:
        """The fields the keys of ``identities`` would change (object values: per model
        column; list values: the whole value): ``__rt_target``, ``__rt_column``, ``__rt_old``,
        ``__rt_new``, one row per field that differs."""
        shape = records.shape
        con = records.con
        chosen = records.table("rt_field_records")
        con.execute(
            f"""create or replace table {chosen} as select r.*, {UNCHANGED}::tinyint as {CHANGE}
                from ({records.records_of_model()}) r semi join ({identities}) i on {records.on("i", "r")}"""
        )
        rendered = shape.written(records.accepted(), chosen) if shape.written else f"select * from {chosen}"
        pairs = records.table("rt_field_pairs")
        con.execute(f"create or replace table {pairs} ({q(TARGET)} varchar, __rt_held varchar, __rt_value varchar)")
        writer = con.cursor()
        try:
            for batch in records.stream(f"select {TARGET}, {VALUE} from ({rendered})"):
                held = pa.array(self.link.values(batch[TARGET]), pa.binary()).cast(pa.string())
                writer.register("rt_pairs", pa.table({TARGET: batch[TARGET], "h": held, "v": batch[VALUE]}))
                writer.execute(f"insert into {pairs} select * from rt_pairs")
                writer.unregister("rt_pairs")
        finally:
            writer.close()
        model = self.model
        assert model is not None
        table = records.table("rt_fields")
        if self.settings.value == "object":
            columns = model.columns
            fields = ", ".join(
                f"""struct_pack(c := {literal(c)}, o := json_extract_string(__rt_held, {literal(_path(c))}),
                                n := json_extract_string(__rt_value, {literal(_path(c))}))"""
                for c in columns
            )
            con.execute(
                f"""create or replace table {table} as
                    select {q(TARGET)}, f.c as __rt_column, f.o as __rt_old, f.n as __rt_new
                    from (select {q(TARGET)}, unnest([{fields}]) as f from {pairs} where json_valid(__rt_held))
                    where f.o is distinct from f.n
                    union all
                    select {q(TARGET)}, '(value)', __rt_held, __rt_value from {pairs}
                    where __rt_held is not null and not json_valid(__rt_held)"""
            )
        else:
            con.execute(
                f"""create or replace table {table} as
                    select {q(TARGET)}, '(value)' as __rt_column, __rt_held as __rt_old, __rt_value as __rt_new
                    from {pairs} where __rt_held is distinct from __rt_value"""
            )
        return table

    def extra(self, records: Records, against_model: bool = True) -> str:
        """Keys matching the template that the model does not render (a DuckDB table; with
        ``against_model`` false: every key matching it)."""
        con = records.con
        found = records.table("rt_scanned")
        con.execute(f"create or replace table {found} ({q(TARGET)} varchar)")
        writer = con.cursor()
        try:
            for page in self.link.scan(key_pattern(self.spec.target)):
                writer.register("rt_page", pa.table({TARGET: pa.array(page, pa.binary()).cast(pa.string())}))
                writer.execute(f"insert into {found} select * from rt_page")
                writer.unregister("rt_page")
        finally:
            writer.close()
        if not against_model:
            return found
        extra = records.table("rt_extra")
        con.execute(
            f"""create or replace table {extra} as select f.{q(TARGET)} from {found} f
                anti join ({records.records_of_model()}) m on m.{q(TARGET)} = f.{q(TARGET)}"""
        )
        return extra

    def held(self, records: Records) -> str | None:
        """The keys that match the template and parse back into key values of the model's
        types (``reco:{user_id}`` with an integer user_id: ``reco:17``, not ``reco:17:x``): what
        this sync could have written, to re-own a sync whose state was lost."""
        scanned = self.extra(records, against_model=False)
        model = self.model
        assert model is not None
        fields = key_template_fields(self.spec.target)
        pattern = (
            "^"
            + "".join(
                re.escape(text) + ("(.*)" if name else "") for text, name, _, _ in Formatter().parse(self.spec.target)
            )
            + "$"
        )
        parsed = ", ".join(
            f"try_cast(regexp_extract({q(TARGET)}, {literal(pattern)}, {i + 1}) as {model.types[f]}) as {q(f)}"
            for i, f in enumerate(fields)
        )
        table = records.table("rt_held_keys")
        records.con.execute(
            f"""create or replace table {table} as
                select {q(TARGET)} from (select {q(TARGET)}, {parsed} from {scanned})
                where {key_template_sql(self.spec.target)} = {q(TARGET)}"""
        )
        return table

    def test(self, records: Records, tests: DestinationTests, expected: int) -> list[str]:
        """row_count: how many of the mart's keys exist (pipelined EXISTS)."""
        if tests.row_count is None:
            return []
        held = 0
        for batch in records.stream(f"select {q(TARGET)} from ({records.records_of_model()})"):
            replies = self.link.replies([b"EXISTS", batch[TARGET]], batch.num_rows, 4)
            held += int((replies[:, 1] == ord("1")).sum())
        share = 100.0 * abs(held - expected) / max(expected, 1)
        if share <= tests.row_count["within_pct"]:
            return []
        return [
            f"row_count: {held:,} of the mart's {expected:,} keys exist in Redis "
            f"({share:.1f} % apart, more than within_pct {tests.row_count['within_pct']:g})"
        ]

    def commit(self) -> None:
        """Nothing: each Redis command is durable as it is answered (the write-ahead covers a crash)."""

    def rollback(self) -> None:
        """Nothing can be undone: the write-ahead marks make the next run send it again."""

    def after_commit(self, refresh_due: list[str]) -> list[str]:
        return []

    def close(self) -> None:
        self.link.close()
