# roundtrip: every command a user needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
DBT := $(BIN)/dbt --no-use-colors
DBT_FLAGS := --project-dir . --profiles-dir profiles
TARGET ?= duckdb
SYNC ?= all
# pytest arguments, e.g. make test PYTEST_ARGS="-m 'not slow' -x"
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup demo test lint generate load dbt-build dbt-compile-bigquery docs docs-serve reverse-sync syncs services clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m roundtrip install-extensions
	touch $@

setup: $(VENV)/.installed  ## create .venv, install pinned deps and DuckDB extensions (offline-safe)
	@$(PY) -c "from roundtrip.services import postgres_bin_dir, redis_server_binary; print('postgres binaries:', postgres_bin_dir()); print('redis-server:', redis_server_binary())"

demo: setup  ## the main job: generate -> load -> dbt build -> reverse syncs -> summary
	$(PY) -m roundtrip demo $(DEMO_ARGS)

test: setup  ## the test suite (starts its own Postgres and Redis)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: setup  ## ruff on Python, sqlfluff (dbt templater) on the models
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint models macros snapshots analyses

generate: setup  ## sample data only (catalog to ROUNDTRIP_POSTGRES_URL if set)
	$(PY) -m roundtrip generate $(GEN_ARGS)

load: setup  ## run every loader into the warehouse (TARGET=duckdb|postgres|bigquery)
	$(PY) -m loaders sqlite --target $(TARGET)
	$(PY) -m loaders sql --target $(TARGET)
	$(PY) -m loaders files --target $(TARGET)

dbt-build: setup  ## dbt build on TARGET (default duckdb)
	$(DBT) build $(DBT_FLAGS) --target $(TARGET)

dbt-compile-bigquery: setup  ## compile for BigQuery offline (no credentials, nothing sent)
	ROUNDTRIP_BQ_METHOD=oauth-secrets ROUNDTRIP_BQ_TOKEN=offline ROUNDTRIP_BQ_API_ENDPOINT=http://127.0.0.1:9 \
		$(DBT) compile $(DBT_FLAGS) --target bigquery --no-populate-cache

docs: setup  ## generate the dbt docs site into target/
	$(DBT) docs generate $(DBT_FLAGS) --target $(TARGET)

docs-serve: docs  ## serve the dbt docs on http://127.0.0.1:8080
	$(DBT) docs serve $(DBT_FLAGS) --host 127.0.0.1 --port 8080

syncs: setup  ## list the reverse syncs declared in dbt
	$(DBT) parse $(DBT_FLAGS) >/dev/null
	$(PY) -m reverse_etl list

reverse-sync: setup  ## run reverse syncs (SYNC=name|all) to ROUNDTRIP_POSTGRES_URL / ROUNDTRIP_REDIS_URL
	$(PY) -m reverse_etl run --sync $(SYNC)

services: setup  ## start a throwaway Postgres and Redis in the foreground; prints their URLs
	$(PY) -m roundtrip services

clean:  ## remove generated data and dbt output (keeps .venv)
	rm -rf data target logs dbt_packages
