"""The edges of the jobs: read bronze files and the item catalog, read and write Parquet tables.

Tables are folders of Parquet files partitioned by ``event_date`` (``event_date=YYYY-MM-DD/``;
rows without a date go to Spark's ``event_date=__HIVE_DEFAULT_PARTITION__``). Writes use dynamic
partition overwrite: the partitions a run produces are swapped in when the job commits, every
other partition keeps its files byte for byte, and a failed job leaves the table as it was.
File-system calls go through Spark's own Hadoop layer, so any URL Spark writes to works.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator, Sequence
from datetime import date

from pyspark.errors import PySparkException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from roundtrip.core.contract import LOADED_AT, MISSING_FIELDS, SOURCE_FILE, SOURCE_LINE
from spark_jobs.config import BronzeFormat, CatalogSource, DateWindow
from spark_jobs.errors import SparkJobError

log = logging.getLogger(__name__)

PARTITION = "event_date"
UNDATED = "__HIVE_DEFAULT_PARTITION__"  # where Spark puts rows whose event_date is NULL
# the file loader's extensions (loaders/sources/files.py), as Hadoop globs
_GLOBS = {"jsonl": "*.{jsonl,json,ndjson}", "csv": "*.csv", "parquet": "*.parquet"}
JDBC_DRIVER = "org.postgresql.Driver"


# ---------------------------------------------------------------- errors


@contextlib.contextmanager
def spark_errors(what: str) -> Iterator[None]:
    """Spark and JVM errors -> one SparkJobError naming what was being done (the file or table
    at fault is in Spark's own message, e.g. FAILED_READ_FILE names the file)."""
    from py4j.protocol import Py4JJavaError

    try:
        yield
    except (PySparkException, Py4JJavaError) as exc:
        text = str(exc.java_exception if isinstance(exc, Py4JJavaError) else exc)
        if "org.postgresql.Driver" in text and "ClassNotFound" in text:
            raise SparkJobError(
                f"{what}: the PostgreSQL JDBC driver is not on Spark's classpath: install Debian's "
                "libpostgresql-jdbc-java (make setup) or point ROUNDTRIP_SPARK_JDBC_JAR at postgresql.jar"
            ) from exc
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("at ")]
        raise SparkJobError(f"{what}: {' '.join(lines[:4])[:1500]}") from exc


# ---------------------------------------------------------------- bronze and catalog


def read_bronze(spark: SparkSession, path: str, fmt: BronzeFormat, columns: Sequence[str]) -> DataFrame:
    """Every file under ``path`` (all ``dt=`` folders), every field as text, as the warehouse's
    file loader reads them, plus ``_missing_fields`` and the loader's lineage (``LINEAGE``).
    JSON numbers keep their text ('12.5' stays '12.5'). What the loader holds back is skipped
    here: a JSON line that is not one record (``records_from_lines``), a CSV record with the
    wrong number of fields."""
    text_schema = StructType([StructField(c, StringType()) for c in columns])
    reader = spark.read.option("recursiveFileLookup", "true").option("pathGlobFilter", _GLOBS[fmt])
    with spark_errors(f"reading bronze {path}"):
        if fmt == "jsonl":
            lines = reader.option("lineSep", "\n").text(path).select("value", *_file_lineage())
            return records_from_lines(number_lines(lines), columns)
        if fmt == "csv":
            records = (
                reader.schema(text_schema)
                .options(header=True, enforceSchema=False, mode="DROPMALFORMED", multiLine=True, escape='"')
                .csv(path)
                .select(*columns, F.lit(None).cast("string").alias(MISSING_FIELDS), *_file_lineage(block=False))
            )
            return number_records(records).select(*columns, MISSING_FIELDS, *LINEAGE)
        raw = reader.parquet(path)
    unexpected = [c for c in raw.columns if c not in columns]
    if unexpected:
        raise SparkJobError(f"{path}: unexpected column(s) {unexpected}; expected {list(columns)}")
    missing = ",".join(c for c in columns if c not in raw.columns) or None
    return raw.select(
        *[(F.col(c).cast("string") if c in raw.columns else F.lit(None).cast("string")).alias(c) for c in columns],
        F.lit(missing).cast("string").alias(MISSING_FIELDS),
        *_file_lineage(block=False),
        (F.col("_metadata.row_index") + 1).alias(SOURCE_LINE),
    ).select(*columns, MISSING_FIELDS, *LINEAGE)


# ---------------------------------------------------------------- lineage

# What the file loader records of every bronze record, and Spark too: the landing file (its path
# as the loader writes it: a local file as a plain path), the record's line in it, and when the
# file landed (its modification time; the loader records when it loaded it).
LINEAGE = (SOURCE_FILE, SOURCE_LINE, LOADED_AT)


def _file_lineage(block: bool = True) -> list[Column]:
    """``_source_file`` and ``_loaded_at`` of every row, from Spark's hidden ``_metadata``
    (and ``_block``, where the row's split of the file starts, for ``number_lines``)."""
    uri = F.col("_metadata.file_path")  # percent-encoded; '+' is a plus, not a space
    path = F.url_decode(F.replace(uri, F.lit("+"), F.lit("%2B")))
    return [
        F.regexp_replace(path, r"^file:(//)?(?=/)", "").alias(SOURCE_FILE),
        F.col("_metadata.file_modification_time").cast("timestamp_ntz").alias(LOADED_AT),
        *([F.col("_metadata.file_block_start").alias("_block")] if block else []),
    ]


def number_lines(lines: DataFrame) -> DataFrame:
    """``_source_line``: the physical line (1-based, blank lines counted) of each row of a text
    read. Spark splits a big file into blocks; each line belongs to the one block it starts in
    (Hadoop's line reader), and a block's lines come in file order with consecutive
    ``monotonically_increasing_id``s. So a line's number is the lines of the earlier blocks of
    its file plus its place in its block: one small aggregate, no sort of the lines."""
    with_id = lines.withColumn("_row", F.monotonically_increasing_id())
    blocks = with_id.groupBy(SOURCE_FILE, "_block").agg(F.count("*").alias("_lines"), F.min("_row").alias("_first"))
    earlier = F.sum("_lines").over(
        Window.partitionBy(SOURCE_FILE).orderBy("_block").rowsBetween(Window.unboundedPreceding, -1)
    )
    offsets = blocks.select(SOURCE_FILE, "_block", "_first", F.coalesce(earlier, F.lit(0)).alias("_before"))
    return (
        with_id.join(F.broadcast(offsets), [SOURCE_FILE, "_block"])
        .withColumn(SOURCE_LINE, F.col("_before") + F.col("_row") - F.col("_first") + 1)
        .drop("_row", "_block", "_first", "_before")
    )


def number_records(records: DataFrame) -> DataFrame:
    """``_source_line`` of CSV records: the record's number plus one (the header line). That is
    the loader's physical line unless an earlier record of the file spans lines (a quoted line
    break), is blank or was dropped as malformed; Spark's CSV reader gives no line numbers."""
    with_id = records.withColumn("_row", F.monotonically_increasing_id())
    place = F.row_number().over(Window.partitionBy(SOURCE_FILE).orderBy("_row"))
    return with_id.withColumn(SOURCE_LINE, (place + 1).cast("bigint")).drop("_row")


# a \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one, or the other way round: DuckDB
# refuses the line, Jackson would read it as '?'
_LONE_SURROGATE = (
    r"(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
# RFC 8259 only, as the loader: no NaN / Infinity, no single quotes, no comments, no raw controls
_STRICT_JSON = {
    "mode": "PERMISSIVE",
    "allowNonNumericNumbers": "false",
    "allowSingleQuotes": "false",
    "allowComments": "false",
    "allowUnquotedControlChars": "false",
    "columnNameOfCorruptRecord": "_corrupt_record",
}


def records_from_lines(lines: DataFrame, columns: Sequence[str]) -> DataFrame:
    """JSON lines (a ``value`` column of text lines) -> the records, as the file loader keeps
    them (loaders/sources/jsonl.py): a line is a record when it is valid UTF-8 without a NUL
    byte and one JSON object, with no field twice, none outside ``columns``, no lone surrogate
    escape and no NUL character in a value. A byte-order mark at the start of a line is not
    data; blank lines are not records. ``_missing_fields``: the columns the object lacks."""
    schema = StructType(
        [*(StructField(c, StringType()) for c in columns), StructField("_corrupt_record", StringType())]
    )
    fields = F.array(*[F.lit(c) for c in columns])
    line = F.regexp_replace(F.col("value"), "^\ufeff", "")
    lineage = [c for c in LINEAGE if c in lines.columns]  # passed through when the lines have it
    # UTF-8 is checked on the bytes as read (a regexp_replace would have replaced bad bytes)
    text = lines.select(F.is_valid_utf8("value").alias("utf8"), line.alias("line"), *lineage)
    parsed = text.select(
        "utf8",
        "line",
        *lineage,
        F.json_object_keys("line").alias("keys"),
        F.from_json("line", schema, _STRICT_JSON).alias("record"),
    )
    values = [F.col("record").getField(c) for c in columns]
    is_record = (
        F.col("utf8")
        & ~F.col("line").contains("\u0000")
        & F.col("keys").isNotNull()
        & F.col("record").getField("_corrupt_record").isNull()
        & (F.expr("json_array_length('[' || line || ']')") == 1)  # nothing after the object
        & (F.size("keys") == F.size(F.array_distinct("keys")))
        & F.forall("keys", lambda key: F.array_contains(fields, key))
        & ~F.col("line").rlike(_LONE_SURROGATE)
        & ~F.exists(F.array(*values), lambda value: F.coalesce(value.contains("\u0000"), F.lit(False)))
    )
    missing = F.nullif(F.concat_ws(",", *[F.when(~F.array_contains("keys", c), F.lit(c)) for c in columns]), F.lit(""))
    return parsed.where(is_record).select(
        *[v.alias(c) for v, c in zip(values, columns)], missing.alias(MISSING_FIELDS), *lineage
    )


def read_catalog(spark: SparkSession, source: CatalogSource) -> DataFrame:
    """``item_id``, ``item_title``, ``category`` of every catalog item; an item_id that appears
    twice is an error (it would duplicate the order lines it enriches)."""
    with spark_errors(f"reading the item catalog from {source.describe()}"):
        if source.parquet_path:
            raw = spark.read.parquet(source.parquet_path)
        else:
            reader = (
                spark.read.format("jdbc")
                .option("url", source.jdbc_url)
                .option("dbtable", source.table)
                .option("driver", JDBC_DRIVER)
            )
            if source.user:
                reader = reader.option("user", source.user)
            if source.password:
                reader = reader.option("password", source.password)
            raw = reader.load()
        items = raw.select(F.col("item_id").cast("bigint"), F.col("title").alias("item_title"), "category")
        repeated = items.groupBy("item_id").count().where("count > 1").limit(1).collect()
    if repeated:
        raise SparkJobError(
            f"item catalog ({source.describe()}): item_id {repeated[0]['item_id']} appears {repeated[0]['count']} times"
        )
    return items


# ---------------------------------------------------------------- tables


def in_window(window: DateWindow, keep_undated: bool = False) -> F.Column:
    """The rows of a run: dates inside the window (and, for silver, the undated rows)."""
    if window.is_full:
        return F.lit(True)
    inside = F.col(PARTITION).between(F.lit(window.start), F.lit(window.end))
    return (inside | F.col(PARTITION).isNull()) if keep_undated else inside


def read_table(spark: SparkSession, path: str) -> DataFrame:
    """A table written by these jobs; ``event_date`` typed as a date."""
    if not _fs_exists(spark, path):
        raise SparkJobError(f"no table at {path}: run the job that writes it first (see `python -m spark_jobs --help`)")
    with spark_errors(f"reading {path}"):
        df = spark.read.parquet(path)
        return df.withColumn(PARTITION, F.col(PARTITION).cast("date")) if PARTITION in df.columns else df


def write_partitions(df: DataFrame, path: str, window: DateWindow) -> None:
    """Replace the ``event_date`` partitions that ``df`` holds; then remove the partitions inside
    the window that the run no longer produces (a day whose rows are gone), so that a re-run
    always leaves the same table as a first run."""
    spark = df.sparkSession
    before = _partition_files(spark, path)
    with spark_errors(f"writing {path}"):
        (
            df.hint("rebalance", PARTITION)  # AQE sizes the files: one per day when small, split when big
            .write.mode("overwrite")
            .option("partitionOverwriteMode", "dynamic")
            .partitionBy(PARTITION)
            .parquet(path)
        )
    # a rewritten partition has new file names (Spark puts the write's UUID in them)
    after = _partition_files(spark, path)
    stale = [p for p, files in after.items() if before.get(p) == files and _in_scope(p, window)]
    for value in stale:
        log.info("removing partition %s=%s of %s: the run produced no rows for it", PARTITION, value, path)
        _fs_delete(spark, f"{path}/{PARTITION}={value}")


def replace_table(df: DataFrame, path: str) -> None:
    """A small unpartitioned table, replaced whole: written beside the old one, then swapped."""
    spark = df.sparkSession
    staging = f"{path.rstrip('/')}.staging-{uuid.uuid4().hex[:12]}"
    with spark_errors(f"writing {path}"):
        df.coalesce(1).write.mode("errorifexists").parquet(staging)
    _fs_delete(spark, path)
    _fs_rename(spark, staging, path)


def count_rows(spark: SparkSession, path: str, window: DateWindow, keep_undated: bool = False) -> int:
    """Rows the run left in the window (Parquet counts come from file footers)."""
    df = read_table(spark, path)
    return df.where(in_window(window, keep_undated)).count() if PARTITION in df.columns else df.count()


def _in_scope(value: str, window: DateWindow) -> bool:
    if window.is_full or value == UNDATED:
        return True
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return False
    assert window.start is not None and window.end is not None
    return window.start <= day <= window.end


# ---------------------------------------------------------------- Hadoop file system


def _hadoop(spark: SparkSession, path: str):  # type: ignore[no-untyped-def]
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def _fs_exists(spark: SparkSession, path: str) -> bool:
    fs, hpath = _hadoop(spark, path)
    return bool(fs.exists(hpath))


def _fs_delete(spark: SparkSession, path: str) -> None:
    fs, hpath = _hadoop(spark, path)
    if fs.exists(hpath):
        fs.delete(hpath, True)


def _fs_rename(spark: SparkSession, source: str, target: str) -> None:
    fs, hsource = _hadoop(spark, source)
    _, htarget = _hadoop(spark, target)
    if not fs.rename(hsource, htarget):
        raise SparkJobError(f"could not move {source} to {target}")


def _partition_files(spark: SparkSession, path: str) -> dict[str, frozenset[str]]:
    """``event_date`` value -> names of the files in that partition."""
    fs, hpath = _hadoop(spark, path)
    if not fs.exists(hpath):
        return {}
    found = {}
    prefix = f"{PARTITION}="
    for status in fs.listStatus(hpath):
        name = status.getPath().getName()
        if status.isDirectory() and name.startswith(prefix):
            found[name[len(prefix) :]] = frozenset(f.getPath().getName() for f in fs.listStatus(status.getPath()))
    return found
