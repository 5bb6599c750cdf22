"""The options `roundtrip sync` commands share for choosing syncs and recording what they did:
``--select``/``--exclude``/``--state`` (``selection.py``), ``--sync`` (their older alias),
``--results`` (``run_results.py``), and the command class that reads ``--select a b c`` as
dbt does (every word up to the next option), besides ``--select a --select b``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from reverse_etl.selection import DeclaredSync, Selection, declared_syncs, modified_syncs, state_manifest
from reverse_etl.spec import InvalidSync, SyncSpec, manifest_path, read_manifest

SelectOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--select",
        "-s",
        help="syncs to act on, as dbt selects: names, globs (crm_*), tag:X, destination:X, model:X, "
        "state:modified; space-separated values are a union, comma-joined criteria an intersection",
        show_default=False,
    ),
]
ExcludeOpt = Annotated[
    Optional[list[str]],
    typer.Option("--exclude", help="syncs to leave out (the same selectors)", show_default=False),
]
StateOpt = Annotated[
    Optional[Path],
    typer.Option("--state", help="folder with the manifest.json to compare with, for state:modified"),
]
SyncOpt = Annotated[
    Optional[str],
    typer.Option("--sync", help="one selector: a sync name, or 'all' (the same as --select)", show_default=False),
]
ResultsOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--results",
        help="where this invocation's results go (JSON; default $ROUNDTRIP_DATA_DIR/reverse_etl/run_results.json)",
        show_default=False,
    ),
]

GREEDY = ("--select", "-s", "--exclude")


class SelectorCommand(TyperCommand):
    """A command whose ``--select``/``--exclude`` take every following word up to the next
    option (``--select tag:crm reco_* --dry-run``), as dbt's do."""

    def make_parser(self, ctx: Any) -> Any:  # typer vendors its own click: any of the two
        parser = super().make_parser(ctx)
        for name in GREEDY:
            option = parser._long_opt.get(name) or parser._short_opt.get(name)
            if option is None or getattr(option, "_greedy", False):
                continue
            process = option.process

            def greedy(value: Any, state: Any, process: Any = process) -> None:
                process(value, state)
                while state.rargs and not state.rargs[0].startswith("-"):
                    process(state.rargs.pop(0), state)

            option.process = greedy  # type: ignore[method-assign]
            option._greedy = True  # type: ignore[attr-defined]
        return parser


def chosen_syncs(
    warehouse: str,
    specs: list[SyncSpec],
    invalid: list[InvalidSync],
    sync: str | None,
    select: list[str] | None,
    exclude: list[str] | None,
    state: Path | None,
) -> tuple[list[SyncSpec], list[InvalidSync]]:
    """The valid and the invalid syncs the options select (every sync when none is given)."""
    values = [*(select or []), *([sync] if sync is not None else [])]
    selection = Selection.parse(values, exclude or [])
    everything = all(s.text in ("all", "*") for s in selection.select)
    if everything and not selection.exclude:
        return specs, invalid
    manifest = read_manifest(manifest_path(warehouse), warehouse)
    declared = _declared_as_loaded(declared_syncs(manifest), specs, invalid)
    modified = modified_syncs(manifest, state_manifest(state)) if selection.uses_state and state else None
    names = set(selection.apply(declared, modified))
    return [s for s in specs if s.name in names], [i for i in invalid if i.name in names]


def _declared_as_loaded(
    declared: list[DeclaredSync], specs: list[SyncSpec], invalid: list[InvalidSync]
) -> list[DeclaredSync]:
    """The manifest's sync exposures that the loader saw (valid or not), the loader's view of a
    valid one (its model and destination) winning over the raw meta."""
    valid = {s.name: s for s in specs}
    known = valid.keys() | {i.name for i in invalid}
    out = []
    for sync in declared:
        if sync.name not in known:
            continue
        spec = valid.get(sync.name)
        if spec is not None:
            settings = spec.settings
            sync = DeclaredSync(
                sync.name, sync.unique_id, sync.tags, settings.destination, (spec.model,), settings.kind
            )
        out.append(sync)
    return out
