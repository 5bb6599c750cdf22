"""DuckDB extensions from PyPI packages, never from the internet.

``INSTALL postgres`` downloads from DuckDB's extension site, which this machine cannot reach.
The ``duckdb-extension-<name>`` wheels carry the same binaries; ``duckdb_extensions.import_extension``
installs them into the connection's ``extension_directory``. We point that at a project-local
folder, which ``profiles/profiles.yml`` gives to dbt-duckdb as well (``config_options``).

DuckDB checks an extension's signature on every ``LOAD``: 0.6-0.8 s for the 42 MB postgres
extension, paid by every sync run and loader. The check is done once instead: when an
extension is installed, it is loaded with the check (so DuckDB verified it), and the file's
size, mtime and inode are recorded in ``verified.json`` next to it. A connection whose every
extension file is unchanged since then skips DuckDB's check (``allow_unsigned_extensions``);
any change to a file, or no record, and DuckDB checks as usual.
"""

from __future__ import annotations

import json
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
    if not _verified(target):
        _verify(target)
    return target


VERIFIED = "verified.json"


def _fingerprints(directory: Path) -> dict[str, list[int]]:
    """The extension files of this DuckDB version (``v1.5.5/<platform>/``; other versions' folders
    are never loaded), by size, mtime and inode."""
    import duckdb

    found = {}
    for path in sorted((directory / f"v{duckdb.__version__}").rglob("*.duckdb_extension")):
        st = path.stat()
        found[str(path.relative_to(directory))] = [st.st_size, st.st_mtime_ns, st.st_ino]
    return found


def _verify(directory: Path) -> None:
    """Load every installed extension with DuckDB's signature check, then record the files."""
    import duckdb

    files = _fingerprints(directory)
    con = duckdb.connect(config={"extension_directory": str(directory), "autoinstall_known_extensions": False})
    try:
        for relative in files:
            con.execute(f"load '{directory / relative}'")  # raises if the signature is wrong
    except duckdb.Error as exc:  # nothing recorded: DuckDB keeps checking on every load
        log.warning("DuckDB extensions in %s not verified (%s); DuckDB checks them on each load", directory, exc)
        return
    finally:
        con.close()
    (directory / VERIFIED).write_text(json.dumps(files, indent=1))


def _verified(directory: Path) -> bool:
    """Every extension file in ``directory`` is as it was when its signature was checked."""
    try:
        recorded = json.loads((directory / VERIFIED).read_text())
    except (OSError, ValueError):
        return False
    current = _fingerprints(directory)
    return bool(current) and recorded == current


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
    config: dict[str, str | bool | int | float | list[str]] = {
        "extension_directory": str(directory),
        "autoinstall_known_extensions": False,
    }
    if _verified(directory):
        config["allow_unsigned_extensions"] = True  # checked once, at install (see above)
    deadline = time.monotonic() + wait
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=config)
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
