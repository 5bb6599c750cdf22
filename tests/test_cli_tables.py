"""Tables never cut a word (roundtrip.core.cli.print_table): at 80 and 120 columns on a
terminal, and piped. Asserted on the text printed, piece by piece."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import pytest
from rich.cells import cell_len
from rich.console import Console

from roundtrip.core import cli

SYNCS = [
    {
        "sync": "serving_non_recommendable_items",
        "model": "non_recommendable_items",
        "destination": "postgres marts.non_recommendable_items",
        "mode": "replace",
        "key": "item_id",
        "then refresh": "item_ids_mv,non_recommendable_items_mv",
    },
    {
        "sync": "crm_email_queue",
        "model": "email_triggers",
        "destination": "postgres crm.email_queue",
        "mode": "insert_only",
        "key": "trigger_id",
        "then refresh": "",
    },
    {
        "sync": 'crm "quoted"; café 🧘',
        "model": "recommendations",
        "destination": "redis reco:{user_id}",
        "mode": "mirror",
        "key": "user_id,recommendation_rank",
        "then refresh": "[bold]not markup[/bold]",
    },
]
RUNS = [
    {
        "sync": "reco_cache",
        "started": datetime(2026, 12, 7, 16, 4, 25, 123456, tzinfo=UTC),
        "status": "succeeded",
        "read": 25_805,
        "inserted": 2_581,
        "error": None,
    },
    {
        "sync": "crm_user_segments",
        "started": "2026-12-07 16:04:26+00:00",
        "status": "failed",
        "read": 0,
        "inserted": 0,
        "error": "cannot connect to Postgres: connection refused at 127.0.0.1:5432, is the server running?",
    },
]
SHAPES = [(80, True), (120, True), (100, False)]  # (width, a terminal?): 100 is the piped width


def render(rows: list[dict], width: int, terminal: bool, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[type-arg]
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=terminal, color_system=None, emoji=False)
    monkeypatch.setattr(cli, "console", console)
    cli.print_table("results", rows)
    return out.getvalue()


def pieces(rows: list[dict]) -> set[str]:  # type: ignore[type-arg]
    """Every word of every header and value: what must come out whole."""
    texts = [k for r in rows for k in r] + [cli.plain(v) for r in rows for v in r.values()]
    return {piece.rstrip(",") for text in texts for piece in re.split(r"[\s,]+", text) if piece}


@pytest.mark.parametrize(("width", "terminal"), SHAPES)
@pytest.mark.parametrize("rows", [SYNCS, RUNS], ids=["syncs", "runs"])
def test_no_word_is_cut(rows: list[dict], width: int, terminal: bool, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    printed = render(rows, width, terminal, monkeypatch)
    tokens = re.split(r"[\s│┃┆║|]+", printed)
    cut = [p for p in pieces(rows) if not any(p in token for token in tokens)]
    assert cut == [], printed
    if terminal:  # nothing wider than the terminal: it would wrap the line itself, mid-word
        assert max(cell_len(line) for line in printed.splitlines()) <= width, printed
    if rows is RUNS:
        assert "2026-12-07 16:04:25+00:00" in printed, "a time is one piece, to the second"


def test_a_table_that_fits_is_a_table_folding_at_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = render(RUNS, 120, True, monkeypatch)
    assert printed.count("┏") == 1, printed
    # the error folds at spaces inside its column; the row's other cells stay on its first line
    assert re.search(r"│ crm_user_segments +│ 2026-12-07 16:04:26\+00:00 │ failed", printed), printed
    assert any(line.rstrip().endswith("│ running?                             │") for line in printed.splitlines()), (
        printed
    )


def test_piped_output_is_one_whole_record_per_line(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = render(SYNCS, 100, False, monkeypatch)
    lines = printed.splitlines()
    for row in SYNCS:
        (line,) = [line for line in lines if line.strip().startswith(f"sync {row['sync']} · ")]
        assert all(value in line for value in row.values()), line
    assert "[bold]not markup[/bold]" in printed, "user text is printed as it is, never as markup"


def test_a_narrow_terminal_gets_one_block_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    printed = render(SYNCS, 80, True, monkeypatch)
    assert "sync serving_non_recommendable_items\n  model         non_recommendable_items\n" in printed, printed


def test_wrap_breaks_at_spaces_and_after_commas_only() -> None:
    assert cli.wrap("item_ids_mv,non_recommendable_items_mv", 20) == ["item_ids_mv,", "non_recommendable_items_mv"]
    assert cli.wrap("a b c", 3) == ["a b", "c"]
    assert cli.wrap("unbreakable_word_longer_than_width", 5) == ["unbreakable_word_longer_than_width"]
    assert cli.wrap("", 5) == [""]
