"""``python -m benchmarks.cli_start ARGS``: ``python -m reverse_etl ARGS``, noting what the CLI's
start cost before its first database call.

The CLI's start is everything before it reaches a database: the interpreter, the imports, the
settings, the manifest, the choice of syncs. Its end is the first call that talks to a database,
a Postgres connection (the run's history row, the state) or a DuckDB one (the scratch database),
whichever comes first. At that moment the process's CPU time (``time.process_time``: user and
system, every thread, since the exec) and its module count are written as JSON to the file
named by ``BENCH_FIRST_CALL_FILE``. The hooks go in as psycopg and duckdb are imported, so
they change neither what the CLI imports nor when.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import json
import os
import runpy
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

OUT_ENV = "BENCH_FIRST_CALL_FILE"
_noted: dict[str, Any] = {}


def _note(what: str) -> None:
    if _noted:
        return
    _noted.update(cpu_seconds=time.process_time(), what=what, modules=len(sys.modules))
    Path(os.environ[OUT_ENV]).write_text(json.dumps(_noted))


def _patch_psycopg(module: ModuleType) -> None:
    connection = module.Connection
    original = connection.connect.__func__

    def connect(cls: type, *args: Any, **kwargs: Any) -> Any:
        _note("psycopg connect")
        return original(cls, *args, **kwargs)

    connection.connect = classmethod(connect)
    setattr(module, "connect", connection.connect)  # noqa: B010  # psycopg.connect is an alias taken at its import


def _patch_duckdb(module: ModuleType) -> None:
    original = getattr(module, "connect")  # noqa: B009

    def connect(*args: Any, **kwargs: Any) -> Any:
        _note("duckdb connect")
        return original(*args, **kwargs)

    setattr(module, "connect", connect)  # noqa: B010


PATCHES: dict[str, Callable[[ModuleType], None]] = {"psycopg": _patch_psycopg, "duckdb": _patch_duckdb}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of a patched module so the patch follows its import."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if name not in PATCHES:
            return None
        sys.meta_path.remove(self)  # the real finders find it
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        run_module = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            PATCHES[name](module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def main() -> None:
    if OUT_ENV not in os.environ:
        raise SystemExit(f"set {OUT_ENV} to the file that receives the figures")
    sys.meta_path.insert(0, _AfterImport())
    sys.argv = ["reverse_etl", *sys.argv[1:]]
    runpy.run_module("reverse_etl", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
