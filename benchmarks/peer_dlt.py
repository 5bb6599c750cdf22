"""dlt's merge of the mart into Postgres, as a dlt user writes it: ``python -m benchmarks.peer_dlt``.

One pipeline run per process: a resource yielding the mart's rows as Arrow batches read from
the DuckDB file, ``write_disposition="merge"`` on the primary key (dlt's default
``delete-insert`` strategy: a staging dataset, then one delete and one insert), written as CSV
files that dlt's Postgres loader sends by ``COPY`` (``loader_file_format="csv"``). dlt keeps no
fingerprint of what it sent: every run sends every row. Run by benchmarks/sync_peers.py, which
times the whole process.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

BATCH_ROWS = 100_000
# no usage events, no progress lines; its state lives in --pipelines-dir
DLT_ENV = {"RUNTIME__DLTHUB_TELEMETRY": "false", "RUNTIME__LOG_LEVEL": "ERROR"}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_dlt")
    parser.add_argument("warehouse", help="the DuckDB file holding the mart")
    parser.add_argument("relation", help="the mart, schema.table")
    parser.add_argument("postgres_url", help="destination (dlt needs a password in it; trust auth ignores it)")
    parser.add_argument("dataset", help="destination schema")
    parser.add_argument("table")
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("--primary-key", default="user_id")
    args = parser.parse_args()
    os.environ.update(DLT_ENV)

    import dlt
    import duckdb

    @dlt.resource(name=args.table, primary_key=args.primary_key, write_disposition="merge")
    def mart() -> Iterator[Any]:
        con = duckdb.connect(args.warehouse, read_only=True)
        try:
            yield from con.execute(f"select * from {args.relation}").fetch_record_batch(BATCH_ROWS)
        finally:
            con.close()

    pipeline = dlt.pipeline(
        pipeline_name="bench_peers",
        destination=dlt.destinations.postgres(args.postgres_url),
        dataset_name=args.dataset,
        pipelines_dir=args.pipelines_dir,
    )
    info = pipeline.run(mart(), loader_file_format="csv")
    info.raise_on_failed_jobs()
    print(info)


if __name__ == "__main__":
    main()
