"""The demo's one-page HTML report: rows per layer, the daily GMV as a chart, what each sync did.

One self-contained file (inline CSS and SVG, no script, nothing fetched), written next to the
warehouse (``$ROUNDTRIP_DATA_DIR/report.html``, ``report-postgres.html`` for a demo on the
Postgres warehouse: one never overwrites the other) so it opens from disk in any browser. It
fits a 1200 px window: count columns that are 0 in every row are named under their table rather
than shown, and a 0 is always written ``0``, greyed. Every value is escaped by Jinja's
autoescape: model data never becomes markup.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

from jinja2 import Environment

COUNTS = ("read", "inserted", "updated", "unchanged", "healed", "deleted", "rejected")
# the loaders' columns that are not counts
LOAD_TEXT = ("source", "table")

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>roundtrip demo report</title>
<style>
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 68rem;
         color: #1d2330; padding: 0 1rem; }
  h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
  .sub { color: #5b6475; margin-top: 0; }
  .cards { display: flex; gap: .8rem; flex-wrap: wrap; }
  .card { border: 1px solid #dde2ea; border-radius: 8px; padding: .6rem .9rem; min-width: 8rem; }
  .card b { display: block; font-size: 1.3rem; }
  table { border-collapse: collapse; width: 100%; margin-top: .5rem; }
  th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #e8ebf0; }
  td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
  .wide { overflow-x: auto; }  /* a table wider than the page scrolls by itself */
  table.counts th, table.counts td { padding: .3rem .35rem; font-size: .92em; }  /* the count tables' ten-odd columns in the page's width */
  .ok { color: #147a3d; } .bad { color: #b3261e; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(20rem, 1fr)); gap: 1rem; }
  .layer { border: 1px solid #dde2ea; border-radius: 8px; padding: .4rem .8rem; }
  .layer h3 { margin: .3rem 0; font-size: 1rem; }
  .bar { background: #3b6fd8; height: .8rem; border-radius: 3px; }
  svg text { font: 11px system-ui, sans-serif; fill: #5b6475; }
  .small { color: #5b6475; font-size: .8rem; }
  .zero { color: #a3abb8; }
  .note { color: #5b6475; font-size: .85rem; margin: .3rem 0 0; }
  th { vertical-align: bottom; }
</style></head>
<body>
<h1>roundtrip: the circle, end to end</h1>
<p class="sub">apps → loaders → warehouse ({{ target }}) → dbt (staging → silver → valid rows → gold and marts) → reverse syncs → Postgres and Redis.
Generated {{ now }} in {{ total }} s.</p>

<div class="cards">
{% for name, value in generated.items() %}<div class="card">{{ name }}<b>{{ "{:,}".format(value) }}</b></div>{% endfor %}
</div>

<h2>Daily GMV (gold.daily_gmv_metrics)</h2>
{{ chart }}
<p class="note">GMV per UTC day{% if currency %}, in {{ currency }}{% endif %}: the sum of the valid, original order lines up to as_of{% if as_of %} ({{ as_of }} UTC){% endif %}.{% if partial %} The last day, {{ partial }}, is partial: the data ends during it, so its point is hollow and its line dashed.{% endif %}</p>

<h2>Seconds per stage</h2>
<table>{% for stage, seconds in stages %}
<tr><td style="width: 11rem">{{ stage }}</td><td><div class="bar" style="width: {{ (100 * seconds / longest) | round(1) }}%"></div></td>
<td class="n" style="width: 5rem">{{ seconds }}</td></tr>{% endfor %}
</table>

<h2>What each reverse sync did</h2>
<div class="wide"><table class="counts"><tr><th>sync</th><th>mode</th><th>status</th>{% for c in sync_counts %}<th class="n">{{ c }}</th>{% endfor %}<th class="n">seconds</th></tr>
{% for s in syncs %}<tr><td>{{ breakable(s.sync) }}{% if s.refreshed %}<div class="small">then refreshed {{ s.refreshed | join(", ") }}</div>{% endif %}{% if s.sync in grouped %}<div class="small">{{ grouped[s.sync] }}</div>{% endif %}</td>
<td>{{ s.mode }}</td><td class="{{ 'ok' if s.status.startswith('succeeded') else 'bad' }}">{{ s.status }}</td>
{% for c in sync_counts %}<td class="n">{{ number(s.get(c) or 0) }}</td>{% endfor %}
<td class="n">{{ s.seconds }}</td></tr>{% endfor %}
</table></div>
<p class="note">read counts the model's rows; the other counts are rows in Postgres and keys in Redis.{% if sync_zero %} 0 for every sync: {{ sync_zero | join(", ") }}.{% endif %}</p>

<h2>What the destinations hold (counted on the servers)</h2>
<table><tr><th>sync</th><th>where</th><th class="n">rows or keys</th></tr>
{% for d in destinations %}<tr><td>{{ breakable(d.sync) }}</td><td>{{ breakable(d.where) }}</td><td class="n">{{ number(d["rows or keys"]) }}</td></tr>{% endfor %}
</table>

<h2>Rows per layer</h2>
<div class="grid">
{% for layer, tables in layers %}<div class="layer"><h3>{{ layer }}</h3><table>
{% for t in tables %}<tr><td>{{ t.table }}</td><td class="n">{{ number(t.rows) }}</td></tr>{% endfor %}
</table></div>{% endfor %}
</div>

<h2>What was loaded</h2>
<div class="wide"><table class="counts"><tr>{% for k in loaded_columns %}<th{% if k not in load_text %} class="n"{% endif %}>{{ k | replace("_", " ") }}</th>{% endfor %}</tr>
{% for row in loaded %}<tr>{% for k in loaded_columns %}{% if k in load_text %}<td>{{ breakable(row.get(k, "")) }}</td>{% else %}<td class="n">{{ number(row.get(k, 0)) }}</td>{% endif %}{% endfor %}</tr>{% endfor %}
</table></div>
{% if loaded_zero %}<p class="note">0 for every source: {{ loaded_zero | join(", ") }}.</p>{% endif %}
</body></html>
"""


def gmv_chart(
    points: list[tuple[dt.date, Decimal | float]],
    unit: str = "",
    partial_last: bool = False,
    width: int = 960,
    height: int = 280,
) -> str:
    """An inline SVG line chart of (day, gmv): the y axis in ``unit`` at 0, half and the top,
    dates at the ends and the middle. ``partial_last``: the last day is partial (the data ends
    during it): its segment dashed, its point hollow, labelled, so a short day does not read
    as an outage."""
    if not points:
        return "<p>no valid orders</p>"
    pad_left, pad_bottom, pad_top, pad_right = 78, 28, 22, 14
    values = [float(v) for _, v in points]
    levels = nice_levels(max(values))
    top = levels[-1]
    step = (width - pad_left - pad_right) / max(1, len(points) - 1)

    def x(i: int) -> float:
        return pad_left + i * step

    def y(v: float) -> float:
        return pad_top + (height - pad_top - pad_bottom) * (1 - v / top)

    whole = values[:-1] if partial_last and len(values) > 1 else values
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(whole))
    area = f"{x(0):.1f},{y(0):.1f} {line} {x(len(whole) - 1):.1f},{y(0):.1f}"
    ticks = []
    decimals = 0 if levels[1] >= 1 else 2
    for value in levels:
        ticks.append(
            f'<line x1="{pad_left}" x2="{width - pad_right}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#e8ebf0"/>'
            f'<text x="{pad_left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:,.{decimals}f}</text>'
        )
    if unit:
        ticks.append(f'<text x="{pad_left - 6}" y="{pad_top - 8}" text-anchor="end">{_svg_text(unit)}</text>')
    labels = []
    last = len(points) - 1
    for i in sorted({0, last // 2, last}):
        anchor = "start" if i == 0 else "end" if i == last else "middle"
        labels.append(f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="{anchor}">{points[i][0].isoformat()}</text>')
    partial = ""
    if partial_last and len(values) > 1:
        (x0, y0), (x1, y1) = (x(last - 1), y(values[-2])), (x(last), y(values[-1]))
        partial = (
            f'<rect x="{x0 + step / 2:.1f}" y="{pad_top}" width="{x1 - x0 - step / 2:.1f}" '
            f'height="{height - pad_top - pad_bottom}" fill="#f3f4f7"/>'
            f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" stroke="#3b6fd8" stroke-width="2" '
            'stroke-dasharray="4 4"/>'
            f'<circle cx="{x1:.1f}" cy="{y1:.1f}" r="4" fill="#fff" stroke="#3b6fd8" stroke-width="2"/>'
            f'<text x="{x1 - 8:.1f}" y="{y1 - 10:.1f}" text-anchor="end">partial day</text>'
        )
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="daily GMV{" in " + _svg_text(unit) if unit else ""}">'
        + partial
        + "".join(ticks)
        + f'<polygon points="{area}" fill="#3b6fd8" fill-opacity="0.12"/>'
        + f'<polyline points="{line}" fill="none" stroke="#3b6fd8" stroke-width="2"/>'
        + "".join(labels)
        + "</svg>"
    )


def nice_levels(highest: float) -> list[float]:
    """Round grid lines from 0 to just above ``highest``: 4 or 5 steps of 1, 2, 2.5 or 5 times a power of 10."""
    if highest <= 0:
        return [0.0, 1.0]
    raw = highest / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(highest / step) + 1)]


def _svg_text(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def partial_last_day(points: list[tuple[dt.date, Any]], as_of: dt.datetime | None) -> dt.date | None:
    """The chart's last day when the data ends during it (``as_of``, the newest event, falls on
    it before its last second); None when it is whole or unknown."""
    if not points or as_of is None:
        return None
    last = points[-1][0]
    as_of = as_of.astimezone(dt.UTC).replace(tzinfo=None) if as_of.tzinfo else as_of
    end_of_day = dt.datetime.combine(last, dt.time(23, 59, 59))
    return last if as_of.date() == last and as_of < end_of_day else None


def report_path(data_dir: Path, target: str) -> Path:
    """``report.html`` for the default warehouse, ``report-<target>.html`` for the others: a
    demo on Postgres never overwrites the DuckDB demo's report."""
    return data_dir / ("report.html" if target == "duckdb" else f"report-{target}.html")


def number(value: Any) -> Any:
    """A count as the tables show it: thousands separators, and a 0 always written ``0``, greyed."""
    from markupsafe import Markup

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if value == 0:
        return Markup('<span class="zero">0</span>')
    return f"{value:,}" if isinstance(value, int) else value


def breakable(text: Any) -> Any:
    """Escaped text that may wrap after ``.``, ``_``, ``:`` and ``/`` (a long table name in a
    narrow column), never inside a word of letters."""
    from markupsafe import Markup, escape

    return Markup(re.sub(r"([._:/])(?=\w)", r"\1<wbr>", str(escape(text))))


def all_zero(rows: list[dict[str, Any]], columns: list[str]) -> list[str]:
    """The count columns that are 0 (or absent) in every row."""
    return [c for c in columns if all(not r.get(c) for r in rows)]


def grouped_keys(report: Any) -> dict[str, str]:
    """For each Redis sync whose model rows were gathered into fewer keys (``value: list``), why
    its counts differ: ``25,805 rows into 2,581 keys``. From the counts and what Redis holds."""
    held = {d["sync"]: d for d in report.destinations}
    notes = {}
    for sync in report.syncs:
        where = held.get(sync["sync"], {})
        keys = where.get("rows or keys")
        if str(where.get("where", "")).startswith("redis") and keys and (sync.get("read") or 0) > keys:
            notes[sync["sync"]] = (
                f"{sync['read']:,} model rows into {keys:,} keys: the rows that share a key are written as one "
                "JSON list, so the counts after read are keys"
            )
    return notes


def gmv_facts(target: str, settings: Any = None) -> tuple[dt.datetime | None, str | None]:
    """(as_of, currency) of the build, for the chart: the newest valid event (``int_as_of``) and
    the currency of the valid orders when there is one. (None, None) when they cannot be read."""
    import logging

    from roundtrip.core.settings import load_settings

    settings = settings or load_settings()
    queries = (
        "select max(as_of) from intermediate.int_as_of",
        "select min(currency), count(distinct currency) from silver.orders_clean where is_valid and not is_duplicate",
    )
    try:
        if target == "postgres":
            import psycopg

            with psycopg.connect(settings.secret("warehouse_url")) as conn:
                results = [conn.execute(q).fetchone() for q in queries]
        else:
            from roundtrip.core.duckdb_extensions import connect

            con = connect(settings.duckdb_path, read_only=True)
            try:
                results = [con.execute(q).fetchone() for q in queries]
            finally:
                con.close()
    except Exception as exc:  # the chart is drawn without them
        logging.getLogger(__name__).debug("as_of and currency not read: %s", exc)
        return None, None
    as_of = results[0][0] if results[0] else None
    currency = results[1][0] if results[1] and results[1][1] == 1 else None
    return as_of, currency


def write_report(
    path: Path,
    report: Any,
    target: str,
    gmv: list[tuple[dt.date, Any]],
    total: float,
    as_of: dt.datetime | None = None,
    currency: str | None = None,
) -> Path:
    """Render the demo's report (a ``DemoReport``) to ``path``. ``as_of`` (the newest event)
    marks a partial last day on the chart; ``currency`` is its unit (default: read from the
    warehouse, ``gmv_facts``)."""
    from markupsafe import Markup

    if as_of is None and currency is None:
        as_of, currency = gmv_facts(target)
    layers: dict[str, list[dict[str, Any]]] = {}
    for row in report.layers:
        layers.setdefault(row["layer"], []).append(row)
    stages = list(report.seconds.items())
    loaded_columns: list[str] = []
    for row in report.loaded:
        loaded_columns += [k for k in row if k not in loaded_columns]
    loaded_zero = all_zero(report.loaded, [k for k in loaded_columns if k not in (*LOAD_TEXT, "seconds")])
    sync_zero = all_zero(report.syncs, list(COUNTS))
    partial = partial_last_day(gmv, as_of)
    html = (
        Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            target=target,
            now=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            total=round(total, 1),
            generated=report.generated,
            chart=Markup(gmv_chart(gmv, currency or "", partial is not None)),  # our own SVG, text escaped
            currency=currency,
            as_of=as_of.strftime("%Y-%m-%d %H:%M") if as_of else None,
            partial=partial.isoformat() if partial else None,
            stages=stages,
            longest=max((s for _, s in stages), default=1) or 1,
            sync_counts=[c for c in COUNTS if c not in sync_zero],
            sync_zero=sync_zero,
            grouped=grouped_keys(report),
            syncs=report.syncs,
            destinations=report.destinations,
            layers=list(layers.items()),
            loaded=report.loaded,
            loaded_columns=[k for k in loaded_columns if k not in loaded_zero],
            loaded_zero=[k.replace("_", " ") for k in loaded_zero],
            load_text=LOAD_TEXT,
            number=number,
            breakable=breakable,
        )
    )
    path.write_text(html)
    return path
