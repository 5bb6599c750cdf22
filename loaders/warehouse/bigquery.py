"""BigQuery as the warehouse: Storage Write into an expiring staging table, then one MERGE.

A write stages its rows in a uniquely named table of the ``_roundtrip`` dataset
(``_stage_<table>_<time>_<random>``, expiring after ``STAGING_HOURS`` in case a run dies before
dropping it) through a PENDING Storage Write stream (``bigquery_write``), then runs one
statement generated from the keys with backtick-quoted identifiers.

Transactions: BigQuery runs a multi-statement transaction inside one script. So inside
``transaction()`` the DML statements (MERGE, INSERT, DELETE) are collected and run at the end as
``BEGIN TRANSACTION; ...; COMMIT TRANSACTION;``: the rows and the loader's watermark or manifest
rows commit together or not at all. Staging and table creation (DDL, not allowed inside a
transaction) happen before; a failed run leaves at most an empty new table and staging tables
that are dropped at once (or expire). Counts are computed from the staged rows before the
script runs, so they are exact as long as no other writer touches the same table meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from loaders.errors import LoaderError
from loaders.warehouse import sql
from loaders.warehouse.base import STATE_SCHEMA, Batches, ParquetExport, WriteResult
from loaders.warehouse.bigquery_write import write_pending
from roundtrip.core.sql import quote_backtick

if TYPE_CHECKING:
    from roundtrip.core.settings import Settings

log = logging.getLogger(__name__)
q = quote_backtick
STAGING_HOURS = 24
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")


def bq_type(type_: pa.DataType, column: str) -> str:
    if isinstance(type_, pa.JsonType):
        return "JSON"
    if pa.types.is_boolean(type_):
        return "BOOL"
    if pa.types.is_integer(type_):
        return "INT64"
    if pa.types.is_floating(type_):
        return "FLOAT64"
    if pa.types.is_decimal(type_):
        fits_numeric = type_.scale <= 9 and type_.precision - type_.scale <= 29
        return "NUMERIC" if fits_numeric else "BIGNUMERIC"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return "STRING"
    if pa.types.is_binary(type_) or pa.types.is_large_binary(type_):
        return "BYTES"
    if pa.types.is_timestamp(type_):
        return "TIMESTAMP" if type_.tz else "DATETIME"
    if pa.types.is_date(type_):
        return "DATE"
    if pa.types.is_time(type_):
        return "TIME"
    raise LoaderError(f"column {column!r}: no BigQuery type for Arrow {type_}")


def _json_as_text(batch: pa.Table) -> pa.Table:
    """JSON columns (Arrow's json extension) as their text: what Storage Write takes for JSON."""
    for index, field in enumerate(batch.schema):
        if isinstance(field.type, pa.JsonType):
            column = pa.chunked_array([c.storage for c in batch.column(index).chunks], pa.string())
            batch = batch.set_column(index, field.name, column)
    return batch


def bq_string(value: str) -> str:
    """A BigQuery string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


@dataclass(frozen=True)
class BigQuerySettings:
    """Where and how to reach BigQuery; the endpoints point at an emulator when set."""

    project: str
    location: str = "EU"
    keyfile: str | None = None
    api_endpoint: str | None = None  # REST, e.g. http://127.0.0.1:9050 (emulator)
    storage_endpoint: str | None = None  # Storage Write gRPC host:port (emulator, plaintext)

    @classmethod
    def from_settings(cls, settings: Settings) -> BigQuerySettings:
        """The dbt ``bigquery`` target's settings, plus the emulator endpoints."""
        return cls(
            project=settings.bq_project,
            location=settings.bq_location,
            keyfile=str(settings.bq_keyfile) if settings.bq_keyfile else None,
            api_endpoint=settings.bq_api_endpoint,
            storage_endpoint=settings.bq_storage_endpoint,
        )

    def clients(self) -> tuple[Any, Any]:
        """(google.cloud.bigquery.Client, BigQueryWriteClient)."""
        from google.cloud import bigquery
        from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

        if self.api_endpoint:  # an emulator: no credentials, plaintext gRPC
            import grpc
            from google.api_core.client_options import ClientOptions
            from google.auth.credentials import AnonymousCredentials
            from google.cloud.bigquery_storage_v1.services.big_query_write.transports import (
                BigQueryWriteGrpcTransport,
            )

            client = bigquery.Client(
                project=self.project,
                location=self.location,
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options=ClientOptions(api_endpoint=self.api_endpoint),
            )
            if not self.storage_endpoint:
                raise LoaderError("ROUNDTRIP_BQ_STORAGE_ENDPOINT must name the emulator's gRPC host:port")
            channel = grpc.insecure_channel(self.storage_endpoint)
            return client, BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=channel))
        credentials = None
        if self.keyfile:
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_file(self.keyfile)  # type: ignore[no-untyped-call]
        client = bigquery.Client(project=self.project, location=self.location, credentials=credentials)
        return client, BigQueryWriteClient(credentials=client._credentials)


class BigQueryWarehouse:
    name = "bigquery"

    def __init__(self, settings: BigQuerySettings) -> None:
        self.settings = settings
        self.project = settings.project
        self.client, self.write_client = settings.clients()
        self._script: list[str] | None = None  # DML collected inside transaction()
        self._staged: list[str] = []  # staging tables to drop when the transaction ends
        self._datasets: set[str] = set()

    # ------------------------------------------------------------ plumbing

    def relation(self, dataset: str, table: str) -> str:
        return f"{q(self.project)}.{q(dataset)}.{q(table)}"

    def _table_id(self, dataset: str, table: str) -> str:
        return f"{self.project}.{dataset}.{table}"

    def query(self, statement: str) -> Any:
        try:
            return self.client.query(statement).result()
        except Exception as exc:  # google.api_core errors carry the server's message
            raise LoaderError(f"BigQuery refused: {getattr(exc, 'message', exc)}\n  in: {statement[:500]}") from exc

    def _fetchone(self, statement: str) -> tuple | None:  # type: ignore[type-arg]
        rows = list(self.query(statement))
        return tuple(rows[0].values()) if rows else None

    def _run(self, statement: str) -> None:
        """Now, or at the end of the open transaction."""
        if self._script is not None:
            self._script.append(statement)
        else:
            self.query(statement)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._script is not None:  # nested: the outer one commits
            yield
            return
        self._script = []
        try:
            yield
            if self._script:
                self.query("BEGIN TRANSACTION;\n" + ";\n".join(self._script) + ";\nCOMMIT TRANSACTION;")
        finally:
            self._script = None
            self._drop_staged()

    def _drop_staged(self) -> None:
        for table_id in self._staged:
            try:
                self.client.delete_table(table_id, not_found_ok=True)
            except Exception as exc:  # it expires anyway
                log.warning("could not drop staging table %s (it expires): %s", table_id, exc)
        self._staged = []

    def ensure_dataset(self, dataset: str) -> None:
        if dataset not in self._datasets:
            from google.cloud import bigquery

            ref = bigquery.Dataset(f"{self.project}.{dataset}")
            ref.location = self.settings.location
            self.client.create_dataset(ref, exists_ok=True)
            self._datasets.add(dataset)

    def _schema(self, columns: pa.Schema) -> list[Any]:
        from google.cloud import bigquery

        for field in columns:
            if not _COLUMN_NAME.fullmatch(field.name):
                raise LoaderError(
                    f"column {field.name!r} is not a BigQuery column name (letters, digits, underscores; "
                    "not starting with a digit)"
                )
        return [bigquery.SchemaField(f.name, bq_type(f.type, f.name)) for f in columns]

    def _existing(self, dataset: str, table: str) -> Any | None:
        from google.api_core.exceptions import NotFound

        try:
            return self.client.get_table(self._table_id(dataset, table))
        except NotFound:
            return None

    def _stage(self, batches: Batches, table: str) -> tuple[str, pa.Schema] | None:
        """Stage every batch through one PENDING write stream into a fresh, expiring table."""
        from google.cloud import bigquery

        iterator = iter(batches)
        first = next(iterator, None)
        if first is None:
            return None
        self.ensure_dataset(STATE_SCHEMA)
        stamp = datetime.now(UTC)
        name = f"_stage_{table}_{stamp:%Y%m%d%H%M%S}_{uuid.uuid4().hex[:8]}"[:1024]
        staging = bigquery.Table(self._table_id(STATE_SCHEMA, name), schema=self._schema(first.schema))
        staging.expires = stamp + timedelta(hours=STAGING_HOURS)
        self.client.create_table(staging)
        self._staged.append(self._table_id(STATE_SCHEMA, name))

        def all_batches() -> Iterator[pa.Table]:
            yield _json_as_text(first)
            for batch in iterator:
                if batch.schema.names != first.schema.names:
                    raise LoaderError(
                        f"{table}: batches disagree on columns: {first.schema.names} then {batch.schema.names}"
                    )
                yield _json_as_text(batch)

        table_path = self.write_client.table_path(self.project, STATE_SCHEMA, name)
        write_pending(self.write_client, table_path, all_batches(), f"{table} (staged in {STATE_SCHEMA}.{name})")
        return self.relation(STATE_SCHEMA, name), first.schema

    def _ensure_table(self, dataset: str, table: str, columns: pa.Schema) -> str:
        """Create the target, or add the new columns (additive evolution only)."""
        from google.cloud import bigquery

        self.ensure_dataset(dataset)
        existing = self._existing(dataset, table)
        wanted = self._schema(columns)
        if existing is None:
            self.client.create_table(bigquery.Table(self._table_id(dataset, table), schema=wanted))
        else:
            known = {f.name for f in existing.schema}
            added = [f for f in wanted if f.name not in known]
            if added:
                log.info("adding columns %s to %s.%s", [f.name for f in added], dataset, table)
                existing.schema = [*existing.schema, *added]
                self.client.update_table(existing, ["schema"])
        return self.relation(dataset, table)

    # ------------------------------------------------------------ writes

    def merge(self, schema: str, table: str, batches: Batches, keys: list[str]) -> WriteResult:
        with self.transaction():
            staged = self._stage(batches, table)
            if staged is None:
                return WriteResult()
            stage, columns = staged
            sql.check_staged_keys(self._fetchone, stage, keys, f"{schema}.{table}", q)
            new = self._existing(schema, table) is None
            relation = self._ensure_table(schema, table, columns)
            if new:  # created just now: every staged row is new, no comparison to make
                column_list = ", ".join(q(n) for n in columns.names)
                row = self._fetchone(f"select count(*) from {stage}")
                inserted = int(row[0]) if row else 0
                if inserted:
                    self._run(f"insert into {relation} ({column_list}) select {column_list} from {stage}")
                return WriteResult(inserted=inserted)
            as_text = [f.name for f in columns if isinstance(f.type, pa.JsonType)]
            counts = self._fetchone(sql.merge_counts_query(relation, stage, columns.names, keys, q, as_text))
            inserted, updated, unchanged = (int(c) for c in counts or (0, 0, 0))
            if inserted or updated:
                self._run(sql.merge_statement(relation, stage, columns.names, keys, q, as_text))
        return WriteResult(inserted=inserted, updated=updated, unchanged=unchanged)

    def delete_missing(self, schema: str, table: str, keys: list[str], present: Batches) -> int:
        if self._existing(schema, table) is None:
            return 0
        with self.transaction():
            staged = self._stage(present, f"{table}_keys")
            if staged is None:
                return 0
            where = sql.missing_keys_predicate("t", staged[0], keys, q)
            relation = self.relation(schema, table)
            row = self._fetchone(f"select count(*) from {relation} t where {where}")
            deleted = int(row[0]) if row else 0
            if deleted:
                self._run(f"delete from {relation} t where {where}")
        return deleted

    def append(self, schema: str, table: str, batches: Batches) -> int:
        with self.transaction():
            staged = self._stage(batches, table)
            if staged is None:
                return 0
            stage, columns = staged
            relation = self._ensure_table(schema, table, columns)
            column_list = ", ".join(q(n) for n in columns.names)
            row = self._fetchone(f"select count(*) from {stage}")
            added = int(row[0]) if row else 0
            if added:
                self._run(f"insert into {relation} ({column_list}) select {column_list} from {stage}")
        return added

    def ensure_table(self, schema: str, table: str, columns: pa.Schema) -> None:
        self._ensure_table(schema, table, columns)

    def delete_where(
        self, schema: str, table: str, column: str, values: list[str], scope: dict[str, str] | None = None
    ) -> int:
        if not values or self._existing(schema, table) is None:
            return 0
        relation = self.relation(schema, table)
        where = f"{q(column)} in unnest([{', '.join(bq_string(v) for v in values)}])"
        where += "".join(f" and {q(c)} = {bq_string(v)}" for c, v in (scope or {}).items())
        row = self._fetchone(f"select count(*) from {relation} where {where}")
        deleted = int(row[0]) if row else 0
        if deleted:
            with self.transaction():
                self._run(f"delete from {relation} where {where}")
        return deleted

    def update_where(
        self, schema: str, table: str, column: str, old: str, new: str, scope: dict[str, str] | None = None
    ) -> int:
        if self._existing(schema, table) is None:
            return 0
        relation = self.relation(schema, table)
        where = f"{q(column)} = {bq_string(old)}" + "".join(
            f" and {q(c)} = {bq_string(v)}" for c, v in (scope or {}).items()
        )
        row = self._fetchone(f"select count(*) from {relation} where {where}")
        changed = int(row[0]) if row else 0
        if changed:
            with self.transaction():
                self._run(f"update {relation} set {q(column)} = {bq_string(new)} where {where}")
        return changed

    def replace(self, schema: str, table: str, batches: Batches) -> int:
        """DELETE all + INSERT in one transaction (TRUNCATE and DDL are not allowed inside one)."""
        with self.transaction():
            staged = self._stage(batches, table)
            if staged is None:
                if self._existing(schema, table) is not None:
                    self._run(f"delete from {self.relation(schema, table)} where true")
                return 0
            stage, columns = staged
            relation = self._ensure_table(schema, table, columns)
            column_list = ", ".join(q(n) for n in columns.names)
            row = self._fetchone(f"select count(*) from {stage}")
            self._run(f"delete from {relation} where true")
            self._run(f"insert into {relation} ({column_list}) select {column_list} from {stage}")
        return int(row[0]) if row else 0

    def read_table(self, schema: str, table: str) -> pa.Table | None:
        if self._existing(schema, table) is None:
            return None
        return self.client.list_rows(self._table_id(schema, table)).to_arrow(create_bqstorage_client=False)

    def export_parquet(self, export: ParquetExport) -> tuple[str, int]:
        """The selected columns into a temporary table of ``_roundtrip`` (a CTAS that expires
        after a day), an extract job to ``gs://`` as Parquet/SNAPPY, then the temporary table is
        deleted (its expiry covers a crash)."""
        from google.cloud import bigquery

        if not export.folder.startswith("gs://"):
            raise LoaderError(f"export from BigQuery writes to gs:// only, not {export.folder!r}")
        columns = ", ".join(q(c) for c in export.columns) if export.columns else "*"
        temporary = f"_export_{export.table}_{uuid.uuid4().hex[:8]}"
        temporary_id = self._table_id(STATE_SCHEMA, temporary)
        name = f"{export.table}.parquet" if export.single_file else "part-*.parquet"
        uri = f"{export.folder}/{name}"
        self.ensure_dataset(STATE_SCHEMA)
        try:
            self.query(
                f"create table {self.relation(STATE_SCHEMA, temporary)} "
                "options (expiration_timestamp = timestamp_add(current_timestamp(), interval 1 day)) "
                f"as select {columns} from {self.relation(export.schema, export.table)}"
            )
            rows = int(self.client.get_table(temporary_id).num_rows or 0)
            config = bigquery.ExtractJobConfig(destination_format="PARQUET", compression="SNAPPY")
            try:
                self.client.extract_table(temporary_id, uri, job_config=config).result()
            except Exception as exc:
                raise LoaderError(f"extract of {export.schema}.{export.table} to {uri} failed: {exc}") from exc
        finally:
            self.client.delete_table(temporary_id, not_found_ok=True)
        return uri, rows

    def close(self) -> None:
        self._drop_staged()
        self.client.close()
