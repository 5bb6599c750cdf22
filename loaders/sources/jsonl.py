"""JSON lines -> text columns, one record per line; every line that is not a record is held back.

The bytes are split into physical lines by ``loaders.sources.lines`` (numbers, offsets, UTF-8,
NUL, BOM, blank lines), and the lines of a chunk go to DuckDB at once, as one Arrow string
array over the chunk's bytes (no Python object per line). DuckDB checks each line and takes
its fields out as text, the same text ``read_json`` gives a VARCHAR column (numbers as sent,
nested values as compact JSON); Python only looks at the few lines that fail, to say why.

A line is a record when it is one JSON object (RFC 8259: no trailing comma, no NaN or
Infinity, no comment), with no field twice and, when the stream declares its columns, no field
outside them (after name sanitizing), and no value holding a NUL character (``\\u0000``: Postgres
text cannot store it). Every other line is held back with its reason.

With declared columns, ``_missing_fields`` lists the declared fields a record lacks entirely
(comma-separated, in column order; NULL when it has them all): an absent field and an explicit
``null`` are both NULL in their column, and only this column tells them apart.
"""

from __future__ import annotations

import json
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from loaders.config import MAX_COLUMNS, MAX_LINE_BYTES
from loaders.sources import lines
from loaders.sources.lines import FileProblem, HeldBack
from roundtrip.core.contract import MISSING_FIELDS
from roundtrip.core.sql import literal
from roundtrip.core.sql import quote as q

# what DuckDB's JSON reader accepts beyond RFC 8259; lines matching are checked again by Python
_LENIENT = r",\s*[}\]]|[:,\[]\s*[+-]?(?i:nan|inf)"
_JSON_TYPES = {"ARRAY": "array", "VARCHAR": "string", "BOOLEAN": "boolean", "NULL": "null"}
_SHOWN_FIELDS = 5


def _sanitize(name: str) -> str:
    from loaders.sources.files import sanitize

    return sanitize(name)


class _Keys:
    """Source keys -> columns: the declared columns (a key sanitizes into one of them, or is
    unexpected), or, without a declaration, every key met so far in order of appearance."""

    def __init__(self, columns: list[str] | None, max_columns: int = MAX_COLUMNS) -> None:
        self.declared = columns
        self.max_columns = max_columns
        self.columns: list[str] = list(columns or [])
        self.mapping: dict[str, str] = {c: c for c in self.columns}

    def learn(self, keys: list[str]) -> list[str]:
        """Map new keys; returns those that fit no declared column."""
        unexpected = []
        for key in keys:
            if key in self.mapping:
                continue
            clean = _sanitize(key)
            if self.declared is not None and clean not in self.declared:
                unexpected.append(key)
                continue
            self.mapping[key] = clean
            if clean not in self.columns:
                if len(self.columns) == self.max_columns:
                    raise FileProblem(
                        f"more than max_columns ({self.max_columns:,}) distinct fields, e.g. {key!r}: "
                        "declare the stream's `columns`, or raise max_columns"
                    )
                self.columns.append(clean)
        return unexpected

    def originals(self, column: str) -> list[str]:
        return [k for k, c in self.mapping.items() if c == column]


def _pointer(key: str) -> str:
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _list(values: list[str]) -> str:
    return "[" + ", ".join(literal(v) for v in values) + "]::varchar[]"


def _query(keys: _Keys, text: str, nul_check: bool, where: str = "") -> str:
    """One pass over the chunk's lines: the problem of each (NULL for a record), its fields,
    and which declared fields it lacks. A line whose keys are exactly the columns, in order
    (what one producer writes), skips the per-key checks."""
    originals = list(keys.mapping)
    pointers = ", ".join(literal(_pointer(k)) for k in originals)
    position = {k: i + 1 for i, k in enumerate(originals)}
    complete = _list([keys.originals(c)[0] for c in keys.columns])
    collisions = [o for o in (keys.originals(c) for c in keys.columns) if len(o) > 1]
    problem = ["when keys is null then coalesce('type:' || json_type_, 'json')"]
    if nul_check:
        problem.append(
            "when list_bool_or(list_transform(vals, v -> coalesce(strpos(v, chr(0)) > 0, false))) then 'nul'"
        )
    problem += [
        f"when keys = {complete} then null",
        "when len(keys) <> len(list_distinct(keys)) then 'duplicate'",
        *(f"when len(list_intersect(keys, {_list(o)})) > 1 then 'collision'" for o in collisions),
    ]
    values = []
    for column in keys.columns:
        found = [f"vals[{position[o]}]" for o in keys.originals(column)]
        values.append(f"{found[0] if len(found) == 1 else 'coalesce(' + ', '.join(found) + ')'} as {q(column)}")
    missing = ""
    if keys.declared is not None:
        absent = ", ".join(
            f"case when not list_has_any(keys, {_list(keys.originals(c))}) then {literal(c)} end" for c in keys.columns
        )
        missing = f", case when keys <> {complete} then nullif(concat_ws(',', {absent}), '') end as {MISSING_FIELDS}"
    return f"""
        select idx, case {" ".join(problem)} end as problem,
            case when keys <> {complete} then list_filter(keys, k -> not list_contains({_list(originals)}, k))
            end as foreign_keys,
            regexp_matches(t, {literal(_LENIENT)}) as lenient
            {"".join(", " + v for v in values)}{missing}
        from (
            select *, case when keys is not null then json_extract_string(t, [{pointers}]) end as vals
            from (
                select idx, t, json_type_,
                    case when json_type_ = 'OBJECT' then json_keys(t) end as keys
                from (
                    select idx, t, case when json_valid(t) then json_type(t) end as json_type_
                    from (select idx, {text} as t from _lines {where})
                )
            )
        )
    """


def _reason(problem: str, body: bytes, con: Any, unexpected: list[str], keys: _Keys) -> str:
    if problem == "json":
        return "not valid JSON: " + _json_error(body, con)
    if problem.startswith("type:"):
        return f"a JSON {_JSON_TYPES.get(problem[5:], 'number')}, not an object"
    if problem == "duplicate":
        seen: set[str] = set()
        twice = [k for k in _keys_of(body) if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
        return f"field {twice[0]!r} appears more than once" if twice else "a field appears more than once"
    if problem == "collision":
        present = _keys_of(body)
        for column in keys.columns:
            both = [k for k in present if keys.mapping.get(k) == column]  # in the line's order
            if len(both) > 1:
                return f"fields {both[0]!r} and {both[1]!r} both become column {column!r}"
    if problem == "nul":
        return "a value holds a NUL character (\\u0000), which the warehouse cannot store"
    if problem == "unexpected":
        shown = ", ".join(repr(k) for k in unexpected[:_SHOWN_FIELDS])
        more = f" and {len(unexpected) - _SHOWN_FIELDS} more" if len(unexpected) > _SHOWN_FIELDS else ""
        return f"unexpected field(s) {shown}{more}: not among the stream's columns"
    return problem


def _keys_of(body: bytes) -> list[str]:
    try:
        pairs = json.loads(body.decode("utf-8").lstrip("\ufeff"), object_pairs_hook=lambda p: p)
    except ValueError:
        return []
    return [k for k, _ in pairs] if isinstance(pairs, list) else []


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _strict_error(body: bytes) -> str | None:
    """Python's strict reading of a line DuckDB accepted (trailing commas, NaN)."""
    try:
        json.loads(body.decode("utf-8").lstrip("\ufeff"), parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} (column {exc.colno})"
    except ValueError as exc:
        return str(exc)
    return None


def _json_error(body: bytes, con: Any) -> str:
    text = body.decode("utf-8").lstrip("\ufeff")
    if not text.strip():
        return "empty"
    try:
        json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} (column {exc.colno})"
    except ValueError as exc:
        return str(exc)
    try:  # Python accepts what DuckDB refuses (a lone surrogate \ud800): DuckDB's own words
        con.execute("select json(?)", [text]).fetchall()
    except Exception as exc:
        message = str(exc).split(": ", 1)[-1]
        return message.split("  Input:")[0].strip()
    return "refused by the JSON parser"


def read(
    con: Any,
    handle: BinaryIO,
    columns: list[str] | None,
    chunk_bytes: int = lines.CHUNK_BYTES,
    max_line: int = MAX_LINE_BYTES,
    max_columns: int = MAX_COLUMNS,
) -> tuple[list[pa.Table], list[HeldBack], list[str]]:
    """(record batches, held-back lines, columns). Each batch has the columns known when it was
    read, then ``_source_line`` and, with declared columns, ``_missing_fields``."""
    keys = _Keys(columns, max_columns)
    tables: list[pa.Table] = []
    held: list[HeldBack] = []
    for chunk, data, offset in lines.numbered(handle, chunk_bytes, max_line):
        held += chunk.held_back
        if len(chunk.text):
            table, bad = _parse(con, chunk, data, offset, keys)
            tables.append(table)
            held += bad
    held.sort(key=lambda h: h.line or 0)
    return tables, held, keys.columns


def _parse(con: Any, chunk: lines.Chunk, data: bytes, offset: int, keys: _Keys) -> tuple[pa.Table, list[HeldBack]]:
    count = len(chunk.text)
    con.register("_lines", pa.table({"idx": pa.array(np.arange(count, dtype=np.int64)), "text": chunk.text}))
    text = "ltrim(text, chr(65279))" if chunk.bom_inside else "text"
    nul_check = data.find(b"\\u0000") >= 0
    try:
        if keys.declared is None:
            found = con.execute(
                f"select key from (select idx, unnest(json_keys(t)) as key, unnest(range(len(json_keys(t)))) as pos "
                f"from (select idx, {text} as t from _lines where json_valid(t) and json_type(t) = 'OBJECT')) "
                "group by key order by min(idx * 1048576 + pos)"
            ).fetchall()
            keys.learn([k for (k,) in found])
        result = con.execute(_query(keys, text, nul_check)).to_arrow_table()
        foreign = pc.list_value_length(result.column("foreign_keys")).fill_null(0).to_numpy() > 0
        unexpected: dict[int, list[str]] = {}
        if foreign.any():
            rows = result.filter(pa.array(foreign))
            strangers = sorted({k for ks in rows.column("foreign_keys").to_pylist() for k in ks})
            keys.learn(strangers)
            ids = rows.column("idx").to_pylist()
            again = con.execute(
                _query(keys, text, nul_check, f"where idx in (select unnest({'[' + ', '.join(map(str, ids)) + ']'}))")
            ).to_arrow_table()
            for idx, extra in zip(again.column("idx").to_pylist(), again.column("foreign_keys").to_pylist()):
                if extra:
                    unexpected[idx] = extra
            result = pa.concat_tables([result.filter(pa.array(~foreign)), again], promote_options="default").sort_by(
                "idx"
            )
    finally:
        con.unregister("_lines")

    problems = result.column("problem").to_pylist()
    lenient = result.column("lenient").to_numpy(zero_copy_only=False)
    bad: list[HeldBack] = []
    good = np.ones(result.num_rows, bool)
    suspects = (
        [i for i, p in enumerate(problems) if p is not None]
        + list(unexpected)
        + [i for i in np.flatnonzero(lenient).tolist() if problems[i] is None and i not in unexpected]
    )
    if suspects:
        suspects = sorted(set(suspects))
        raws = lines.raw_lines(data, offset, chunk.offsets[suspects])
        for i, raw in zip(suspects, raws):
            problem = problems[i] or ("unexpected" if i in unexpected else None)
            if problem is None:  # DuckDB took it; is it standard JSON?
                error = _strict_error(raw)
                if error is None:
                    continue
                reason = "not valid JSON: " + error
            else:
                reason = _reason(problem, raw, con, unexpected.get(i, []), keys)
            good[i] = False
            bad.append(lines.held_back(int(chunk.numbers[i]), int(chunk.offsets[i]), reason, raw))
    kept = result if good.all() else result.filter(pa.array(good))
    idx = kept.column("idx").to_numpy()
    out = kept.select(keys.columns).append_column("_source_line", pa.array(chunk.numbers[idx]))
    if keys.declared is not None:
        out = out.append_column(MISSING_FIELDS, kept.column(MISSING_FIELDS))
    return out, bad
