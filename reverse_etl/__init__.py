"""Reverse ETL: copy rows that dbt models shaped into operational Postgres and Redis."""
