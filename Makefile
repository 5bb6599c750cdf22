# roundtrip: every command a user needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# dbt through the project's CLI: its profiles, the settings it derives (ROUNDTRIP_PG_* from
# ROUNDTRIP_WAREHOUSE_URL), no colour codes in piped output, target/<target>/ for non-duckdb targets
DBT := $(BIN)/roundtrip dbt
TARGET ?= duckdb
# which syncs: a selector as dbt's --select (a name, crm_*, tag:crm, destination:redis,
# model:user_segments, state:modified; space-separated values are a union, e.g. SYNC="tag:crm reco_cache")
SYNC ?= all
# extra reverse_etl flags, e.g. make reverse-sync SYNC_ARGS=--json
SYNC_ARGS ?=
# pytest arguments, e.g. make test PYTEST_ARGS="-m 'not slow' -x"
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup azurite demo test lint generate load load-sqlite load-sql load-files load-bigquery export dbt-build dbt-compile-bigquery docs docs-serve reverse-sync reverse-sync-plan reverse-sync-verify reverse-sync-status syncs services clean spark medallion-auto bench ci-slim

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@echo "== setup 1/4: a virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --upgrade pip
	@echo "== setup 2/4: the pinned Python packages of pyproject.toml (dbt, DuckDB, pyspark, the servers' wheels, ...): about 4 minutes with pip's cache filled, more when it downloads"
	@set -o pipefail; $(PY) -m pip install --progress-bar off -e '.[dev]' 2>&1 | { grep -E '^(Collecting|Successfully installed|ERROR)' || true; }
	@echo "== setup 3/4: DuckDB's postgres and sqlite extensions, from their PyPI packages"
	$(PY) -m roundtrip install-extensions
	touch $@

setup: $(VENV)/.installed  ## .venv with pinned deps, DuckDB extensions, test servers' system packages (JDBC jar, MariaDB) and Azurite
	@# DuckDB creates the warehouse file but not its folder; dbt (and sqlfluff's dbt templater) open it
	@mkdir -p "$${ROUNDTRIP_DATA_DIR:-data}"
	@echo "== setup 4/4: the servers' binaries, the test servers' system packages, Azurite"
	@$(PY) -c "from roundtrip.dev.services import postgres_bin_dir, redis_server_binary; print('postgres binaries:', postgres_bin_dir()); print('redis-server:', redis_server_binary())"
	@scripts/install-system-packages
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory azurite || echo "Azurite did not install: the Azure Blob test will skip"; else echo "no npm: the Azure Blob (Azurite) test will skip"; fi

AZURITE_VERSION := 3.37.0
azurite: .tools/azurite/node_modules/.bin/azurite-blob  ## Azurite (Azure Blob emulator, npm) for the az:// loader tests; needs npm

.tools/azurite/node_modules/.bin/azurite-blob:
	npm install --prefix .tools/azurite --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

# the medallion's engine of the demo: dbt (in the warehouse) or spark (ROUNDTRIP_SPARK_MASTER=spark://... for a cluster)
ENGINE ?= dbt
demo: setup  ## the main job: generate -> load -> dbt build -> reverse syncs -> summary (TARGET=duckdb|postgres|bigquery, ENGINE=dbt|spark)
	$(PY) -m roundtrip demo --target $(TARGET) --engine $(ENGINE) $(DEMO_ARGS)

# two workers (one per core), each test file on one of them; PYTEST_WORKERS=0 runs in one process
PYTEST_WORKERS ?= 2
test: setup  ## the test suite (starts its own Postgres and Redis)
	$(BIN)/pytest $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

lint: setup  ## ruff and mypy on Python, sqlfluff (dbt templater) on the models and the SQL their macros write
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# an in-memory DuckDB for the dbt templater: linting never waits for (or dies on) a warehouse
	@# file that a dbt build or a loader holds, and never depends on what that file contains
	ROUNDTRIP_DUCKDB_PATH=:memory: $(BIN)/sqlfluff lint models macros snapshots analyses

generate: setup  ## sample data only (catalog to ROUNDTRIP_POSTGRES_URL if set)
	$(PY) -m roundtrip generate $(GEN_ARGS)

load: load-sqlite load-sql load-files  ## run every loader into the warehouse (TARGET=duckdb|postgres|bigquery)

# LOADER_ARGS passes flags to a loader, e.g. make load-sqlite LOADER_ARGS="--full-refresh"
load-sqlite: setup  ## SQLite tables -> warehouse (MERGE on keys, incremental by cursor)
	$(PY) -m loaders sqlite --target $(TARGET) $(LOADER_ARGS)

load-sql: setup  ## SQL database tables (the Postgres catalog) -> warehouse (ROUNDTRIP_CATALOG_URL)
	$(PY) -m loaders sql --target $(TARGET) $(LOADER_ARGS)

load-files: setup  ## event files (local, gs://, s3://) -> bronze, each file once
	$(PY) -m loaders files --target $(TARGET) $(LOADER_ARGS)

load-bigquery: setup  ## BigQuery tables of any project (the `bigquery:` sources of loaders.yml) -> warehouse
	$(PY) -m loaders bigquery --target $(TARGET) $(LOADER_ARGS)

export: setup  ## warehouse tables -> Snappy Parquet under {destination}/{YYYYMMDD}/{table}/ (EXPORT_ARGS="--date 20261120")
	$(PY) -m loaders export --target $(TARGET) $(EXPORT_ARGS)

dbt-build: setup  ## dbt build on TARGET (default duckdb)
	$(DBT) build --target $(TARGET)

# Slim CI: STATE is a folder holding the manifest.json of the build the warehouse already has
# (the main branch's); only the models changed since, and everything downstream of them, are
# built and tested; their unchanged parents are read where that build put them (--defer).
STATE ?= state
SLIM_ARGS ?=
ci-slim:  ## slim CI: build what changed against STATE=dir/with/manifest.json and its children (--defer to the rest); after make setup
	@test -f "$(STATE)/manifest.json" || { echo "ci-slim: no $(STATE)/manifest.json (STATE=folder of the main branch's manifest)" >&2; exit 2; }
	$(DBT) build --target $(TARGET) --select state:modified+ --defer --state $(STATE) $(SLIM_ARGS)

dbt-compile-bigquery: setup  ## compile for BigQuery offline (no credentials, nothing sent)
	ROUNDTRIP_BQ_METHOD=oauth-secrets ROUNDTRIP_BQ_TOKEN=offline ROUNDTRIP_BQ_API_ENDPOINT=http://127.0.0.1:9 \
		$(DBT) compile --target bigquery --no-populate-cache

docs: setup  ## generate the dbt docs site into target/
	$(DBT) docs generate --target $(TARGET)

docs-serve: docs  ## serve the dbt docs on http://127.0.0.1:8080
	$(DBT) docs serve --target $(TARGET) --host 127.0.0.1 --port 8080

# the manifest of TARGET, parsed only when the project changed (roundtrip/core/dbt.py, ensure_manifest);
# when it does not parse, dbt's own message is shown
MANIFEST = $(DBT) manifest --target $(TARGET)

syncs: setup  ## list the reverse syncs declared in dbt (SYNC=selector to list some)
	@$(MANIFEST)
	$(PY) -m reverse_etl list --target $(TARGET) --select "$(SYNC)"

reverse-sync: setup  ## run reverse syncs (SYNC=name|tag:X|...|all) to ROUNDTRIP_POSTGRES_URL / ROUNDTRIP_REDIS_URL
	@$(MANIFEST)
	$(PY) -m reverse_etl run --target $(TARGET) --select "$(SYNC)" $(SYNC_ARGS)

reverse-sync-plan: setup  ## dry run of reverse syncs (SYNC=selector|all): counts and sample changes, writes nothing
	@$(MANIFEST)
	$(PY) -m reverse_etl run --target $(TARGET) --select "$(SYNC)" --dry-run $(SYNC_ARGS)

reverse-sync-verify: setup  ## read each destination back and compare with its mart (SYNC=selector|all); SYNC_ARGS=--repair rewrites what differs
	@$(MANIFEST)
	$(PY) -m reverse_etl verify --target $(TARGET) --select "$(SYNC)" $(SYNC_ARGS)

reverse-sync-status: setup  ## run history of reverse syncs (SYNC=name for one sync's last runs)
	$(PY) -m reverse_etl status $(if $(filter-out all,$(SYNC)),--sync $(SYNC))

services: setup  ## start a throwaway Postgres and Redis in the foreground; prints their URLs
	$(PY) -m roundtrip services

spark: setup  ## the medallion on Spark: bronze -> silver -> gold (SPARK_ARGS="--date 2026-11-20", see docs/spark.md)
	$(PY) -m spark_jobs run $(SPARK_ARGS)

medallion-auto: setup  ## Spark above THRESHOLD bronze rows, else loaders + dbt build (default: 20000000 on a cluster, none in local mode)
	$(PY) -m spark_jobs auto $(if $(THRESHOLD),--threshold $(THRESHOLD)) $(AUTO_ARGS)

# the bench extra (the peers: dlt, sling, drt): only for the benchmarks, never for make setup;
# it installs beside the pins of make setup without moving any of them (pip check stays clean)
$(VENV)/.bench-installed: pyproject.toml $(VENV)/.installed
	@echo "== bench: the bench extra of pyproject.toml (the peers: dlt, sling, drt)"
	@set -o pipefail; $(PY) -m pip install --progress-bar off -e '.[dev,bench]' 2>&1 | { grep -E '^(Successfully installed|ERROR)' || true; }
	$(PY) -m pip check
	touch $@

# BENCH_ARGS, e.g. make bench BENCH_ARGS="--size 10m --only postgres_sync,memory", or the race
# against the peers on a loaded machine: BENCH_ARGS="--only sync_peers --size 100k --load 2"
BENCH_ARGS ?=
bench: setup $(VENV)/.bench-installed  ## benchmarks: ratios against baselines run side by side (BENCH_ARGS="--size 1m"); not part of make test
	@scripts/install-bench-packages
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:  ## remove generated data and dbt output (keeps .venv)
	rm -rf data target logs dbt_packages
