"""DuckDB extensions from PyPI packages, never from the internet.

``INSTALL postgres`` downloads from DuckDB's extension site, which this machine cannot reach.
The ``duckdb-extension-<name>`` wheels carry the same binaries; ``duckdb_extensions.import_extension``
installs them into the connection's ``extension_directory``. We point that at a project-local
folder, which ``profiles/profiles.yml`` gives to dbt-duckdb as well (``config_options``).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from roundtrip.core.errors import ConfigError, WarehouseBusyError

log = logging.getLogger(__name__)

PROJECT_EXTENSIONS = ("postgres", "sqlite")


def install_extensions(names: tuple[str, ...] = PROJECT_EXTENSIONS, directory: Path | None = None) -> Path:
    """Install extensions from their PyPI packages into ``directory``; idempotent."""
    import duckdb

    target = directory or _extension_dir()
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


def _extension_dir() -> Path:
    from roundtrip.core.settings import load_settings

    return load_settings().duckdb_extension_dir


_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>\S+) \(PID (?P<pid>\d+)\)")


def lock_holder(message: str) -> str | None:
    """``PID 1234 (dbt build)`` from DuckDB's lock error, with the holder's command line."""
    match = _LOCK_HOLDER.search(message)
    if not match:
        return None
    pid = match.group("pid")
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        words = [Path(a.decode()).name if i == 0 else a.decode() for i, a in enumerate(argv) if a]
        # `python -m loaders files ...` or `.../bin/dbt build ...`: the program and its command,
        # on one line (a `python -c` script has line breaks), at most 80 characters
        shown = " ".join(" ".join(w.split()) for w in words[:4] if not w.startswith("/"))
        shown = shown if len(shown) <= 80 else shown[:79] + "…"
    except OSError:
        shown = Path(match.group("program")).name
    return f"PID {pid} ({shown})" if shown else f"PID {pid}"


def is_lock_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "IOException" and "lock" in str(exc).lower()


def busy_error(path: str | Path, exc: BaseException) -> WarehouseBusyError:
    holder = lock_holder(str(exc)) or "another process"
    return WarehouseBusyError(
        f"warehouse {path} is in use by {holder}",
        hint="retry when it ends, or pass --wait SECONDS to wait for it",
    )


def connect(  # type: ignore[no-untyped-def]
    path: str | Path = ":memory:", read_only: bool = False, extensions: tuple[str, ...] = (), wait: float = 0
):
    """A DuckDB connection that finds the project's extensions (and loads ``extensions``).

    A file locked by another process (a ``dbt build``, another loader) is waited for up to
    ``wait`` seconds, then a WarehouseBusyError names the process that holds it."""
    import duckdb

    directory = install_extensions(extensions) if extensions else _extension_dir()
    deadline = time.monotonic() + wait
    while True:
        try:
            con = duckdb.connect(
                str(path),
                read_only=read_only,
                config={"extension_directory": str(directory), "autoinstall_known_extensions": False},
            )
            break
        except duckdb.IOException as exc:
            if not is_lock_error(exc):
                raise
            if time.monotonic() >= deadline:
                raise busy_error(path, exc) from exc
            log.info("warehouse %s is in use by %s; waiting", path, lock_holder(str(exc)) or "another process")
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
    con.execute("set TimeZone = 'UTC'")  # not in config: ICU must be loaded first
    for name in extensions:
        con.execute(f"load {name}")
    return con
