"""Set-based statements generated from declared keys, for every warehouse.

DuckDB, PostgreSQL (15+) and BigQuery share the standard ``MERGE`` and ``IS DISTINCT FROM``;
only identifier quoting differs, so each generator takes the warehouse's ``quote`` function
(``roundtrip.core.sql``).
Never hand-write one of these per table.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from loaders.warehouse.base import LOADED_AT

Quote = Callable[[str], str]  # roundtrip.core.sql.quote or quote_backtick


def _key_match(keys: list[str], q: Quote, left: str = "t", right: str = "s") -> str:
    return " and ".join(f"{left}.{q(k)} = {right}.{q(k)}" for k in keys)


def _changed(columns: list[str], keys: list[str], q: Quote, as_text: Collection[str] = ()) -> str:
    """True when a matched row differs in a non-key column (the load stamp does not count).
    ``as_text``: columns compared through their JSON text (BigQuery's JSON has no equality)."""
    compared = [c for c in columns if c not in keys and c != LOADED_AT]

    def side(alias: str, column: str) -> str:
        return f"to_json_string({alias}.{q(column)})" if column in as_text else f"{alias}.{q(column)}"

    return " or ".join(f"{side('t', c)} is distinct from {side('s', c)}" for c in compared) or "false"


def merge_statement(
    target: str, stage: str, columns: list[str], keys: list[str], q: Quote, as_text: Collection[str] = ()
) -> str:
    """Insert new keys, update rows whose values changed, leave equal rows untouched."""
    updates = ", ".join(f"{q(c)} = s.{q(c)}" for c in columns if c not in keys)
    insert = ", ".join(q(c) for c in columns)
    values = ", ".join(f"s.{q(c)}" for c in columns)
    when_matched = (
        f"when matched and ({_changed(columns, keys, q, as_text)}) then update set {updates} " if updates else ""
    )
    return (
        f"merge into {target} t using {stage} s on {_key_match(keys, q)} "
        f"{when_matched}when not matched then insert ({insert}) values ({values})"
    )


MATCHED, CHANGED = "_roundtrip_matched", "_roundtrip_changed"


def compare_statement(target: str, stage: str, columns: list[str], keys: list[str], q: Quote, into: str) -> str:
    """A temp table ``into``: each staged key, whether the target holds it and whether its row
    differs. The one comparison of whole rows; the counts, the delete and the insert read it by
    key only."""
    key_list = ", ".join(f"s.{q(k)}" for k in keys)
    return (
        f"create temp table {into} as select {key_list}, t.{q(keys[0])} is not null as {MATCHED}, "
        f"({_changed(columns, keys, q)}) as {CHANGED} from {stage} s left join {target} t on {_key_match(keys, q)}"
    )


def compared_counts_query(compared: str) -> str:
    """Inserted, updated and unchanged, from ``compare_statement``'s table."""
    return (
        f"select coalesce(sum(case when {MATCHED} then 0 else 1 end), 0), "
        f"coalesce(sum(case when {MATCHED} and {CHANGED} then 1 else 0 end), 0), "
        f"coalesce(sum(case when {MATCHED} and not {CHANGED} then 1 else 0 end), 0) from {compared}"
    )


def delete_changed_statement(target: str, compared: str, keys: list[str], q: Quote) -> str:
    """Delete the target's rows whose staged row differs (``insert_new_and_changed_statement``
    puts the staged one in)."""
    match = _key_match(keys, q, "t", "c")
    return f"delete from {target} t using {compared} c where {match} and c.{MATCHED} and c.{CHANGED}"


def insert_new_and_changed_statement(
    target: str, stage: str, compared: str, columns: list[str], keys: list[str], q: Quote
) -> str:
    """Insert the staged rows that are new or changed."""
    column_list = ", ".join(q(c) for c in columns)
    return (
        f"insert into {target} ({column_list}) select {column_list} from {stage} s where exists "
        f"(select 1 from {compared} c where {_key_match(keys, q, 'c', 's')} and (not c.{MATCHED} or c.{CHANGED}))"
    )


def merge_counts_query(
    target: str, stage: str, columns: list[str], keys: list[str], q: Quote, as_text: Collection[str] = ()
) -> str:
    """One row: how many staged rows the MERGE will insert, update and leave unchanged."""
    return (
        "select coalesce(sum(case when matched then 0 else 1 end), 0), "
        "coalesce(sum(case when matched and changed then 1 else 0 end), 0), "
        "coalesce(sum(case when matched and not changed then 1 else 0 end), 0) "
        f"from (select t.{q(keys[0])} is not null as matched, ({_changed(columns, keys, q, as_text)}) as changed "
        f"from {stage} s left join {target} t on {_key_match(keys, q)}) as compared"
    )


def null_key_count_query(stage: str, keys: list[str], q: Quote) -> str:
    return f"select count(*) from {stage} where " + " or ".join(f"{q(k)} is null" for k in keys)


def duplicate_key_query(stage: str, keys: list[str], q: Quote) -> str:
    """The first key that appears more than once, with its count (no row when keys are unique)."""
    key_list = ", ".join(q(k) for k in keys)
    return f"select {key_list}, count(*) from {stage} group by {key_list} having count(*) > 1 limit 1"


def missing_keys_predicate(target_alias: str, present: str, keys: list[str], q: Quote) -> str:
    return f"not exists (select 1 from {present} p where {_key_match(keys, q, 'p', target_alias)})"


def check_staged_keys(
    fetchone: Callable[[str], tuple | None], stage: str, keys: list[str], where: str, q: Quote
) -> None:  # type: ignore[type-arg]
    """Refuse a staged batch whose key is NULL or repeated: a MERGE would pick a row at random.

    Sources resolve repeats first where they can (the SQLite reader keeps the latest row by
    cursor); what is left here is an error that names the table and one offending key.
    """
    from loaders.errors import LoaderError

    nulls = fetchone(null_key_count_query(stage, keys, q))
    if nulls and nulls[0]:
        raise LoaderError(f"{where}: {nulls[0]} row(s) have a NULL in the key {keys}")
    duplicate = fetchone(duplicate_key_query(stage, keys, q))
    if duplicate:
        raise LoaderError(
            f"{where}: key {dict(zip(keys, duplicate[:-1]))} appears {duplicate[-1]} times in one load; "
            "declare a cursor to keep the latest row, or fix primary_key in loaders.yml"
        )


def type_change_error(
    relation: str, column: str, quoted: str, target_type: str, source_type: str, value: object
) -> Exception:
    """The error of a source column whose type changed and whose ``value`` the warehouse column
    would not keep (both warehouses' ``_check_fits``)."""
    from loaders.errors import LoaderError

    return LoaderError(
        f"{relation}.{column} is {target_type} in the warehouse but the source now sends {source_type}: "
        f"its value {value!r} would not be kept",
        hint=f"widen the warehouse column (alter table {relation} alter column {quoted} type {source_type}), "
        "then load again; nothing of this load was written",
    )
