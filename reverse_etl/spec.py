"""Sync specifications, read from dbt's manifest: one exposure of type `application` each.

```yaml
exposures:
  - name: crm_user_segments
    type: application
    owner: {name: CRM team}
    depends_on: [ref('user_segments')]
    meta:
      sync:
        destination: postgres            # a connection's name (profiles/connections.yml)
        target: crm.user_segments        # schema.table, or a Redis key template such as "reco:{user_id}"
        mode: upsert                     # upsert | mirror | insert_only | replace
        primary_key: [user_id]
        columns: {user_id: user_id, segment: segment}   # optional: model column -> destination column
        track_changes: {column: segment, previous: previous_segment, changed_at: segment_changed_at}
```
The model's relation comes from the manifest too: no table name lives in Python. The manifest
is the one dbt built for the warehouse the syncs read (``--target``: ``target/manifest.json`` for
duckdb, ``target/<target>/manifest.json`` otherwise); one built for another warehouse is refused,
never misread. An exposure whose settings are invalid fails alone: the others still run. The full
format is in docs/reverse_etl.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from string import Formatter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from reverse_etl.errors import SyncError
from reverse_etl.notify import NotifySettings

Mode = Literal["upsert", "mirror", "insert_only", "replace"]
OnSchemaChange = Literal["fail", "append_new_columns", "sync_all_columns"]
log = logging.getLogger(__name__)
PG_NAME_BYTES = 63  # NAMEDATALEN - 1: Postgres cuts a longer name without a word
RESERVED_PREFIX = "__rt_"  # columns the engine adds to the rows it reads
DEFAULT_KINDS = {"postgres": "postgres", "redis": "redis"}  # the connections a project without a file has


class TrackChanges(BaseModel):
    """Keep the previous value of ``column`` and when it last really changed (NULL-safe)."""

    model_config = ConfigDict(extra="forbid")

    column: str
    previous: str
    changed_at: str


class DestinationTests(BaseModel):
    """Assertions on the destination after the write, before the commit (``meta.sync.tests``),
    as dbt tests assert on a model: a failing one fails the run (Postgres: nothing committed)."""

    model_config = ConfigDict(extra="forbid")

    # the destination's rows (Redis: the mart's keys that exist) within this share of the mart's records
    row_count: dict[Literal["within_pct"], float] | None = None
    unique: list[str] | None = None  # columns whose values are unique in the destination (Postgres)
    not_null: list[str] | None = None  # columns with no NULL in the destination (Postgres)


class RetrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(default=4, ge=1)
    backoff_seconds: float = Field(default=1.0, ge=0)  # first wait; doubles each time, with jitter
    max_backoff_seconds: float = Field(default=60.0, ge=0)


class SyncSettings(BaseModel):
    """The ``meta.sync`` block of an exposure."""

    model_config = ConfigDict(extra="forbid")

    destination: str  # a connection's name (profiles/connections.yml): `postgres` and `redis` by default
    kind: Literal["postgres", "redis"] | None = None  # the connection's type: set from the connections
    target: str | None = None  # postgres: schema.table (replace: defaults to the model's own); redis: key template
    mode: Mode = "upsert"
    primary_key: list[str] = Field(min_length=1)
    columns: dict[str, str] | None = None
    value: Literal["object", "list"] = "object"  # redis: one row per key, or the JSON list of the key's rows
    order_by: list[str] | None = None  # redis `list`: order of the rows in a value (default: primary key)
    ttl_seconds: int | None = Field(default=None, gt=0)
    track_changes: TrackChanges | None = None
    refresh: list[str] | None = None  # replace: serving models to refresh (default: derived from the manifest)
    batch_rows: int = Field(default=50_000, gt=0)
    retry: RetrySettings = RetrySettings()
    # what a change of the model's columns since the last run does (dbt's vocabulary)
    on_schema_change: OnSchemaChange = "fail"
    # guards, checked before anything is written: a run that would delete more than this share
    # of the records the sync owns, or reject more than this share of the model's rows, stops
    max_delete_pct: float = Field(default=50.0, ge=0, le=100)
    max_reject_pct: float = Field(default=10.0, ge=0, le=100)
    # each run reads this many of its unchanged records back from the destination and compares
    # them with the model (hand edits, narrowed columns, a restored backup); any difference
    # makes the run compare every record and rewrite the ones that differ
    verify_sample: int = Field(default=100, ge=0)
    # Postgres upsert / mirror: above this share of changed records, a table that holds only
    # the sync's rows is emptied and written whole (TRUNCATE + COPY) instead of upserted; 100: never
    rewrite_above_pct: float = Field(default=50.0, ge=0, le=100)
    # NaN and ±Infinity have no JSON spelling: a Redis sync rejects the row, or writes null
    non_finite: Literal["reject", "null"] = "reject"
    # write policies (upsert, mirror): create records only, update existing ones only, or both;
    # fill_empty: only fill destination columns that are NULL (all non-key ones, or those
    # listed): for CRM fields people edit
    match: Literal["both", "create_only", "update_only"] = "both"
    fill_empty: bool | list[str] = False
    tests: DestinationTests | None = None  # assertions on the destination after the write
    # change detection: every row read and compared with the state (diff), or only the rows whose
    # `cursor` column (a model column that grows with every change: updated_at) reached the
    # highest value the last run read, with a full diff every `full_diff_every` runs (deletes,
    # and changes the cursor missed, are only found by those)
    change_detection: Literal["diff", "cursor"] = "diff"
    cursor: str | None = None
    full_diff_every: int = Field(default=10, ge=1)
    # who hears about this sync's failures, besides ROUNDTRIP_SYNC_NOTIFY_* (reverse_etl.notify)
    notify: NotifySettings | None = None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> SyncSettings:
        given: dict[str, str] | None = (info.context or {}).get("kinds")
        if given is None and self.kind is not None:  # resolved already (a spec built from settings)
            given = {self.destination: self.kind}
        known = given or DEFAULT_KINDS
        kind = known.get(self.destination)
        if kind not in ("postgres", "redis"):
            declared = ", ".join(sorted(known)) or "none"
            raise ValueError(
                f"destination {self.destination!r} is not a declared connection (declared: {declared}; "
                "see profiles/connections.yml)"
            )
        if self.kind is not None and self.kind != kind:
            raise ValueError(f"kind {self.kind} does not match connection {self.destination!r}, a {kind} one")
        self.kind = kind  # type: ignore[assignment]
        if kind == "postgres":
            self._check_postgres()
        else:
            self._check_redis()
        if self.match != "both" and self.mode not in ("upsert", "mirror"):
            raise ValueError(f"match: {self.match} applies to mode upsert or mirror (insert_only creates only)")
        if self.fill_empty:
            if kind != "postgres" or self.mode not in ("upsert", "mirror") or self.match == "create_only":
                raise ValueError("fill_empty applies to postgres syncs in mode upsert or mirror that update rows")
            keys = set(self.primary_key) & set(self.fill_empty if isinstance(self.fill_empty, list) else [])
            if keys:
                raise ValueError(f"fill_empty cannot name key columns: {sorted(keys)}")
        if self.change_detection == "cursor":
            if not self.cursor:
                raise ValueError("change_detection: cursor needs a cursor column (e.g. cursor: updated_at)")
            if self.mode == "replace" or (kind == "redis" and self.value == "list"):
                raise ValueError(
                    "change_detection: cursor needs records of one row each (not replace, not value: list)"
                )
        elif self.cursor:
            raise ValueError("cursor applies to change_detection: cursor")
        if self.tests and (self.tests.unique or self.tests.not_null) and kind != "postgres":
            raise ValueError("tests: unique and not_null apply to postgres syncs (a Redis key is unique)")
        if self.columns is not None:
            clash = [c for c in [*self.columns, *self.columns.values()] if c.startswith(RESERVED_PREFIX)]
            if clash:
                raise ValueError(f"column names starting with {RESERVED_PREFIX!r} are reserved: {clash}")
        return self

    def _check_postgres(self) -> None:
        if self.target is None and self.mode != "replace":
            raise ValueError("postgres syncs need a target (schema.table)")
        if self.target is not None:
            parse_relation(self.target)
        for name in ("ttl_seconds", "order_by"):
            if getattr(self, name) is not None:
                raise ValueError(f"{name} applies to redis syncs only")
        if self.value != "object":
            raise ValueError("value applies to redis syncs only")
        if self.non_finite != "reject":
            raise ValueError("non_finite applies to redis syncs only (Postgres stores NaN and Infinity)")
        if self.track_changes and self.mode not in ("upsert", "mirror"):
            raise ValueError("track_changes needs mode upsert or mirror")
        if self.track_changes and self.track_changes.column in self.primary_key:
            raise ValueError("track_changes.column cannot be part of the primary key")
        if self.refresh is not None and self.mode != "replace":
            raise ValueError("refresh applies to mode replace only")

    def _check_redis(self) -> None:
        if self.mode == "replace":
            raise ValueError("mode replace is for postgres; use mirror for redis")
        if self.track_changes or self.refresh is not None:
            raise ValueError("track_changes and refresh apply to postgres syncs only")
        fields = key_template_fields(self.target or "")
        if not fields:
            raise ValueError(f"redis target must be a key template such as 'reco:{{user_id}}', got {self.target!r}")
        if self.value == "object" and set(fields) != set(self.primary_key):
            raise ValueError(f"value: object needs the key template fields {fields} to be the primary key")
        if self.value == "list" and not set(fields) <= set(self.primary_key):
            raise ValueError(f"value: list needs the key template fields {fields} inside the primary key")
        if self.order_by is not None and self.value != "list":
            raise ValueError("order_by applies to value: list")


def parse_relation(text: str) -> tuple[str, str]:
    """``schema.table`` as (schema, table). A part may be double-quoted to hold a dot or a
    quote (``"my.schema"."a""b"``, SQL's spelling); unquoted parts are taken as written. The
    parts are names, never SQL: every statement quotes them (``pg_ident``)."""
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == '"':
            j, name = i + 1, []
            while True:
                if j >= n:
                    raise ValueError(f"postgres target {text!r}: unterminated quoted name")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        name.append('"')
                        j += 2
                        continue
                    break
                name.append(text[j])
                j += 1
            parts.append("".join(name))
            i = j + 1
        else:
            j = text.find(".", i)
            j = n if j < 0 else j
            parts.append(text[i:j])
            i = j
        if i >= n:
            break
        if text[i] != ".":
            raise ValueError(f"postgres target {text!r}: expected a dot after a quoted name")
        i += 1
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"postgres target must be schema.table, got {text!r}")
    if any("\x00" in p for p in parts):
        raise ValueError(f"postgres target {text!r} holds a NUL byte")
    for part in parts:
        if len(part.encode()) > PG_NAME_BYTES:
            raise ValueError(
                f"postgres target {text!r}: the name {part[:20]!r}... is {len(part.encode())} bytes; Postgres keeps "
                f"the first {PG_NAME_BYTES} bytes of a name and drops the rest silently (two targets alike in "
                f"those bytes would be one table): shorten it"
            )
    return parts[0], parts[1]


def key_template_fields(template: str) -> list[str]:
    """Column names in a Redis key template; format specs and conversions are not supported."""
    fields = []
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad key template {template!r}: {exc}") from exc
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if not field_name or spec or conversion:
            raise ValueError(f"key template {template!r}: use plain {{column}} fields only")
        fields.append(field_name)
    return fields


class RefreshModel(BaseModel):
    """A serving model rebuilt after a replace, and the destination tables it reads."""

    name: str
    reads: list[str]
    relation: str | None = None  # schema.identifier, as on the serving Postgres
    # the hash of what its view is built from (``serving_definition``); None: only dbt refreshes it
    definition: str | None = None


class ModelRef(BaseModel):
    """Where the model is in the warehouse its manifest was built for."""

    database: str  # DuckDB: the file's catalog; Postgres: the database; BigQuery: the project
    schema_: str = Field(alias="schema")
    identifier: str
    relation: str  # as dbt renders it ("warehouse"."marts"."user_segments", `p`.`d`.`t`)

    model_config = ConfigDict(populate_by_name=True)


class SyncSpec(BaseModel):
    name: str
    model: str  # dbt model name
    relation: str  # fully qualified relation in the warehouse
    settings: SyncSettings
    target: str  # resolved destination: schema.table or key template
    refresh: list[RefreshModel] = []
    source: ModelRef | None = None
    warehouse: str = "duckdb"  # the dbt target (adapter) the model was built on

    @property
    def mode(self) -> Mode:
        return self.settings.mode

    @property
    def destination(self) -> str:
        return f"{self.settings.destination} {self.target}"

    @property
    def table(self) -> tuple[str, str]:
        """A Postgres target as (schema, table)."""
        return parse_relation(self.target)


@dataclass(frozen=True)
class InvalidSync:
    """An exposure whose ``meta.sync`` cannot work: it fails alone, with its reason."""

    name: str
    reason: str


_TOLD: set[Path] = set()


def manifest_path(target: str | None = None) -> Path:
    """The manifest dbt built for ``target``: the project's folder for that target
    (``target/<target>/``, what ``roundtrip dbt`` and the Make targets write) or dbt's own
    ``target/`` (what a plain ``dbt build --target postgres`` writes), the newest built for the
    target's adapter; the folder's own path when there is none (``read_manifest`` says so)."""
    from roundtrip.core.dbt import find_manifests, manifest_dirs
    from roundtrip.core.settings import load_settings

    chosen = target or load_settings().target
    found = find_manifests(chosen)
    if found:
        if found[0] not in _TOLD:  # said once per invocation, however often it is looked up
            _TOLD.add(found[0])
            log.info("syncs read from %s (built for %s)", found[0], chosen)
        return found[0]
    return manifest_dirs(chosen)[0] / "manifest.json"


def _sync_meta(exposure: dict[str, Any]) -> Any:
    return ((exposure.get("config") or {}).get("meta") or exposure.get("meta") or {}).get("sync")


def read_manifest(path: Path, target: str | None = None) -> dict[str, Any]:
    """The manifest at ``path``, refused when it was built for another warehouse than ``target``."""
    if not path.exists():
        fix = f"roundtrip dbt manifest --target {target}" if target else "roundtrip dbt manifest"
        raise SyncError(f"dbt manifest {path} not found", hint=f"run `{fix}` (or `make syncs`) first")
    manifest: dict[str, Any] = json.loads(path.read_text())
    built_for = manifest.get("metadata", {}).get("adapter_type")
    if target and built_for and built_for != target:
        raise SyncError(
            f"{path} was built for target {built_for}, but the syncs read from {target}",
            hint=f"run `roundtrip dbt manifest --target {target}`, or pass --target {built_for}",
        )
    return manifest


def load_specs(
    path: Path | None = None, target: str | None = None, kinds: dict[str, str] | None = None
) -> list[SyncSpec]:
    """The valid syncs only; an invalid one raises (see ``load_syncs`` to keep going)."""
    specs, invalid = load_syncs(path, target, kinds)
    if invalid:
        raise SyncError(f"exposure {invalid[0].name!r}: {invalid[0].reason}")
    return specs


def load_syncs(
    path: Path | None = None, target: str | None = None, kinds: dict[str, str] | None = None
) -> tuple[list[SyncSpec], list[InvalidSync]]:
    """Every exposure of type ``application`` with a ``meta.sync`` block: the valid ones as
    specs, the others with the reason each cannot run. ``kinds``: the declared connections'
    types (connection name -> postgres | redis; default: ``postgres`` and ``redis``)."""
    path = path or manifest_path(target)
    manifest = read_manifest(path, target)
    warehouse = manifest.get("metadata", {}).get("adapter_type") or target or "duckdb"
    parsed: list[tuple[dict[str, Any], dict[str, Any], SyncSettings]] = []
    invalid: list[InvalidSync] = []
    for exposure in manifest.get("exposures", {}).values():
        raw = _sync_meta(exposure)
        if exposure.get("type") != "application" or raw is None:
            continue
        models = [n for n in exposure["depends_on"]["nodes"] if n.startswith("model.")]
        if len(models) != 1:
            invalid.append(InvalidSync(exposure["name"], f"must depend on exactly one model, found {models}"))
            continue
        try:
            settings = SyncSettings.model_validate(raw, context={"kinds": kinds or DEFAULT_KINDS})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'meta.sync'}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            invalid.append(InvalidSync(exposure["name"], f"invalid meta.sync: {problems}"))
            continue
        parsed.append((exposure, manifest["nodes"][models[0]], settings))

    # tables written by replace syncs: model unique_id -> destination table
    replaced = {
        node["unique_id"]: settings.target or own_table(node)
        for _, node, settings in parsed
        if settings.kind == "postgres" and settings.mode == "replace"
    }
    specs = []
    for exposure, node, settings in parsed:
        name = exposure["name"]
        target = settings.target or own_table(node)
        try:
            refresh = (
                serving_models(manifest, node, settings.refresh, replaced, name) if settings.mode == "replace" else []
            )
        except SyncError as exc:
            invalid.append(InvalidSync(name, str(exc).removeprefix(f"exposure {name!r}: ")))
            continue
        if refresh and target != own_table(node):
            invalid.append(
                InvalidSync(
                    name,
                    f"serving models {[r.name for r in refresh]} read {own_table(node)} through ref(), "
                    f"but the sync writes {target}: drop `target` or make them agree",
                )
            )
            continue
        specs.append(
            SyncSpec(
                name=name,
                model=node["name"],
                relation=node["relation_name"],
                settings=settings,
                target=target,
                refresh=refresh,
                source=ModelRef(
                    database=node["database"],
                    schema=node["schema"],
                    identifier=node.get("alias") or node["name"],
                    relation=node["relation_name"],
                ),
                warehouse=warehouse,
            )
        )
    specs, shared = _apart(specs)
    invalid += shared
    return sorted(specs, key=lambda s: s.name), sorted(invalid, key=lambda s: s.name)


def _apart(specs: list[SyncSpec]) -> tuple[list[SyncSpec], list[InvalidSync]]:
    """Syncs that write one table (or one Redis key template) of one connection overwrite each
    other's rows on every run, and a mirror deletes what the other still sends: each is refused,
    naming the others (``insert_only`` syncs may share a queue: they only add rows)."""
    by_place: dict[tuple[str, object], list[SyncSpec]] = {}
    for spec in specs:
        place = parse_relation(spec.target) if spec.settings.kind == "postgres" else spec.target
        by_place.setdefault((spec.settings.destination, place), []).append(spec)
    kept, refused = [], []
    for (destination, _), group in by_place.items():
        if len(group) == 1 or all(s.settings.mode == "insert_only" for s in group):
            kept += group  # queues fed by several syncs: none updates or deletes the others' rows
            continue
        for spec in group:
            others = ", ".join(o.name for o in group if o is not spec)
            refused.append(
                InvalidSync(
                    spec.name,
                    f"writes {spec.target} of {destination} as sync {others} does: syncs on one target overwrite "
                    "each other's rows (and a mirror deletes what the other sends); give each its own target",
                )
            )
    return kept, refused


def own_table(node: dict[str, Any]) -> str:
    """Where ``ref()`` puts the model on any target: its schema and alias (as ``parse_relation``
    reads it back: a part holding a dot or a quote is quoted)."""
    return format_relation(node["schema"], node.get("alias") or node["name"])


def format_relation(schema: str, table: str) -> str:
    def part(name: str) -> str:
        return '"' + name.replace('"', '""') + '"' if "." in name or '"' in name else name

    return f"{part(schema)}.{part(table)}"


def serving_models(
    manifest: dict[str, Any],
    node: dict[str, Any],
    explicit: list[str] | None,
    replaced: dict[str, str],
    sync: str,
) -> list[RefreshModel]:
    """The models to rebuild on the serving Postgres after this model's table was replaced.

    By default: the model's children whose every parent is a table written by a replace sync,
    i.e. the models that can be built on the serving database from exported tables alone
    (the materialized views). ``refresh: [...]`` in the sync meta names them instead.
    """
    parents = manifest.get("parent_map", {})
    nodes = manifest["nodes"]
    if explicit is not None:
        by_name = {n["name"]: uid for uid, n in nodes.items() if uid.startswith("model.")}
        unknown = [m for m in explicit if m not in by_name]
        if unknown:
            raise SyncError(f"exposure {sync!r}: refresh names unknown models {unknown}")
        chosen = [by_name[m] for m in explicit]
    else:
        children = manifest.get("child_map", {}).get(node["unique_id"], [])
        chosen = [c for c in children if c.startswith("model.") and all(p in replaced for p in parents.get(c, [None]))]
    return [
        RefreshModel(
            name=nodes[uid]["name"],
            reads=sorted(replaced[p] for p in parents.get(uid, []) if p in replaced),
            relation=own_table(nodes[uid]),
            definition=serving_definition(manifest, uid),
        )
        for uid in sorted(chosen)
    ]


# the Jinja a serving model may hold and still compile to the same SQL from the same file and
# parents: comments, and calls of ref() and config() with literal arguments
_JINJA_COMMENT = re.compile(r"{#.*?#}", re.S)
_JINJA_TAG = re.compile(r"{{(.*?)}}|{%(.*?)%}", re.S)
_PLAIN_CALL = re.compile(r"^[-+]?\s*(ref|config)\s*\([^(){}]*\)\s*[-+]?$")


def serving_definition(manifest: dict[str, Any], uid: str) -> str | None:
    """The hash that the project's ``serving_materialized_view`` materialization keeps in the
    view's comment (macro ``serving_definition`` there; the two must stay identical): the model
    file's checksum, its unique key and the relations it reads. None when that does not pin the
    SQL down: Jinja other than ``ref()`` and ``config()`` (macros, vars, env vars, ``target``
    can compile differently from one run to the next), hooks, or no unique key."""
    nodes = manifest["nodes"]
    node = nodes[uid]
    config = node.get("config") or {}
    key = config.get("unique_key")
    keys = [key] if isinstance(key, str) else list(key or [])
    tags = [a or b for a, b in _JINJA_TAG.findall(_JINJA_COMMENT.sub("", node.get("raw_code") or ""))]
    if (
        not keys
        or node.get("depends_on", {}).get("macros")
        or config.get("pre-hook")
        or config.get("post-hook")
        or not all(_PLAIN_CALL.match(tag.strip()) for tag in tags)
    ):
        return None
    parents = []
    for parent_id in sorted(node.get("depends_on", {}).get("nodes", [])):
        if parent_id.startswith("source."):
            source = manifest.get("sources", {})[parent_id]
            parents.append(f"{parent_id}={source['schema']}.{source['identifier']}")
        else:
            parents.append(f"{parent_id}={nodes[parent_id]['schema']}.{nodes[parent_id]['alias']}")
    text = f"{node['checksum']['checksum']}|{','.join(keys)}|{','.join(parents)}"
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def select(specs: list[SyncSpec], name: str, invalid: list[InvalidSync] | None = None) -> list[SyncSpec]:
    if name == "all":
        return specs
    chosen = [s for s in specs if s.name == name]
    if not chosen:
        broken = [i for i in invalid or [] if i.name == name]
        if broken:
            raise SyncError(f"sync {name} cannot run: {broken[0].reason}", hint="fix its meta.sync in the exposure")
        declared = sorted([s.name for s in specs] + [i.name for i in invalid or []])
        raise SyncError(f"no sync named {name!r}; declared: {', '.join(declared) or 'none'}")
    return chosen
