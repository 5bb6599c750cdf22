"""After a replace: rebuild the serving models (the materialized views) with dbt on Postgres.

The project's materialization creates each materialized view the first time and runs
``REFRESH MATERIALIZED VIEW CONCURRENTLY`` afterwards, so readers are never blocked. dbt runs
against the same database reverse_etl wrote to (its ``postgres`` target gets the connection
settings of ROUNDTRIP_POSTGRES_URL), with a target path of its own so that ``target/manifest.json``
(the DuckDB one reverse_etl reads) is left alone.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from reverse_etl.errors import SyncError
from reverse_etl.runs import connect
from reverse_etl.spec import SyncSpec
from reverse_etl.state import clear_pending_refresh
from roundtrip.core.errors import RoundtripError

log = logging.getLogger(__name__)


def ready_models(conn: object, spec: SyncSpec, names: list[str]) -> list[str]:
    """The models among ``names`` whose every exported table exists in the database; one that
    still waits for another sync's first load is refreshed by that sync instead."""
    ready = []
    for model in spec.refresh:
        if model.name not in names:
            continue
        missing = [t for t in model.reads if not conn.execute("select to_regclass(%s)", (t,)).fetchone()[0]]  # type: ignore[attr-defined]
        if missing:
            log.info("sync %s: %s waits for %s before its first build", spec.name, model.name, ", ".join(missing))
        else:
            ready.append(model.name)
    return ready


def refresh_serving_models(spec: SyncSpec, names: list[str], postgres_url: str, project_dir: Path) -> list[str]:
    """Refresh one sync's due serving models; see ``refresh_together``."""
    return refresh_together([(spec, names)], postgres_url, project_dir)[spec.name]


def refresh_together(
    due: list[tuple[SyncSpec, list[str]]], postgres_url: str, project_dir: Path
) -> dict[str, list[str]]:
    """Run one ``dbt run --select <models>`` on the postgres target for every sync in ``due``
    (each with the models it left due) and clear their debts after. One dbt run for several
    replace syncs saves dbt's start and parse (~5 s) per sync. Returns each sync's refreshed models."""
    from roundtrip.core.dbt import run_dbt
    from roundtrip.core.settings import postgres_dbt_env

    syncs = ", ".join(spec.name for spec, _ in due)
    with connect(postgres_url, due[0][0].name, autocommit=True) as conn:
        ready = {spec.name: ready_models(conn, spec, names) for spec, names in due}
        models = sorted({m for names in ready.values() for m in names})
        if models:
            env = postgres_dbt_env(postgres_url)
            with tempfile.TemporaryDirectory(prefix="reverse_etl_dbt_") as target_path:
                try:
                    run_dbt(
                        ["run", "--select", *models],
                        env=env,
                        target="postgres",
                        target_path=Path(target_path),
                        project_dir=project_dir,
                        quiet=True,
                    )
                except RoundtripError as exc:
                    raise SyncError(
                        f"sync {syncs}: the table was replaced but refreshing {', '.join(models)} failed "
                        f"(the next run retries it): {exc}"
                    ) from exc
            log.info("sync %s: refreshed %s", syncs, ", ".join(models))
        for spec, _ in due:
            clear_pending_refresh(conn, spec.name)
    return ready
