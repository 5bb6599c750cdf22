"""What a Postgres column can hold of a model column, checked before anything is written.

Two kinds of misfit, treated differently:

- a column that would change values silently (a ``double`` model column into an ``integer``
  column rounds; into ``numeric(10,1)`` or ``timestamp(0)`` too; ``timestamptz`` into
  ``timestamp`` shifts): the whole run stops before writing, naming the column and the fix
  (``DestinationError``): every row would be affected;
- values Postgres refuses one by one (a NUL byte in text, a number beyond the column's range, a
  string longer than ``varchar(n)``, invalid JSON for a ``jsonb`` column): those rows are
  rejected with the reason, and the others are written.

DuckDB's postgres extension sends a ``HUGEINT`` as a double (digits lost): such columns are
written as ``DECIMAL(38,0)``, and a value beyond it is rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reverse_etl.errors import DestinationError
from reverse_etl.records import ValueRule, q
from roundtrip.core.sql import literal

INTEGER_BITS = {"smallint": 16, "integer": 32, "bigint": 64}
MODEL_INT_BITS = {
    "TINYINT": 8,
    "SMALLINT": 16,
    "INTEGER": 32,
    "BIGINT": 64,
    "HUGEINT": 128,
    "UTINYINT": 9,
    "USMALLINT": 17,
    "UINTEGER": 33,
    "UBIGINT": 65,
    "UHUGEINT": 129,
}
WIDE_INTEGERS = ("HUGEINT", "UHUGEINT")
NUMERIC_38 = "100000000000000000000000000000000000000"  # 10^38: beyond DECIMAL(38,0)


@dataclass(frozen=True)
class Column:
    name: str
    model_type: str  # DuckDB's name of the model column's type
    pg_type: str | None  # format_type() of the destination column; None: the sync creates it


def sent_as_text(model_type: str) -> bool:
    """DuckDB's binary COPY writes DECIMAL(18,17) and DECIMAL(38,37) wrongly (an error, or for a
    negative value a wrong number, seen with DuckDB 1.5.5): such a column travels as text and
    Postgres casts it."""
    found = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", model_type.upper())
    return bool(found) and int(found.group(1)) in (18, 38) and int(found.group(2)) == int(found.group(1)) - 1  # type: ignore[union-attr]


def written_expression(name: str, model_type: str, alias: str = "m") -> str:
    """How the model column is written: as it is, as an exact decimal (HUGEINT), or as text."""
    column = f"{alias}.{q(name)}"
    if model_type.upper() in WIDE_INTEGERS:
        return f"{column}::decimal(38, 0) as {q(name)}"
    if sent_as_text(model_type):
        return f"{column}::varchar as {q(name)}"
    return column


def rules_for(sync: str, column: Column) -> list[ValueRule]:
    """The rows to reject for ``column``; raises when the column would alter every value."""
    model, pg = column.model_type.upper(), (column.pg_type or "").lower()
    c, label = q(column.name), column.name
    rules: list[ValueRule] = []
    if model in WIDE_INTEGERS:
        rules.append(
            ValueRule(
                f"abs({c}::double) >= 1e38 and abs({c}) >= {NUMERIC_38}::{model}",
                literal(f"{label}: the number has more than 38 digits, beyond Postgres' numeric(38)"),
            )
        )
    if model == "VARCHAR" or model.startswith("VARCHAR"):
        rules.append(
            ValueRule(f"strpos({c}, chr(0)) > 0", literal(f"{label}: a NUL byte, which Postgres text cannot hold"))
        )
    if not pg:
        return rules
    _check_silent_loss(sync, column, model, pg)
    rules += _range_rules(column, model, pg)
    return rules


def _check_silent_loss(sync: str, column: Column, model: str, pg: str) -> None:
    """Refuse a destination column that would change the values without an error."""
    problem = None
    numeric = re.fullmatch(r"numeric\((\d+),(\d+)\)", pg.replace(" ", ""))
    time_precision = re.fullmatch(r"(timestamp|time)\((\d)\)( with(out)? time zone)?", pg)
    if model in ("FLOAT", "DOUBLE"):
        if pg in INTEGER_BITS or numeric or (pg == "real" and model == "DOUBLE"):
            problem = f"it is {pg}, and the model sends {model}: the values would be rounded"
    elif model.startswith("DECIMAL"):
        scale = int(re.findall(r"\d+", model)[1]) if "," in model else 0
        if pg in INTEGER_BITS and scale > 0:
            problem = f"it is {pg}, and the model sends {model}: the fractions would be rounded away"
        elif numeric and int(numeric.group(2)) < scale:
            problem = f"it is {pg}, and the model sends {model}: the values would be rounded"
        elif pg in ("real", "double precision") and (int(re.findall(r"\d+", model)[0]) > (6 if pg == "real" else 15)):
            problem = f"it is {pg}, and the model sends {model}: digits would be lost"
    elif model.startswith("TIMESTAMP"):
        with_tz = "TIME ZONE" in model or model == "TIMESTAMPTZ"
        if pg == "date":
            problem = f"it is date, and the model sends {model}: the time of day would be lost"
        elif pg.startswith("timestamp") and with_tz != ("with time zone" in pg):
            problem = f"it is {pg}, and the model sends {model}: the values would be shifted by a time zone"
        elif time_precision and int(time_precision.group(2)) < 6:
            problem = f"it is {pg}, and the model sends microseconds: they would be rounded"
    elif model in MODEL_INT_BITS and pg in ("real",):
        problem = f"it is {pg}, and the model sends {model}: large integers would be rounded"
    if problem:
        raise DestinationError(
            f"sync {sync}: column {column.name} of the destination cannot hold the model's values: {problem}; "
            "nothing was written",
            hint=f"change the column's type (alter table ... alter column {column.name} type ...), "
            "or cast the column in the model",
        )


def _range_rules(column: Column, model: str, pg: str) -> list[ValueRule]:
    c, label = q(column.name), column.name
    if pg in INTEGER_BITS and model in MODEL_INT_BITS and MODEL_INT_BITS[model] > INTEGER_BITS[pg]:
        bound = 2 ** (INTEGER_BITS[pg] - 1)
        return [
            ValueRule(
                f"{c}::hugeint not between {-bound} and {bound - 1}",
                literal(f"{label}: the number is out of range for the destination's {pg}"),
            )
        ]
    if (pg in INTEGER_BITS and model in ("FLOAT", "DOUBLE")) or (pg in INTEGER_BITS and model.startswith("DECIMAL")):
        bound = 2 ** (INTEGER_BITS[pg] - 1)
        return [
            ValueRule(
                f"{c} < {-bound} or {c} >= {bound}",
                literal(f"{label}: the number is out of range for the destination's {pg}"),
            )
        ]
    numeric = re.fullmatch(r"numeric\((\d+),(\d+)\)", pg.replace(" ", ""))
    if numeric and (model in MODEL_INT_BITS or model.startswith("DECIMAL")):
        whole = int(numeric.group(1)) - int(numeric.group(2))
        return [
            ValueRule(
                f"abs({c}::double) >= 1e{whole}",
                literal(
                    f"{label}: the number has more than {whole} digits before the point, beyond the destination's {pg}"
                ),
            )
        ]
    if pg == "double precision" and model in ("BIGINT", "HUGEINT", "UBIGINT", "UHUGEINT"):
        return [
            ValueRule(
                f"abs({c}::hugeint) > 9007199254740992",
                literal(f"{label}: the integer is beyond 2^53, which the destination's double precision rounds"),
            )
        ]
    varchar = re.fullmatch(r"character varying\((\d+)\)", pg)
    if varchar and model.startswith("VARCHAR"):
        n = int(varchar.group(1))
        return [ValueRule(f"length({c}) > {n}", literal(f"{label}: the text is longer than the destination's {pg}"))]
    if pg in ("json", "jsonb") and model.startswith("VARCHAR"):
        return [ValueRule(f"not json_valid({c})", literal(f"{label}: not valid JSON for the destination's {pg}"))]
    if pg == "jsonb" and model.startswith("JSON"):
        return [ValueRule(f"strpos({c}::varchar, '\\u0000') > 0", literal(f"{label}: jsonb cannot hold \\u0000"))]
    return []
