"""The bronze record of each event stream (docs/contract.md), in file order.

The one list of the fields that the generator writes, the file loader expects
(``contract: orders`` in loaders/loaders.yml), the Spark jobs read and the tests build bronze
from. dbt declares the same fields in the ``events`` source (a YAML file cannot import this; a
test compares them).
"""

from __future__ import annotations

BRONZE_FIELDS: dict[str, tuple[str, ...]] = {
    "orders": (
        "ingestion_id",
        "order_id",
        "user_id",
        "item_id",
        "session_id",
        "quantity",
        "unit_price",
        "currency",
        "event_ts",
        "ingested_at",
    ),
    "clicks": (
        "ingestion_id",
        "event_id",
        "session_id",
        "user_id",
        "item_id",
        "event_type",
        "query",
        "event_ts",
        "ingested_at",
    ),
}
STREAMS = tuple(BRONZE_FIELDS)

# what the file loader adds to every bronze record: its landing file and physical line, when it
# was loaded, and the contract fields it lacked entirely (NULL: none; a field sent as null is not
# missing). Spark's reader computes the same _missing_fields (docs/contract.md, "Bronze records").
SOURCE_FILE, SOURCE_LINE, LOADED_AT = "_source_file", "_source_line", "_loaded_at"
MISSING_FIELDS = "_missing_fields"
