"""The landing folder's files as fsspec sees them (local, ``gs://``, ``s3://``; Spark's ``s3a://``
too), and their format, detected from their extensions."""

from __future__ import annotations

from spark_jobs.config import BronzeFormat
from spark_jobs.errors import SparkJobError

STREAMS = ("orders", "clicks")
# the file loader's extensions (loaders/sources/files.py)
EXTENSIONS = {"jsonl": (".jsonl", ".json", ".ndjson"), "csv": (".csv",), "parquet": (".parquet",)}


def filesystem(url: str):  # type: ignore[no-untyped-def]
    import fsspec

    # Spark's Hadoop schemes -> fsspec's
    for hadoop, fsspec_scheme in (("s3a://", "s3://"), ("gs://", "gs://")):
        if url.startswith(hadoop):
            url = fsspec_scheme + url[len(hadoop) :]
    return fsspec.core.url_to_fs(url)


def detect_format(landing: str) -> BronzeFormat:
    """The format of the landing files, from their extensions (the generator's and the file
    loader's): one format for both streams, jsonl when there are no files yet. Files of two
    formats are an error naming both, never a silent pick."""
    found: dict[str, str] = {}
    for stream in STREAMS:
        fs, root = filesystem(f"{landing.rstrip('/')}/{stream}")
        if not fs.exists(root):
            continue
        for path in fs.find(root):
            for fmt, extensions in EXTENSIONS.items():
                if path.endswith(extensions):
                    found.setdefault(fmt, path)
    if len(found) > 1:
        examples = ", ".join(f"{fmt} ({path})" for fmt, path in sorted(found.items()))
        raise SparkJobError(f"{landing}: landing files of more than one format: {examples}; give --format")
    return next(iter(found), "jsonl")  # type: ignore[arg-type,return-value]
