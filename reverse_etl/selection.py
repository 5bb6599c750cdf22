"""Which syncs a command acts on: dbt's node selection, applied to the sync exposures.

``--select`` and ``--exclude`` take selectors as dbt does: values separated by spaces are a
union, criteria joined by a comma inside one value an intersection, and ``--exclude`` removes
what its own selectors pick. A criterion is one of:

=====================  ==========================================================================
``NAME``, ``GLOB``     the sync's (exposure's) name, ``fnmatch`` globs allowed (``crm_*``);
                       ``exposure:NAME`` is the same; ``all`` (or ``*``) is every sync
``tag:X``              a tag of the exposure (its ``tags`` and ``config.tags``)
``destination:X``      the sync's ``meta.sync.destination`` (a connection's name), or the type of
                       that connection (``destination:redis``: every sync writing to a Redis)
``model:X``            the model the sync reads (glob allowed)
``state:modified``     the exposure's definition (type, meta, depends_on) or anything upstream of
                       it (a node's checksum or config, a macro it calls) differs from the
                       manifest in ``--state DIR``; a sync new since then counts as modified
=====================  ==========================================================================

Every value is matched as itself or as a glob. A selector that matches no declared sync is
an error naming it and the declared syncs (a typo never silently runs nothing), except that
``state:modified`` may narrow a selection down to nothing: nothing changed, nothing to do.
Invalid exposures are selected like the others (their tags, destination and model are read from
the manifest as written), so that a selected invalid sync is reported, and fails alone.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reverse_etl.errors import SyncError
from reverse_etl.spec import _sync_meta as sync_meta  # where an exposure keeps meta.sync: one place

METHODS = ("exposure", "tag", "destination", "model", "state")
STATE_VALUES = ("modified",)
GRAMMAR = (
    "a selector is a sync name or glob (crm_*), all, tag:X, destination:X, model:X or state:modified; "
    "values separated by spaces are a union, a comma joins criteria into an intersection "
    "(tag:crm,destination:postgres)"
)


@dataclass(frozen=True)
class DeclaredSync:
    """What a selector can match on one sync exposure, valid or not."""

    name: str
    unique_id: str
    tags: frozenset[str]
    destination: str | None  # the connection's name
    models: tuple[str, ...]  # names of the models it depends on (one, when valid)
    kind: str | None = None  # the connection's type (postgres, redis), when known


def declared_syncs(manifest: dict[str, Any]) -> list[DeclaredSync]:
    """The sync exposures of ``manifest`` (type ``application`` with a ``meta.sync``), by name."""
    nodes = manifest.get("nodes", {})
    out = []
    for uid, exposure in manifest.get("exposures", {}).items():
        raw = sync_meta(exposure)
        if exposure.get("type") != "application" or raw is None:
            continue
        tags = {*(exposure.get("tags") or []), *((exposure.get("config") or {}).get("tags") or [])}
        models = tuple(
            nodes[n]["name"] if n in nodes else n.rsplit(".", 1)[-1]
            for n in (exposure.get("depends_on") or {}).get("nodes", [])
            if n.startswith("model.")
        )
        destination, kind = (raw.get("destination"), raw.get("kind")) if isinstance(raw, dict) else (None, None)
        out.append(
            DeclaredSync(exposure["name"], uid, frozenset(map(str, tags)), _text(destination), models, _text(kind))
        )
    return sorted(out, key=lambda s: s.name)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------- selectors


@dataclass(frozen=True)
class Criterion:
    method: str  # name | tag | destination | model | state
    value: str

    def matches(self, sync: DeclaredSync, modified: set[str] | None) -> bool:
        if self.method == "name":
            return self.value in ("all", "*") or self._fits(sync.name)
        if self.method == "tag":
            return any(self._fits(tag) for tag in sync.tags)
        if self.method == "destination":
            return any(self._fits(d) for d in (sync.destination, sync.kind) if d is not None)
        if self.method == "model":
            return any(self._fits(model) for model in sync.models)
        assert self.method == "state" and modified is not None
        return sync.name in modified

    def _fits(self, text: str) -> bool:
        """Equal, or matched as a glob (a name holding ``[`` still selects itself)."""
        return text == self.value or fnmatch.fnmatchcase(text, self.value)


@dataclass(frozen=True)
class Selector:
    """One value of ``--select``/``--exclude``: criteria that must all match."""

    text: str
    criteria: tuple[Criterion, ...]

    @classmethod
    def parse(cls, text: str) -> Selector:
        criteria = []
        for part in text.split(","):
            if not part:
                raise SyncError(f"selector {text!r} has an empty criterion", hint=GRAMMAR)
            if part[0] in "+@" or part[-1] == "+":
                raise SyncError(
                    f"selector {text!r}: graph operators (+, @) do not apply to syncs",
                    hint="a sync has no parents or children among syncs; select the models with dbt",
                )
            method, sep, value = part.partition(":")
            if not sep:
                method, value = "name", part
            elif method not in METHODS:
                raise SyncError(
                    f"selector {text!r}: unknown method {method!r}; known: {', '.join(METHODS)}", hint=GRAMMAR
                )
            if not value:
                raise SyncError(f"selector {text!r}: {method}: needs a value", hint=GRAMMAR)
            if method == "state" and value not in STATE_VALUES:
                raise SyncError(f"selector {text!r}: state:{value} is not supported; use state:modified")
            criteria.append(Criterion("name" if method == "exposure" else method, value))
        return cls(text, tuple(criteria))

    @property
    def uses_state(self) -> bool:
        return any(c.method == "state" for c in self.criteria)

    @property
    def is_a_name(self) -> bool:
        """A plain sync name (no method, no glob)."""
        return self.text == self.criteria[0].value and not any(ch in self.text for ch in "*?[")

    def matches(self, sync: DeclaredSync, modified: set[str] | None, with_state: bool = True) -> bool:
        return all(c.matches(sync, modified) for c in self.criteria if with_state or c.method != "state")


def parse_selectors(values: Iterable[str]) -> list[Selector]:
    """Each value split at whitespace (``--select "tag:crm reco_*"``), then parsed."""
    out = []
    for value in values:
        words = value.split()
        if not words:
            raise SyncError(f"empty selector {value!r}", hint="leave --select out to select every sync")
        out += [Selector.parse(word) for word in words]
    return out


@dataclass(frozen=True)
class Selection:
    select: tuple[Selector, ...]  # empty: every sync
    exclude: tuple[Selector, ...]

    @classmethod
    def parse(cls, select: Sequence[str] = (), exclude: Sequence[str] = ()) -> Selection:
        return cls(tuple(parse_selectors(select)), tuple(parse_selectors(exclude)))

    @property
    def uses_state(self) -> bool:
        return any(s.uses_state for s in (*self.select, *self.exclude))

    def apply(self, declared: Sequence[DeclaredSync], modified: set[str] | None = None) -> list[str]:
        """The names selected, in the order of ``declared``. A selector that matches no declared
        sync raises (its ``state:`` criteria aside: nothing modified is a normal outcome)."""
        if self.uses_state and modified is None:
            raise SyncError(
                "state:modified needs --state DIR",
                hint="the folder holding the manifest.json of the syncs as last deployed (dbt's --state)",
            )
        for selector in self.select:
            if selector.text in ("all", "*"):
                continue  # every sync, however many (none included)
            if not any(selector.matches(sync, modified, with_state=False) for sync in declared):
                names = ", ".join(s.name for s in declared) or "none"
                what = "named" if selector.is_a_name else "matches"
                raise SyncError(f"no sync {what} {selector.text!r}; declared: {names}", hint=GRAMMAR)
        chosen = []
        for sync in declared:
            picked = not self.select or any(s.matches(sync, modified) for s in self.select)
            if picked and not any(s.matches(sync, modified) for s in self.exclude):
                chosen.append(sync.name)
        return chosen


# ---------------------------------------------------------------- state:modified


def state_manifest(path: Path) -> dict[str, Any]:
    """The manifest of ``--state``: a folder holding ``manifest.json`` (dbt's convention) or the file."""
    file = path / "manifest.json" if path.is_dir() else path
    if not file.is_file():
        raise SyncError(
            f"--state {path}: no manifest.json there",
            hint="save the target/ folder (its manifest.json) of the last deployment and point --state at it",
        )
    try:
        manifest: dict[str, Any] = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise SyncError(f"--state {file} cannot be read as a dbt manifest: {exc}") from exc
    if not isinstance(manifest, dict) or "nodes" not in manifest:
        raise SyncError(f"--state {file} is not a dbt manifest (no nodes)")
    return manifest


def modified_syncs(current: dict[str, Any], previous: dict[str, Any]) -> set[str]:
    """Names of the sync exposures of ``current`` that differ from ``previous``: their own
    definition, or anything upstream of them (``parent_map``, followed to the sources)."""
    old_exposures = {e["name"]: e for e in previous.get("exposures", {}).values()}
    changed_nodes: dict[str, bool] = {}
    out = set()
    for sync in declared_syncs(current):
        exposure = current["exposures"][sync.unique_id]
        before = old_exposures.get(sync.name)
        if before is None or _exposure_definition(exposure) != _exposure_definition(before):
            out.add(sync.name)
            continue
        upstream = _ancestors(current, sync.unique_id)
        if any(_node_changed(uid, current, previous, changed_nodes) for uid in upstream):
            out.add(sync.name)
    return out


def _exposure_definition(exposure: dict[str, Any]) -> str:
    """What reverse_etl reads of an exposure: its type, its meta, what it depends on."""
    config = exposure.get("config") or {}
    meta = {**(exposure.get("meta") or {}), **(config.get("meta") or {})}
    nodes = sorted((exposure.get("depends_on") or {}).get("nodes", []))
    return json.dumps({"type": exposure.get("type"), "meta": meta, "nodes": nodes}, sort_keys=True, default=str)


def _ancestors(manifest: dict[str, Any], uid: str) -> set[str]:
    parents = manifest.get("parent_map", {})
    seen: set[str] = set()
    todo = list(parents.get(uid, []))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += parents.get(node, [])
    return seen


def _node_changed(uid: str, current: dict[str, Any], previous: dict[str, Any], memo: dict[str, bool]) -> bool:
    if uid not in memo:
        memo[uid] = _node_fingerprint(current, uid) != _node_fingerprint(previous, uid)
    return memo[uid]


def _node_fingerprint(manifest: dict[str, Any], uid: str) -> str | None:
    """A node's file checksum, its unrendered config and the SQL of the macros it calls
    (dbt's modified.body, .configs and .macros). Rendered values (relation names, schemas)
    are left out: they differ between environments without the code having changed."""
    node = manifest.get("nodes", {}).get(uid) or manifest.get("sources", {}).get(uid)
    if node is None:
        return None  # new (or gone): changed
    parts = {
        "checksum": (node.get("checksum") or {}).get("checksum"),
        "config": node.get("unrendered_config"),
        "macros": _macros_digest(manifest, (node.get("depends_on") or {}).get("macros", [])),
    }
    return json.dumps(parts, sort_keys=True, default=str)


def _macros_digest(manifest: dict[str, Any], roots: Iterable[str]) -> str:
    macros = manifest.get("macros", {})
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        uid = todo.pop()
        if uid in seen:
            continue
        seen.add(uid)
        todo += ((macros.get(uid) or {}).get("depends_on") or {}).get("macros", [])
    digest = hashlib.sha256()
    for uid in sorted(seen):
        digest.update(f"{uid}\0{(macros.get(uid) or {}).get('macro_sql')}\0".encode())
    return digest.hexdigest()
