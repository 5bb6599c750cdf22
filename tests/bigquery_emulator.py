"""The BigQuery emulator (`bqemulator`, from PyPI) as a throwaway server for tests.

It speaks BigQuery's REST API (and the Storage Read/Write gRPC APIs) on loopback, runs queries on
DuckDB, and keeps nothing once stopped. It runs as a subprocess on free ports with a HOME of its
own, where DuckDB's spatial extension (which it loads at start) is installed from the
`duckdb-extension-spatial` package: DuckDB's own INSTALL would need the internet. The process is
stopped by its pid.

Clients: ``emulator.client()`` (google-cloud-bigquery), ``emulator.dbt_env(dataset)`` for the
`bigquery` target of profiles/profiles.yml (method oauth-secrets with a dummy token, the
emulator's URL as api_endpoint).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_PROJECT = "roundtrip-emulator"
START_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class BigQueryEmulator:
    rest_url: str
    grpc_endpoint: str
    project: str
    log_path: Path

    def dbt_env(self, dataset: str) -> dict[str, str]:
        """Environment for dbt's `bigquery` target (profiles/profiles.yml)."""
        return {
            "ROUNDTRIP_BQ_METHOD": "oauth-secrets",
            "ROUNDTRIP_BQ_TOKEN": "emulator-token",
            "ROUNDTRIP_BQ_API_ENDPOINT": self.rest_url,
            "ROUNDTRIP_BQ_PROJECT": self.project,
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

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _install_spatial(home: Path) -> None:
    """DuckDB looks for extensions under ~/.duckdb/extensions by default."""
    from roundtrip.duckdb_extensions import install_extensions

    install_extensions(("spatial",), home / ".duckdb" / "extensions")


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bqemulator exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/bigquery/v2/projects", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers: up
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"bqemulator did not answer on {url} within {START_TIMEOUT_SECONDS}s")


@contextlib.contextmanager
def bigquery_emulator(base_dir: Path, project: str = DEFAULT_PROJECT) -> Iterator[BigQueryEmulator]:
    """Start an ephemeral emulator, yield its endpoints, stop it (by pid) whatever happens."""
    home = base_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    _install_spatial(home)
    rest_port, grpc_port = _free_port(), _free_port()
    log_path = base_dir / "bqemulator.log"
    env = {**os.environ, "HOME": str(home)}
    env.pop("BIGQUERY_EMULATOR_HOST", None)
    command = [
        sys.executable,
        "-m",
        "bqemulator",
        "start",
        "--ephemeral",
        "--rest-port",
        str(rest_port),
        "--grpc-port",
        str(grpc_port),
        "--project",
        project,
        "--log-level",
        "warning",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=base_dir)
    emulator = BigQueryEmulator(f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}", project, log_path)
    try:
        _wait_until_up(emulator.rest_url, process, log_path)
        yield emulator
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
