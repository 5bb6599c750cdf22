"""DuckDB extensions from PyPI packages, never from the internet.

``INSTALL postgres`` downloads from DuckDB's extension site, which this machine cannot reach.
The ``duckdb-extension-<name>`` wheels carry the same binaries; ``duckdb_extensions.import_extension``
installs them into the connection's ``extension_directory``. We point that at a project-local
folder, which ``profiles/profiles.yml`` gives to dbt-duckdb as well (``config_options``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from roundtrip.errors import ConfigError
from roundtrip.paths import duckdb_extension_dir

log = logging.getLogger(__name__)

PROJECT_EXTENSIONS = ("postgres", "sqlite")


def install_extensions(names: tuple[str, ...] = PROJECT_EXTENSIONS, directory: Path | None = None) -> Path:
    """Install extensions from their PyPI packages into ``directory``; idempotent."""
    import duckdb

    target = directory or duckdb_extension_dir()
    target.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"extension_directory": str(target), "autoinstall_known_extensions": False})
    try:
        installed: set[str] = set()
        for name, aliases in con.execute(
            "select extension_name, aliases from duckdb_extensions() where installed"
        ).fetchall():
            installed.update([name, *aliases])  # 'postgres' is an alias of 'postgres_scanner'
        for name in names:
            if name in installed:
                continue
            try:
                from duckdb_extensions import import_extension

                import_extension(name, con=con)
            except ModuleNotFoundError as exc:
                raise ConfigError(
                    f"DuckDB extension {name!r} is not available offline: install the "
                    f"duckdb-extension-{name} package matching duckdb {duckdb.__version__} (make setup)"
                ) from exc
            log.info("installed DuckDB extension %s into %s", name, target)
    finally:
        con.close()
    return target


def connect(path: str | Path = ":memory:", read_only: bool = False, extensions: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """A DuckDB connection that finds the project's extensions (and loads ``extensions``)."""
    import duckdb

    directory = install_extensions(extensions) if extensions else duckdb_extension_dir()
    con = duckdb.connect(
        str(path),
        read_only=read_only,
        config={"extension_directory": str(directory), "autoinstall_known_extensions": False},
    )
    con.execute("set TimeZone = 'UTC'")  # not in config: ICU must be loaded first
    for name in extensions:
        con.execute(f"load {name}")
    return con
