"""roundtrip's Postgres sync raced against its peers, each a process, on one mart and one server.

The peers (benchmarks/peer_tools.py: dlt's merge, sling incremental and full refresh, drt) and
``python -m reverse_etl run`` sync the same ``user_segments``-shaped mart (``size`` rows, built
by benchmarks/sync_data.py) from the same DuckDB file into tables of their own on the same
Postgres server, in four scenarios run in order:

1. first sync: an empty destination, no state;
2. 1 % changed: ``lifetime_value`` of every 100th user;
3. nothing changed;
4. every row changed: ``engagement_score`` of every user.

Each run is the whole process, start to exit (interpreter, imports, connections included, as a
user waits for it), with the peak resident memory of its process tree. Before each run Postgres
checkpoints (so one tool's dirty pages are not written during the next one's time); after it, the
tool's table is read back and compared with the mart (benchmarks/destination_check.py): a wrong
copy raises and no figure is reported. roundtrip's printed counts are checked too. The tools take
turns at going first from one repetition to the next; the best of the repetitions is kept.

Then, once: the CLI's start, ``python -m benchmarks.cli_start run ...`` (the CPU time the process
had used at its first database call; see benchmarks/cli_start.py), best of three unchanged runs.
Targets (issue 26): roundtrip's time / each peer's ≤ 1.0 in every scenario; the start ≤ 0.3 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.core import Context, Result, environment, human
from benchmarks.destination_check import check_equal
from benchmarks.peer_tools import MART, Race, Roundtrip, Tool, tools
from benchmarks.processes import measure
from benchmarks.sync_data import build_model, change_rows

NAME = "sync_peers"
SCENARIOS = ("first sync", "1 % changed", "nothing changed", "every row changed")
START_RUNS = 3


def expected_counts(scenario: str, n: int, changed: int) -> dict[str, int]:
    """What roundtrip must say it did."""
    return {
        "first sync": {"inserted": n, "updated": 0},
        "1 % changed": {"inserted": 0, "updated": changed},
        "nothing changed": {"inserted": 0, "updated": 0},
        "every row changed": {"inserted": 0, "updated": n},
    }[scenario]


def checkpoint(race: Race) -> None:
    with contextlib.suppress(psycopg.Error):  # an external server may not let us
        race.execute("checkpoint")


def one_run(tool: Tool, race: Race, expected: dict[str, int]) -> dict[str, Any]:
    checkpoint(race)
    measured = measure(tool.command(), tool.env, tool.cwd())
    said = tool.check(measured, expected)
    rows = check_equal(race.warehouse, MART, race.url, tool.table, tool.label)
    return {"seconds": measured.seconds, "peak_rss_mb": measured.peak_rss_mb, "rows": rows, **said}


def race_once(race: Race, order: list[Tool], n: int, log: dict[str, Any]) -> None:
    """One repetition: a fresh mart and empty destinations, then the four scenarios."""
    build_model(race.warehouse, n)
    for tool in order:
        tool.reset()
    changed = 0
    for scenario in SCENARIOS:
        if scenario == "1 % changed":
            changed = change_rows(race.warehouse, 100)
        elif scenario == "every row changed":
            change_rows(race.warehouse, 1, "engagement_score")
        load = os.getloadavg()[0]
        took = []
        for tool in order:
            run = one_run(tool, race, expected_counts(scenario, n, changed))
            log[scenario][tool.name].append(run)
            took.append(f"{tool.name} {run['seconds']:.2f}s")
        print(f"  {scenario} (load {load:.1f}): {', '.join(took)}", flush=True)
        log["load"].append({"scenario": scenario, "before": load, "after": os.getloadavg()[0]})


def cli_start(tool: Roundtrip, folder: Path) -> dict[str, Any]:
    """The CLI's start on an unchanged mart: CPU seconds at its first database call (best of
    START_RUNS), with what that call was."""
    out = folder / "cli_start.json"
    runs = []
    for _ in range(START_RUNS):
        command = [sys.executable, "-m", "benchmarks.cli_start", *tool.command()[3:]]
        measured = measure(command, {**tool.env, "BENCH_FIRST_CALL_FILE": str(out)})
        tool.check(measured, {"inserted": 0, "updated": 0})
        runs.append({**json.loads(out.read_text()), "process_seconds": measured.seconds})
    return min(runs, key=lambda r: r["cpu_seconds"]) | {"runs": runs}


def run(ctx: Context) -> list[Result]:
    n = ctx.size
    folder = ctx.path(NAME)
    race = Race(folder, folder / "warehouse.duckdb", ctx.postgres())
    build_model(race.warehouse, n)  # the manifest's parse opens the warehouse
    with environment(ROUNDTRIP_DUCKDB_PATH=str(race.warehouse)):
        raced = tools(race, ctx.peers)
    log: dict[str, Any] = {s: {t.name: [] for t in raced} for s in SCENARIOS} | {"load": []}
    started = time.perf_counter()
    for rep in range(ctx.repeat):
        shift = rep % len(raced)
        race_once(race, raced[shift:] + raced[:shift], n, log)
    race_seconds = time.perf_counter() - started
    roundtrip, peers = raced[0], raced[1:]
    start = cli_start(roundtrip, folder)  # type: ignore[arg-type]

    def best(scenario: str, tool: Tool) -> float:
        return min(r["seconds"] for r in log[scenario][tool.name])

    def peak(tool: Tool) -> float:
        return max(r["peak_rss_mb"] for s in SCENARIOS for r in log[s][tool.name])

    details = {"runs": log, "race_seconds": race_seconds, "cli_start": start, "peers": [t.label for t in peers]}
    results: list[Result] = []
    for scenario in SCENARIOS:
        for peer in peers:
            results.append(
                Result(NAME, f"s, {scenario} ({human(n)} rows)", best(scenario, roundtrip), "s",
                       best(scenario, peer), peer.label, "<= 1.0", details=details if not results else {})
            )  # fmt: skip
    for peer in peers:
        results.append(
            Result(NAME, "peak RSS MB, any scenario", peak(roundtrip), "MB", peak(peer), peer.label,
                   note="the process tree's resident memory")
        )  # fmt: skip
    unchanged = min(log["nothing changed"][roundtrip.name], key=lambda r: r["seconds"])
    around = unchanged["seconds"] - (unchanged.get("in_process_seconds") or 0)
    results += [
        Result(NAME, f"CPU s, the CLI's start to its first database call ({start['what']})", start["cpu_seconds"],
               "s", target="<= 0.3 s", note=f"{start['modules']} modules imported by then"),
        Result(NAME, "s, the CLI process around the sync (start, exit), nothing changed", around, "s",
               unchanged["seconds"], "the whole process", note="its fixed cost"),
    ]  # fmt: skip
    return results
