"""Run dbt as a subprocess of the project's own environment (its progress shows as usual),
and find or make the manifest of a target without paying for a parse when nothing changed.

Every run gets the settings that dbt's profile cannot derive itself (the Postgres warehouse's
``ROUNDTRIP_PG_*`` from ``ROUNDTRIP_WAREHOUSE_URL``) and no colour codes when its output is
not a terminal (piped logs of ``make demo``, CI).

The manifest (``ensure_manifest``): a dbt start costs seconds before it reads a file, so a
command that only needs the manifest (the sync list, a sync run) first asks whether the one on
disk still describes the project. Each time dbt writes a manifest through this module, the
fingerprint of what went into it is kept beside it (``roundtrip_manifest.json``): a hash of
every file dbt reads (the project's paths, ``dbt_project.yml``, packages, ``profiles.yml``), of
the environment variables they read through ``env_var()`` (secrets left out: they never change
a manifest), of the target, the ``--vars`` and the dbt version. Same fingerprint, same manifest:
it is reused. A manifest that dbt wrote by itself (plain ``dbt build --target postgres``, as CI
runs it) carries no fingerprint: it is reused when it was built for the target's adapter and is
newer than every file of the project, as ``make`` would judge it. Otherwise ``dbt parse`` runs,
and when the project does not parse its own message is shown as dbt prints it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from roundtrip.core.errors import RoundtripError
from roundtrip.core.paths import PROFILES_DIR, PROJECT_ROOT

log = logging.getLogger(__name__)


def dbt_executable() -> str:
    beside_python = Path(sys.executable).parent / "dbt"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("dbt")
    if not found:
        raise RoundtripError("dbt is not installed in this environment", hint="run `make setup`")
    return found


def colours_wanted() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def dbt_command(
    args: Sequence[str],
    target: str | None = None,
    target_path: Path | None = None,
    quiet: bool = False,
    project_dir: Path = PROJECT_ROOT,
) -> list[str]:
    """The argv of ``dbt <args>`` for this project and its ``profiles/``.

    ``target_path`` moves dbt's output (manifest, compiled SQL) and logs elsewhere, so that
    tests and parallel runs do not share ``target/``. ``project_dir`` runs another dbt project
    (tests use small fixture projects) with the same ``profiles/``.
    """
    command = [
        dbt_executable(),
        *([] if colours_wanted() else ["--no-use-colors"]),
        *(["--quiet"] if quiet else []),
        *args,
        "--project-dir",
        str(project_dir),
        "--profiles-dir",
        str(project_dir / "profiles" if (project_dir / "profiles" / "profiles.yml").exists() else PROFILES_DIR),
    ]
    if target:
        command += ["--target", target]
    if target_path:
        command += ["--target-path", str(target_path), "--log-path", str(target_path / "logs")]
    return command


def dbt_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment, the derived dbt settings, then ``extra``."""
    from roundtrip.core.settings import load_settings

    return {**os.environ, **load_settings().dbt_env(), **(extra or {})}


def run_dbt(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    target: str | None = None,
    target_path: Path | None = None,
    quiet: bool = False,
    project_dir: Path = PROJECT_ROOT,
) -> None:
    """Run ``dbt <args>`` (see ``dbt_command``) with the given extra environment. The manifest
    it writes is fingerprinted (see the module docstring), so that the syncs reuse it."""
    command = dbt_command(args, target, target_path, quiet, project_dir)
    log.info("running %s", " ".join(["dbt", *args] + (["--target", target] if target else [])))
    environment = dbt_environment(env)
    with fingerprint_after(args, environment, project_dir, target, target_path) as done:
        completed = subprocess.run(command, cwd=project_dir, env=environment)
        done(completed.returncode)
    if completed.returncode != 0:
        raise RoundtripError(
            f"`dbt {' '.join(args)}` failed with exit code {completed.returncode} (see its output above)"
        )


# ---------------------------------------------------------------- the manifest of a target

FINGERPRINT_FILE = "roundtrip_manifest.json"
# dbt commands that write target/manifest.json (all but clean, debug, deps, init)
WRITES_MANIFEST = {
    "build", "clone", "compile", "docs", "list", "ls", "parse", "retry", "run", "run-operation", "seed",
    "show", "snapshot", "source", "test",
}  # fmt: skip
_ENV_VAR_CALL = re.compile(r"""env_var\(\s*['"]([A-Za-z_][A-Za-z0-9_]*)['"]""")
_SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|^DBT_ENV_SECRET_")
_DEFAULT_PATHS = {
    "model-paths": ["models"],
    "macro-paths": ["macros"],
    "seed-paths": ["seeds"],
    "snapshot-paths": ["snapshots"],
    "analysis-paths": ["analyses"],
    "test-paths": ["tests"],
}


class DbtParseError(RoundtripError):
    """dbt could not parse the project; its own message was printed just before."""


@dataclass(frozen=True)
class ManifestChoice:
    """The manifest a command reads, and how it was chosen."""

    path: Path
    target: str
    parsed: bool  # True: ``dbt parse`` ran now; False: a manifest on disk was reused
    reason: str
    seconds: float

    def describe(self) -> str:
        where = _shown(self.path)
        if self.parsed:
            return f"manifest {where} ({self.target}): parsed in {self.seconds:.1f} s, {self.reason}"
        return f"manifest {where} ({self.target}): reused, {self.reason} ({self.seconds:.2f} s)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "target": self.target,
            "parsed": self.parsed,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
        }


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def default_target_path(project_dir: Path = PROJECT_ROOT) -> Path:
    """Where dbt writes when given no ``--target-path``: ``DBT_TARGET_PATH``, else the
    project's ``target/``."""
    from roundtrip.core.settings import load_settings

    if "DBT_TARGET_PATH" in os.environ or project_dir.resolve() == PROJECT_ROOT:
        return load_settings().dbt_target_path
    return project_dir.resolve() / "target"


def manifest_dirs(target: str, target_path: Path | None = None, project_dir: Path = PROJECT_ROOT) -> list[Path]:
    """Where a manifest of ``target`` may be, in order: the project's folder for that target
    (``target/`` for duckdb, ``target/<target>/`` for the others: what ``roundtrip dbt`` and the
    Make targets write) and dbt's own default ``target/`` (what plain ``dbt build --target
    postgres`` writes)."""
    base = target_path or default_target_path(project_dir)
    own = base if target == "duckdb" else base / target
    return [own] if own == base else [own, base]


def manifest_adapter(path: Path) -> str | None:
    """The adapter a manifest was built for (``metadata.adapter_type``), read from its head
    (dbt writes ``metadata`` first) without loading megabytes of JSON."""
    try:
        with path.open("rb") as handle:
            head = handle.read(65536).decode("utf-8", "replace")
    except OSError:
        return None
    found = re.search(r'"adapter_type"\s*:\s*"([^"]+)"', head)
    if found:
        return found[1]
    try:
        return json.loads(path.read_text()).get("metadata", {}).get("adapter_type")
    except (OSError, ValueError):
        return None


def find_manifests(target: str, target_path: Path | None = None, project_dir: Path = PROJECT_ROOT) -> list[Path]:
    """The manifests built for ``target``'s adapter among ``manifest_dirs``, newest first. One
    built for another adapter is never returned (its relations are another warehouse's).
    ``ensure_manifest`` says which of them still describes the project."""
    adapter = target_adapter(target, project_dir)
    found = [
        folder / "manifest.json"
        for folder in manifest_dirs(target, target_path, project_dir)
        if manifest_adapter(folder / "manifest.json") == adapter
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def target_adapter(target: str, project_dir: Path = PROJECT_ROOT) -> str:
    """The adapter type of a profile target (``type:`` in profiles.yml), else the name itself
    (this project's targets are named after their adapters)."""
    import yaml

    try:
        profiles = yaml.safe_load(_profiles_file(project_dir).read_text()) or {}
        for profile in profiles.values():
            output = ((profile or {}).get("outputs") or {}).get(target) or {}
            kind = output.get("type")
            if isinstance(kind, str) and "{{" not in kind:
                return kind
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return target


def _profiles_file(project_dir: Path) -> Path:
    own = project_dir / "profiles" / "profiles.yml"
    return own if own.exists() else PROFILES_DIR / "profiles.yml"


def project_files(project_dir: Path = PROJECT_ROOT) -> list[Path]:
    """Every file dbt reads to parse the project: its configuration, profiles, packages and
    everything under the paths ``dbt_project.yml`` declares (hidden files aside)."""
    import yaml

    project_file = project_dir / "dbt_project.yml"
    try:
        config = yaml.safe_load(project_file.read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}  # dbt itself will say what is wrong with it
    folders = {"dbt_packages"}
    for key, default in _DEFAULT_PATHS.items():
        value = config.get(key, default) if isinstance(config, dict) else default
        folders.update(v for v in (value if isinstance(value, list) else default) if isinstance(v, str))
    files = [project_file, _profiles_file(project_dir)]
    files += [project_dir / name for name in ("packages.yml", "dependencies.yml", "package-lock.yml", "selectors.yml")]
    for folder in sorted(folders):
        root = project_dir / folder
        if root.is_dir():
            files += [
                p
                for p in root.rglob("*")
                if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in p.parts[-3:])
            ]
    return sorted({f for f in files if f.is_file()})


def fingerprint(
    target: str,
    environment: Mapping[str, str],
    project_dir: Path = PROJECT_ROOT,
    dbt_vars: str | None = None,
) -> dict[str, Any]:
    """What a manifest of ``target`` is made of: one hash per project file, per environment
    variable the project reads (secrets left out), and the rest (target, vars, dbt version)."""
    from importlib.metadata import PackageNotFoundError, version

    files: dict[str, str] = {}
    names: set[str] = set()
    profiles = _profiles_file(project_dir)
    for path in project_files(project_dir):
        data = path.read_bytes()
        files[_relative(path, project_dir)] = hashlib.sha256(data).hexdigest()
        text = data.decode("utf-8", "replace")
        names.update(_ENV_VAR_CALL.findall(_target_output(text, target) if path == profiles else text))
    names.update(name for name in environment if name.startswith("DBT_"))
    env = {
        name: hashlib.sha256(environment.get(name, "\0unset").encode()).hexdigest()
        for name in sorted(names)
        if not _SECRET_NAME.search(name)
    }
    try:
        dbt_version = version("dbt-core")
    except PackageNotFoundError:
        dbt_version = "?"
    other = {"target": target, "vars": dbt_vars or "", "dbt": dbt_version, "project": str(project_dir.resolve())}
    return {"files": files, "env": env, "other": other}


def _target_output(profiles_text: str, target: str) -> str:
    """The part of profiles.yml that dbt renders for ``target``: its output's settings (the
    other targets' ``env_var()`` calls do not change this target's manifest). All of it when
    the file cannot be read that way."""
    import yaml

    try:
        profiles = yaml.safe_load(profiles_text) or {}
        outputs = [(p or {}).get("outputs", {}).get(target) for p in profiles.values() if isinstance(p, dict)]
        chosen = [o for o in outputs if isinstance(o, dict)]
    except (yaml.YAMLError, AttributeError):
        return profiles_text
    return json.dumps(chosen) if chosen else profiles_text


def _relative(path: Path, project_dir: Path) -> str:
    try:
        return str(path.relative_to(project_dir))
    except ValueError:
        return str(path)


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed between two fingerprints, in words (``models/x.yml changed``)."""
    found: list[str] = []
    old_files, new_files = old.get("files", {}), new.get("files", {})
    for name in sorted(set(old_files) | set(new_files)):
        if name not in old_files:
            found.append(f"{name} added")
        elif name not in new_files:
            found.append(f"{name} removed")
        elif old_files[name] != new_files[name]:
            found.append(f"{name} changed")
    old_env, new_env = old.get("env", {}), new.get("env", {})
    found += [
        f"${name} changed" for name in sorted(set(old_env) | set(new_env)) if old_env.get(name) != new_env.get(name)
    ]
    old_other, new_other = old.get("other", {}), new.get("other", {})
    found += [f"{key} changed" for key in sorted(new_other) if old_other.get(key) != new_other.get(key)]
    return found


def _summary(changes: list[str]) -> str:
    shown = ", ".join(changes[:3])
    return shown + (f" and {len(changes) - 3} more" if len(changes) > 3 else "")


def _manifest_stat(path: Path) -> dict[str, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size}


def record_fingerprint(folder: Path, prints: Mapping[str, Any]) -> None:
    """Keep ``prints`` beside ``folder/manifest.json``, with the manifest's size and time, so a
    manifest rewritten by anything else (plain dbt) is not taken for this one."""
    stat = _manifest_stat(folder / "manifest.json")
    if stat is None:
        return
    record = {**prints, "manifest": stat, "recorded_at": datetime.now().isoformat(timespec="seconds")}
    partial = folder / f".{FINGERPRINT_FILE}.{os.getpid()}"
    partial.write_text(json.dumps(record))
    partial.replace(folder / FINGERPRINT_FILE)


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((folder / FINGERPRINT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def judge(manifest: Path, prints: Mapping[str, Any], project_dir: Path) -> tuple[bool, str]:
    """(reusable, why) for one manifest of the right adapter."""
    record = _read_record(manifest.parent)
    if record is not None and record.get("manifest") == _manifest_stat(manifest):
        changes = differences(record, prints)
        if not changes:
            return True, f"the project is unchanged since it was written at {record.get('recorded_at', '?')}"
        return False, _summary(changes)
    # written by dbt alone: trusted when newer than every file of the project (as make judges)
    built = manifest.stat().st_mtime_ns
    newer = [f for f in project_files(project_dir) if f.stat().st_mtime_ns >= built]
    when = datetime.fromtimestamp(built / 1e9).isoformat(sep=" ", timespec="seconds")
    if not newer:
        return True, f"written by dbt at {when}, after the last change to the project's files"
    return False, _summary([f"{_relative(f, project_dir)} changed" for f in newer]) + f" after dbt wrote it at {when}"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One parse at a time per target folder (two ``make syncs`` at once wait for each other)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".roundtrip_manifest.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_manifest(
    target: str | None = None,
    project_dir: Path = PROJECT_ROOT,
    target_path: Path | None = None,
    force: bool = False,
) -> ManifestChoice:
    """The manifest of ``target`` (default ``ROUNDTRIP_TARGET``): one on disk that still
    describes the project (see the module docstring), else a fresh ``dbt parse`` into the
    target's own folder. A project that does not parse: dbt's message on stderr, as dbt prints
    it, then ``DbtParseError``."""
    from roundtrip.core.settings import load_settings

    started = time.perf_counter()
    chosen = target or load_settings().target
    environment = dbt_environment()
    prints = fingerprint(chosen, environment, project_dir)
    folders = manifest_dirs(chosen, target_path, project_dir)
    with _locked(folders[0]):
        why = f"no manifest built for {chosen} yet"
        for manifest in find_manifests(chosen, target_path, project_dir):
            reusable, reason = judge(manifest, prints, project_dir)
            if reusable and not force:
                return ManifestChoice(manifest, chosen, False, reason, time.perf_counter() - started)
            why = "--force" if force else reason
        parse_into(folders[0], chosen, environment, project_dir)
        record_fingerprint(folders[0], prints)
    return ManifestChoice(folders[0] / "manifest.json", chosen, True, why, time.perf_counter() - started)


def parse_into(folder: Path, target: str, environment: Mapping[str, str], project_dir: Path) -> None:
    """``dbt parse`` into ``folder``, quietly: on success nothing is printed; on failure dbt's
    own message goes to stderr as it is, and ``DbtParseError`` says which command failed."""
    command = dbt_command(["--quiet", "parse"], target=target, target_path=folder, project_dir=project_dir)
    log.debug("running %s", " ".join(command))
    done = subprocess.run(command, cwd=project_dir, env=dict(environment), capture_output=True, text=True)
    if done.returncode != 0:
        from roundtrip.core.redact import redact

        sys.stderr.write(redact(done.stdout + done.stderr).rstrip("\n") + "\n")
        sys.stderr.flush()
        raise DbtParseError(
            f"dbt could not parse the project for target {target} (its message is above)",
            hint="fix what dbt names, then run the command again",
        )


@contextlib.contextmanager
def fingerprint_after(
    args: Sequence[str],
    environment: Mapping[str, str],
    project_dir: Path,
    target: str | None,
    target_path: Path | None,
) -> Iterator[Any]:
    """Around a dbt run: the fingerprint is taken before it (a file edited while dbt runs makes
    the next check parse again), and kept beside the manifest if the run wrote one.
    Yields ``done(returncode)``."""
    command = next((a for a in args if not a.startswith("-")), "")
    folder, prints, started = None, None, time.time_ns()
    if command in WRITES_MANIFEST:
        from roundtrip.core.settings import load_settings

        chosen = target or flag_value(args, "--target") or load_settings().target
        given = flag_value(args, "--target-path")
        folder = Path(given) if given else target_path or default_target_path(project_dir)
        folder = folder if folder.is_absolute() else project_dir / folder
        try:
            prints = fingerprint(chosen, environment, project_dir, flag_value(args, "--vars"))
        except OSError:
            prints = None

    def done(returncode: int) -> None:
        stat = _manifest_stat(folder / "manifest.json") if folder else None
        if returncode == 0 and folder and prints and stat and stat["mtime_ns"] >= started:
            with contextlib.suppress(OSError):
                record_fingerprint(folder, prints)

    yield done


def flag_value(args: Sequence[str], flag: str) -> str | None:
    """The value of ``--flag value`` or ``--flag=value`` in ``args``."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None
