"""Grow a copy of the project the documented way, then run the fast tests there.

The project's tests must describe the project, not pin the demo's content: a user who adds a
mart and a sync (docs/reverse_etl.md, "Declaring a sync") must not see an existing test fail.
This script proves it on a copy of the tracked files (the worktree is never touched):

1. a new mart `category_sales` (one row per category: valid order lines, units, revenue) in
   `models/marts/`, described with an enforced contract in `models/marts/_marts__models.yml`;
2. a new sync `crm_category_sales` reading it, in `models/marts/_marts__exposures.yml`;
3. `pytest -m fast` in the copy, with this environment's `.venv`.

    .venv/bin/python scripts/grow_project_check.py [--keep] [-- extra pytest arguments]

Exit status: pytest's. Takes as long as the fast tests (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MART_SQL = """\
{#- One row per category: its valid order lines up to as_of. A mart added by scripts/grow_project_check.py. -#}
with

valid_orders as (
    select * from {{ ref('int_valid_orders') }}
),

category_sales as (
    select
        coalesce(category, 'unknown') as category,
        count(*) as order_lines,
        cast(sum(quantity) as bigint) as units_sold,
        cast(sum(amount) as decimal(18, 2)) as revenue
    from valid_orders
    group by 1
)

select * from category_sales
"""

MART_YAML = """
  - name: category_sales
    description: Grain, one row per category of the valid order lines up to `as_of`.
    config:
      contract: {enforced: "{{ var('enforce_contracts') }}"}
      group: reverse_syncs
      access: public
    columns:
      - name: category
        description: The catalog category ('unknown' when the item has none).
        data_type: *text
        constraints: [{type: not_null}]
        data_tests: [unique, not_null]
      - name: order_lines
        description: Valid order lines.
        data_type: bigint
      - name: units_sold
        description: Sum of their quantities.
        data_type: bigint
      - name: revenue
        description: Sum of their amounts.
        data_type: decimal(18, 2)
"""

EXPOSURE_YAML = """
  - name: crm_category_sales
    label: Category sales in the CRM
    type: application
    maturity: medium
    owner: {name: CRM team, email: crm@example.com}
    url: https://crm.example.com/category-sales
    description: Sales per category upserted into Postgres `crm.category_sales`.
    depends_on:
      - ref('category_sales')
    config:
      meta:
        sync:
          destination: postgres
          target: crm.category_sales
          mode: upsert
          primary_key: [category]
"""


def copy_project(into: Path) -> None:
    """The tracked files as they are in the worktree (uncommitted edits included)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    for shared in (".duckdb_extensions", ".tools"):  # installed by make setup, not tracked
        if (ROOT / shared).exists():
            (into / shared).symlink_to(ROOT / shared)


def grow(project: Path) -> None:
    (project / "models/marts/category_sales.sql").write_text(MART_SQL)
    models = project / "models/marts/_marts__models.yml"
    text = models.read_text()
    assert "&text" in text, "the *text anchor moved: update MART_YAML"
    models.write_text(text.rstrip("\n") + "\n" + MART_YAML)
    exposures = project / "models/marts/_marts__exposures.yml"
    exposures.write_text(exposures.read_text().rstrip("\n") + "\n" + EXPOSURE_YAML)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the grown copy and print where it is")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="roundtrip-grown-"))
    try:
        copy_project(folder)
        grow(folder)
        # a repository, as the user's is (some tests list the tracked files)
        for git in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "grown"]):
            subprocess.run(
                ["git", "-c", "user.name=grow", "-c", "user.email=grow@example.com", *git], cwd=folder, check=True
            )
        print(f"grown copy: {folder} (+ mart category_sales, + sync crm_category_sales)", flush=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ROUNDTRIP_", "DBT_"))},
            # the copy's packages, also in the subprocesses the tests start (`roundtrip`, `python -m`)
            "PYTHONPATH": str(folder),
        }
        started = time.perf_counter()
        command = [sys.executable, "-m", "pytest", "-m", "fast", "-q", "-p", "no:cacheprovider", *args.pytest_args]
        code = subprocess.run(command, cwd=folder, env=env).returncode
        print(f"fast tests on the grown copy: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
        return code
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
