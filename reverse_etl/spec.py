"""Sync specifications, read from dbt's manifest: one exposure of type `application` each.

```yaml
exposures:
  - name: reco_cache
    type: application
    depends_on: [ref('recommendations')]
    meta:
      sync:
        destination: redis          # postgres | redis
        target: "reco:{user_id}"    # table (schema.table) or Redis key template
        mode: mirror                # upsert | mirror | insert_only | replace
        primary_key: [user_id]
        group_by: user_id           # Redis: one key holds the rows of one group, as a JSON list
        ttl_seconds: 86400
        columns: {source_column: destination_column}   # optional rename / selection
```
No table name lives in Python: the model's relation comes from the manifest too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from reverse_etl.errors import SyncError
from roundtrip.paths import dbt_target_dir

Mode = Literal["upsert", "mirror", "insert_only", "replace"]


class SyncSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    destination: Literal["postgres", "redis"]
    target: str
    mode: Mode = "upsert"
    primary_key: list[str] = Field(min_length=1)
    columns: dict[str, str] | None = None
    group_by: str | None = None
    order_by: list[str] | None = None  # order of rows inside a group (default: all columns)
    ttl_seconds: int | None = Field(default=None, gt=0)
    batch_rows: int = Field(default=50_000, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SyncSettings:
        if self.destination == "postgres" and "." not in self.target:
            raise ValueError(f"postgres target must be schema.table, got {self.target!r}")
        if self.destination == "redis" and "{" not in self.target:
            raise ValueError(f"redis target must be a key template such as 'reco:{{user_id}}', got {self.target!r}")
        return self


class SyncSpec(BaseModel):
    name: str
    model: str  # dbt model name
    relation: str  # fully qualified relation in the warehouse
    settings: SyncSettings


def manifest_path() -> Path:
    return dbt_target_dir() / "manifest.json"


def load_specs(path: Path | None = None) -> list[SyncSpec]:
    path = path or manifest_path()
    if not path.exists():
        raise SyncError(f"dbt manifest {path} not found: run `dbt parse` (or `make dbt-build`) first")
    manifest = json.loads(path.read_text())
    specs = []
    for exposure in manifest.get("exposures", {}).values():
        raw = (exposure.get("meta") or exposure.get("config", {}).get("meta") or {}).get("sync")
        if exposure.get("type") != "application" or raw is None:
            continue
        models = [n for n in exposure["depends_on"]["nodes"] if n.startswith("model.")]
        if len(models) != 1:
            raise SyncError(f"exposure {exposure['name']!r} must depend on exactly one model, found {models}")
        node = manifest["nodes"][models[0]]
        try:
            settings = SyncSettings.model_validate(raw)
        except ValidationError as exc:
            raise SyncError(f"exposure {exposure['name']!r}: invalid meta.sync:\n{exc}") from exc
        specs.append(
            SyncSpec(name=exposure["name"], model=node["name"], relation=node["relation_name"], settings=settings)
        )
    return sorted(specs, key=lambda s: s.name)


def select(specs: list[SyncSpec], name: str) -> list[SyncSpec]:
    if name == "all":
        return specs
    chosen = [s for s in specs if s.name == name]
    if not chosen:
        raise SyncError(f"no sync named {name!r}; declared: {', '.join(s.name for s in specs) or 'none'}")
    return chosen
