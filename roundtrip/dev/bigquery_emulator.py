"""The BigQuery emulator (bqemulator, from PyPI) as a throwaway local server.

Used by the test suite (``tests/emulators.py``) and the benchmarks. It speaks BigQuery's REST
API and the Storage Read/Write gRPC APIs, with DuckDB inside. It loads DuckDB's spatial
extension from ``$HOME``, which cannot be downloaded here: it is installed from the
``duckdb-extension-spatial`` wheel into a private HOME first. The server is tied to the caller
(``PR_SET_PDEATHSIG``) and stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roundtrip.dev.services import free_port, spawn, stop_process, wait_for_port

DEFAULT_PROJECT = "roundtrip-test"

# What `dbt build` leaves out on the emulator, each with why: bqemulator 1.4.0 cannot run it. The
# demo lists these in its summary, `roundtrip dbt build --target bigquery` on the emulator says
# them before it starts; real BigQuery builds everything.
DBT_VARS_ON_EMULATOR = "{enforce_contracts: false}"
DBT_GAPS: tuple[tuple[str, str], ...] = (
    (
        "contracts",
        "`create table (columns) as select` is a syntax error there: the contracted models are built "
        "without their contract (enforce_contracts: false); their columns are still tested",
    ),
    ("path:models/serving", "materialized views: the serving models are not built"),
    (
        "item_performance_clicks_without_orders_and_rates",
        "unit test: NUMERIC keeps 3 decimal places there, the expected rates have 4",
    ),
    ("recommendations_skip_bought_items_and_keep_ten", "unit test: scores with 6 decimal places"),
    (
        "email_triggers_types_consent_and_payload",
        "unit test: dbt-bigquery writes its rows as triple-quoted literals, whose escapes the emulator keeps",
    ),
)


def dbt_args_on_emulator() -> list[str]:
    """``dbt build`` arguments that leave out what ``DBT_GAPS`` lists."""
    excluded = [selector for selector, _ in DBT_GAPS if selector != "contracts"]
    return ["--vars", DBT_VARS_ON_EMULATOR, "--exclude", *excluded]


@dataclass(frozen=True)
class BigQueryEmulator:
    rest_url: str
    grpc_endpoint: str
    project: str
    gcs_root: Path  # where the emulator writes gs://bucket/... (extract jobs, EXPORT DATA)

    def env(self) -> dict[str, str]:
        """What loaders.warehouse.bigquery.BigQuerySettings.from_env reads."""
        return {
            "ROUNDTRIP_BQ_PROJECT": self.project,
            "ROUNDTRIP_BQ_API_ENDPOINT": self.rest_url,
            "ROUNDTRIP_BQ_STORAGE_ENDPOINT": self.grpc_endpoint,
        }

    def dbt_env(self, dataset: str) -> dict[str, str]:
        """dbt's ``bigquery`` target (profiles/profiles.yml): oauth-secrets with a dummy token."""
        return {
            **self.env(),
            "ROUNDTRIP_BQ_METHOD": "oauth-secrets",
            "ROUNDTRIP_BQ_TOKEN": "emulator-token",
            "ROUNDTRIP_BQ_DATASET": dataset,
            "ROUNDTRIP_BQ_LOCATION": "US",
        }

    def client(self) -> Any:
        """A google-cloud-bigquery client on the emulator."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=self.rest_url),
        )


@contextlib.contextmanager
def bigquery_emulator(project: str = DEFAULT_PROJECT, timeout: float = 60.0) -> Iterator[BigQueryEmulator]:
    """Start bqemulator on two free loopback ports; stopped when the block ends."""
    import duckdb
    from duckdb_extensions import import_extension

    with tempfile.TemporaryDirectory(prefix="bqemu-") as folder:
        home, gcs_root = Path(folder) / "home", Path(folder) / "gcs"
        home.mkdir()
        gcs_root.mkdir()
        con = duckdb.connect(config={"extension_directory": str(home / ".duckdb" / "extensions")})
        import_extension("spatial", con=con)
        con.close()
        rest, grpc = free_port(), free_port()
        env = {**os.environ, "HOME": str(home), "BQEMU_GCS_LOCAL_ROOT": str(gcs_root)}
        cmd = [
            str(Path(sys.executable).with_name("bqemulator")),
            "start",
            "--rest-port",
            str(rest),
            "--grpc-port",
            str(grpc),
            "--project",
            project,
            "--log-level",
            "warning",
        ]
        log = Path(folder) / "bqemulator.log"
        proc = spawn(cmd, log, env=env)
        try:
            for port in (rest, grpc):
                wait_for_port(proc, "bqemulator", port, log, timeout)
            yield BigQueryEmulator(f"http://127.0.0.1:{rest}", f"127.0.0.1:{grpc}", project, gcs_root)
        finally:
            stop_process(proc, signal.SIGTERM)
