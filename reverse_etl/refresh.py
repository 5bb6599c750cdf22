"""After a replace: refresh the serving models (the materialized views) on Postgres, dbt owning them.

The project's materialization (macros/materializations/serving_materialized_view.sql, its comment from macros/serving/) creates
each materialized view the first time and runs ``REFRESH MATERIALIZED VIEW CONCURRENTLY``
afterwards, so readers are never blocked. It keeps in the view's comment the hash of what the
view is built from (``serving_definition``: the model file, its unique key, the relations it
reads), which the manifest reverse_etl reads gives too (``RefreshModel.definition``).

A view whose comment holds the manifest's definition is refreshed here, directly: one
``REFRESH MATERIALIZED VIEW`` (``CONCURRENTLY`` when it has a unique index, as dbt would), with
no dbt process to start, parse and connect (5-10 s on a quiet machine, minutes under load). Every
other due model (a first build, a changed definition, a definition the manifest cannot pin down,
a relation that is not such a view, a refresh that fails here) goes to one ``dbt run --select
<models>`` against the same database (its ``postgres`` target gets the connection settings of
ROUNDTRIP_POSTGRES_URL), with a target path of its own so that ``target/manifest.json`` (the
DuckDB one reverse_etl reads) is left alone. dbt alone ever creates or changes a definition.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from reverse_etl.errors import SyncError
from reverse_etl.runs import connect
from reverse_etl.spec import RefreshModel, SyncSpec
from reverse_etl.state.columns import clear_owed_refresh
from roundtrip.core.errors import RoundtripError

log = logging.getLogger(__name__)

MARKER = "serving_materialized_view "  # how the materialization's comments start
DEFINITION = " definition "  # then the compiled SQL's hash, this, and the definition's hash


def ready_models(conn: object, spec: SyncSpec, names: list[str]) -> list[str]:
    """The models among ``names`` whose every exported table exists in the database; one that
    still waits for another sync's first load is refreshed by that sync instead."""
    ready = []
    for model in spec.refresh:
        if model.name not in names:
            continue
        missing = [t for t in model.reads if not conn.execute("select to_regclass(%s)", (_regclass(t),)).fetchone()[0]]  # type: ignore[attr-defined]
        if missing:
            log.info("sync %s: %s waits for %s before its first build", spec.name, model.name, ", ".join(missing))
        else:
            ready.append(model.name)
    return ready


def _regclass(target: str) -> str:
    """A sync's ``schema.table`` as ``to_regclass`` reads it (quoted: names are taken as written)."""
    from reverse_etl.spec import parse_relation
    from roundtrip.core.sql import pg_ident

    return pg_ident(*parse_relation(target))


def refresh_serving_models(spec: SyncSpec, names: list[str], postgres_url: str, project_dir: Path) -> list[str]:
    """Refresh one sync's due serving models; see ``refresh_together``."""
    return refresh_together([(spec, names)], postgres_url, project_dir)[spec.name]


def refresh_together(
    due: list[tuple[SyncSpec, list[str]]], postgres_url: str, project_dir: Path
) -> dict[str, list[str]]:
    """Refresh the serving models that every sync in ``due`` left due, each once: in place where
    the view's definition is the manifest's (``refresh_in_place``), the others in one
    ``dbt run --select <models>`` on the postgres target; then clear the syncs' debts. Returns
    each sync's refreshed models."""
    syncs = ", ".join(spec.name for spec, _ in due)
    with connect(postgres_url, f"reverse_etl:{due[0][0].name}") as conn:
        ready = {spec.name: ready_models(conn, spec, names) for spec, names in due}
        models = sorted({m for names in ready.values() for m in names})
        if models:
            declared = {m.name: m for spec, _ in due for m in spec.refresh}
            left = [name for name in models if not refresh_in_place(conn, declared[name])]
            if left:
                try:
                    run_dbt_refresh(left, postgres_url, project_dir)
                except RoundtripError as exc:
                    raise SyncError(
                        f"sync {syncs}: the table was replaced but refreshing {', '.join(models)} failed "
                        f"(dbt, for {', '.join(left)}; the next run retries it): {exc}"
                    ) from exc
            log.info(
                "sync %s: refreshed %s (in place: %s; by dbt: %s)",
                syncs,
                ", ".join(models),
                ", ".join(m for m in models if m not in left) or "none",
                ", ".join(left) or "none",
            )
        for spec, _ in due:
            clear_owed_refresh(conn, spec.name)
    return ready


def refresh_in_place(conn: object, model: RefreshModel) -> bool:
    """Refresh ``model``'s materialized view directly when dbt built it from the definition the
    manifest has; False (nothing done) when dbt must handle it."""
    if not model.definition or not model.relation:
        return False
    from psycopg import Error, sql

    from reverse_etl.spec import parse_relation

    schema, identifier = parse_relation(model.relation)
    found = conn.execute(  # type: ignore[attr-defined]
        """select coalesce(obj_description(c.oid, 'pg_class'), ''), v.ispopulated,
                  exists (select from pg_index i where i.indrelid = c.oid and i.indisunique
                          and i.indisvalid and i.indpred is null and i.indexprs is null)
           from pg_class c
           join pg_namespace n on n.oid = c.relnamespace
           join pg_matviews v on v.schemaname = n.nspname and v.matviewname = c.relname
           where n.nspname = %s and c.relname = %s""",
        (schema, identifier),
    ).fetchone()
    if found is None:
        log.info("%s: no materialized view %s yet: dbt builds it", model.name, model.relation)
        return False
    comment, populated, unique = found
    if not (comment.startswith(MARKER) and comment.endswith(DEFINITION + model.definition)):
        log.info("%s: its definition changed since dbt built %s: dbt rebuilds it", model.name, model.relation)
        return False
    # CONCURRENTLY (readers never wait) needs a unique index on plain columns and a populated view
    statement = sql.SQL("refresh materialized view {concurrently}{view}").format(
        concurrently=sql.SQL("concurrently " if populated and unique else ""),
        view=sql.Identifier(schema, identifier),
    )
    try:
        conn.execute(statement)  # type: ignore[attr-defined]
    except Error as exc:
        log.warning("%s: refreshing %s in place failed (%s): dbt refreshes it", model.name, model.relation, exc)
        return False
    return True


def run_dbt_refresh(models: list[str], postgres_url: str, project_dir: Path) -> None:
    """``dbt run --select <models>`` on the postgres target at ``postgres_url`` (the way every
    refresh went before the in-place one; the benchmark's baseline)."""
    from roundtrip.core.dbt import run_dbt
    from roundtrip.core.settings import postgres_dbt_env

    with tempfile.TemporaryDirectory(prefix="reverse_etl_dbt_") as target_path:
        run_dbt(
            ["run", "--select", *models],
            env=postgres_dbt_env(postgres_url),
            target="postgres",
            target_path=Path(target_path),
            project_dir=project_dir,
            quiet=True,
        )
