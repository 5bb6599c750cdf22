"""The demo's HTML report (roundtrip/dev/report.py): a partial last day marked on the chart, units,
zeros written one way, rows vs keys explained, and every table inside a 1200 px window, measured
by a real browser (Debian's chromium) laying the page out."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from roundtrip.dev.report import nice_levels, partial_last_day, report_path, write_report

DAYS = [dt.date(2026, 11, 1) + dt.timedelta(days=i) for i in range(21)]
GMV = [(day, Decimal("70000.50") + i) for i, day in enumerate(DAYS[:-1])] + [(DAYS[-1], Decimal("312.40"))]
AS_OF = dt.datetime(2026, 11, 21, 0, 23, 5)  # the newest event: 23 minutes into the last day

# every count of the loaders non-zero in one row (the widest the table gets), long names
LOADED = [
    {
        "source": "files:orders_from_the_partner_marketplace",
        "table": "bronze.orders_from_the_partner_marketplace",
        "read": 10_250_000,
        "inserted": 10_000_000,
        "updated": 125_000,
        "unchanged": 120_000,
        "deleted": 5_000,
        "rejected": 1_234,
        "held_back": 4_321,
        "files_loaded": 1_460,
        "files_skipped": 1_200,
        "files_moved": 12,
        "seconds": 1234.567,
    },
    {"source": "sqlite:app", "table": "raw_app.users", "read": 5_000, "inserted": 5_000, "seconds": 0.1},
]
SYNCS = [
    {"sync": "reco_cache", "mode": "mirror", "status": "succeeded", "read": 25_805, "inserted": 2_581, "seconds": 0.6},
    {
        "sync": "<script>alert(1)</script>",
        "mode": "upsert",
        "status": "failed",
        "read": 10,
        "inserted": 0,
        "updated": 3,
        "seconds": 0.2,
        "refreshed": ["a_mv"],
    },
]
DESTINATIONS = [
    {"sync": "reco_cache", "where": "redis reco:{user_id}", "rows or keys": 2_581},
    {"sync": "<script>alert(1)</script>", "where": "postgres crm.x", "rows or keys": 0},
]
LAYERS = [
    {"layer": layer, "table": table, "rows": rows}
    for layer, table, rows in [
        ("silver", "orders_clean", 50_766),
        ("intermediate", "int_valid_orders", 48_531),
        ("marts", "recommendations", 25_805),
        ("snapshots", "user_segments_history", 5_000),
        ("marts", "empty_mart", 0),
    ]
]


def _report() -> SimpleNamespace:
    return SimpleNamespace(
        generated={"users": 5_000, "orders": 50_766},
        loaded=LOADED,
        syncs=SYNCS,
        destinations=DESTINATIONS,
        layers=LAYERS,
        seconds={"load": 9.5, "dbt build": 38.0},
    )


@pytest.fixture
def html(tmp_path: Path) -> Path:
    return write_report(tmp_path / "report.html", _report(), "duckdb", GMV, 61.0, as_of=AS_OF, currency="EUR")


def test_the_partial_last_day_is_marked_and_the_axis_has_its_unit(html: Path) -> None:
    page = html.read_text()
    chart = page[page.index("<svg") : page.index("</svg>")]
    assert "partial day" in chart and 'stroke-dasharray="4 4"' in chart
    assert ">EUR</text>" in chart and 'aria-label="daily GMV in EUR"' in chart
    # the solid line stops at the last whole day; only the dashed segment reaches the partial one
    solid = re.search(r'<polyline points="([^"]+)"', chart)
    assert solid and len(solid[1].split()) == len(GMV) - 1
    assert "The last day, 2026-11-21, is partial" in page and "(2026-11-21 00:23 UTC)" in page
    assert re.findall(r">[\d,]+</text>", chart)[:4] == [
        ">0</text>",
        ">20,000</text>",
        ">40,000</text>",
        ">60,000</text>",
    ]


def test_zeros_are_written_one_way_and_all_zero_columns_are_named(html: Path) -> None:
    page = html.read_text()
    assert "·</td>" not in page, "no dot for zero"
    cells = re.findall(r'<td class="n">(.*?)</td>', page)
    assert '<span class="zero">0</span>' in cells and "0" not in cells
    # counts 0 for every sync become a note, not columns of zeros
    assert "0 for every sync: unchanged, healed, deleted, rejected." in page
    assert '<th class="n">healed</th>' not in page and '<th class="n">updated</th>' in page


def test_rows_and_keys_of_a_grouped_redis_sync_are_explained(html: Path) -> None:
    page = html.read_text()
    assert "25,805 model rows into 2,581 keys" in page
    assert "read counts the model's rows; the other counts are rows in Postgres and keys in Redis" in page


def test_every_value_is_escaped_and_every_layer_is_shown(html: Path) -> None:
    page = html.read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/" in page
    shown = re.findall(r'<div class="layer"><h3>(\w+)</h3>', page)
    assert shown == ["silver", "intermediate", "marts", "snapshots"]


def test_a_partial_day_needs_the_data_to_end_during_it() -> None:
    assert partial_last_day(GMV, AS_OF) == DAYS[-1]
    assert partial_last_day(GMV, dt.datetime(2026, 11, 21, 23, 59, 59)) is None, "a whole day"
    assert partial_last_day(GMV, dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.UTC)) is None, "no orders on the last day"
    assert partial_last_day(GMV, dt.datetime(2026, 11, 21, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))) is None
    assert partial_last_day(GMV, None) is None


def test_grid_lines_are_round_numbers() -> None:
    assert nice_levels(81_688) == [0, 25_000, 50_000, 75_000, 100_000]
    assert nice_levels(99) == [0, 25, 50, 75, 100]
    assert nice_levels(0) == [0, 1]


def test_a_postgres_demo_has_its_own_report(tmp_path: Path) -> None:
    assert report_path(tmp_path, "duckdb") == tmp_path / "report.html"
    assert report_path(tmp_path, "postgres") == tmp_path / "report-postgres.html"


MEASURE = """<script>
const page = document.documentElement;
const over = [...document.querySelectorAll("table")].filter(t => t.getBoundingClientRect().right > page.clientWidth)
  .map(t => t.querySelector("th, td").textContent);
document.body.setAttribute("data-measured", JSON.stringify({width: page.scrollWidth, over: over}));
</script>"""


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs Debian's chromium (apt-get install chromium)")
def test_every_table_fits_a_1200_px_window_in_a_real_browser(html: Path, tmp_path: Path) -> None:
    measured = tmp_path / "measured.html"
    measured.write_text(html.read_text().replace("</body>", MEASURE + "</body>"))
    done = subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,900", "--dump-dom", measured.as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r'data-measured="([^"]+)"', done.stdout)
    assert found, done.stderr[-2000:]
    result = found[1].replace("&quot;", '"')
    assert '"over":[]' in result, result
    width = int(re.search(r'"width":(\d+)', result)[1])  # type: ignore[index]
    assert width <= 1200, result
