"""The base every other package builds on: paths, errors, settings, secret redaction, CLI
support, dbt invocation, DuckDB connections, the bronze contract and SQL helpers.

It imports nothing of its users (loaders, reverse_etl, spark_jobs, roundtrip.dev,
roundtrip.cli): ``tests/test_layers.py`` fails on any such import.
"""
