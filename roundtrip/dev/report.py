"""The demo's one-page HTML report: rows per layer, the daily GMV as a chart, what each sync did.

One self-contained file (inline CSS and SVG, no script, nothing fetched), written next to the
warehouse (``$ROUNDTRIP_DATA_DIR/report.html``) so it opens from disk in any browser. Every
value is escaped by Jinja's autoescape: model data never becomes markup.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

from jinja2 import Environment

COUNTS = ("read", "inserted", "updated", "unchanged", "healed", "deleted", "rejected")

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

<h2>Seconds per stage</h2>
<table>{% for stage, seconds in stages %}
<tr><td style="width: 11rem">{{ stage }}</td><td><div class="bar" style="width: {{ (100 * seconds / longest) | round(1) }}%"></div></td>
<td class="n" style="width: 5rem">{{ seconds }}</td></tr>{% endfor %}
</table>

<h2>What each reverse sync did</h2>
<table class="counts"><tr><th>sync</th><th>mode</th><th>status</th>{% for c in counts %}<th class="n">{{ c }}</th>{% endfor %}<th class="n">s</th></tr>
{% for s in syncs %}<tr><td>{{ s.sync }}{% if s.refreshed %}<div class="small">then refreshed {{ s.refreshed | join(", ") }}</div>{% endif %}</td>
<td>{{ s.mode }}</td><td class="{{ 'ok' if s.status.startswith('succeeded') else 'bad' }}">{{ s.status }}</td>
{% for c in counts %}<td class="n">{{ "{:,}".format(s.get(c) or 0) if s.get(c) else "·" }}</td>{% endfor %}
<td class="n">{{ s.seconds }}</td></tr>{% endfor %}
</table>

<h2>What the destinations hold (counted on the servers)</h2>
<table><tr><th>sync</th><th>where</th><th class="n">rows or keys</th></tr>
{% for d in destinations %}<tr><td>{{ d.sync }}</td><td>{{ d.where }}</td><td class="n">{{ "{:,}".format(d["rows or keys"]) }}</td></tr>{% endfor %}
</table>

<h2>Rows per layer</h2>
<div class="grid">
{% for layer, tables in layers %}<div class="layer"><h3>{{ layer }}</h3><table>
{% for t in tables %}<tr><td>{{ t.table }}</td><td class="n">{{ "{:,}".format(t.rows) }}</td></tr>{% endfor %}
</table></div>{% endfor %}
</div>

<h2>What was loaded</h2>
<div class="wide"><table class="counts"><tr>{% for k in loaded_columns %}<th{% if k != 'source' and k != 'table' %} class="n"{% endif %}>{{ k }}</th>{% endfor %}</tr>
{% for row in loaded %}<tr>{% for k in loaded_columns %}<td{% if k != 'source' and k != 'table' %} class="n"{% endif %}>{{ number(row.get(k, "")) }}</td>{% endfor %}</tr>{% endfor %}
</table></div>
</body></html>
"""


def gmv_chart(points: list[tuple[dt.date, Decimal | float]], width: int = 960, height: int = 260) -> str:
    """An inline SVG line chart of (day, gmv); axes labelled at the ends and the middle."""
    if not points:
        return "<p>no valid orders</p>"
    pad_left, pad_bottom, pad_top = 70, 28, 12
    values = [float(v) for _, v in points]
    top = max(values) * 1.08 or 1.0
    step = (width - pad_left - 10) / max(1, len(points) - 1)

    def x(i: int) -> float:
        return pad_left + i * step

    def y(v: float) -> float:
        return pad_top + (height - pad_top - pad_bottom) * (1 - v / top)

    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
    area = f"{x(0):.1f},{y(0):.1f} {line} {x(len(values) - 1):.1f},{y(0):.1f}"
    ticks = []
    for fraction in (0, 0.5, 1):
        value = top * fraction
        ticks.append(
            f'<line x1="{pad_left}" x2="{width - 10}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#e8ebf0"/>'
            f'<text x="{pad_left - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:,.0f}</text>'
        )
    labels = []
    last = len(points) - 1
    for i in sorted({0, last // 2, last}):
        anchor = "start" if i == 0 else "end" if i == last else "middle"
        labels.append(f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="{anchor}">{points[i][0].isoformat()}</text>')
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="daily GMV">'
        + "".join(ticks)
        + f'<polygon points="{area}" fill="#3b6fd8" fill-opacity="0.12"/>'
        + f'<polyline points="{line}" fill="none" stroke="#3b6fd8" stroke-width="2"/>'
        + "".join(labels)
        + "</svg>"
    )


def write_report(path: Path, report: Any, target: str, gmv: list[tuple[dt.date, Any]], total: float) -> Path:
    """Render the demo's report (a ``DemoReport``) to ``path``."""
    from markupsafe import Markup

    layers: dict[str, list[dict[str, Any]]] = {}
    for row in report.layers:
        layers.setdefault(row["layer"], []).append(row)
    stages = list(report.seconds.items())
    loaded_columns: list[str] = []
    for row in report.loaded:
        loaded_columns += [k for k in row if k not in loaded_columns]
    html = (
        Environment(autoescape=True)
        .from_string(TEMPLATE)
        .render(
            target=target,
            now=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            total=round(total, 1),
            generated=report.generated,
            chart=Markup(gmv_chart(gmv)),  # our own SVG: numbers and ISO dates only
            stages=stages,
            longest=max((s for _, s in stages), default=1) or 1,
            counts=COUNTS,
            syncs=report.syncs,
            destinations=report.destinations,
            layers=list(layers.items()),
            loaded=report.loaded,
            loaded_columns=loaded_columns,
            number=lambda v: f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else v,
        )
    )
    path.write_text(html)
    return path
