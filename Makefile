# eventhouse: `make demo` runs the main job end to end, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHROMIUM_STAMP := $(VENV)/.chromium
POSTGRES_STAMP := $(VENV)/.postgres
WEB := serving/web

.PHONY: demo ui screenshot test lint unit event-types dbt-checks dbt-checks-lint dbt-checks-build bench stack-up stack-down stack-status clean

$(STAMP): pyproject.toml constraints.txt $(WEB)/package.json $(WEB)/package-lock.json
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@# the dashboards' charting library (Chart.js), exactly as package-lock.json pins it
	npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error
	@touch $(STAMP)

# Debian's Chromium for the dashboard tests and screenshots (Playwright's own browser download cannot
# run here): installed with apt when /usr/bin/chromium is missing.
$(CHROMIUM_STAMP): $(STAMP)
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
		else echo "chromium is missing and we are not root: apt-get install chromium" >&2; exit 1; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; \
	fi
	@touch $(CHROMIUM_STAMP)

# Debian's PostgreSQL 15 server (the embedded stack's OLTP database; EVENTHOUSE_POSTGRES_BIN names
# another build): installed with apt when missing.
$(POSTGRES_STAMP): $(STAMP)
	@if [ -z "$$EVENTHOUSE_POSTGRES_BIN" ] && [ ! -x /usr/lib/postgresql/15/bin/postgres ]; then \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
		else echo "PostgreSQL 15 is missing and we are not root: apt-get install postgresql-15" >&2; exit 1; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends postgresql-15; \
	fi
	@touch $(POSTGRES_STAMP)

demo: $(POSTGRES_STAMP)
	$(BIN)/eventhouse demo

# Dagster UI (dagster dev) on http://127.0.0.1:3000 with DAGSTER_HOME=$EVENTHOUSE_HOME/dagster (the demo's runs), beside
# eventhouse serve on http://127.0.0.1:8000: the KPI API (/docs), the collector and the dashboards (/dashboards/).
ui: $(POSTGRES_STAMP)
	$(BIN)/eventhouse ui

# docs/img/asset-graph.png (the global asset lineage in the Dagster UI) and docs/img/dashboard-*.png
# (each dashboard, checked as the tests check them), shot with headless Debian Chromium after `make demo`.
screenshot: $(CHROMIUM_STAMP) $(POSTGRES_STAMP)
	$(BIN)/python -m docs.tools.screenshot_asset_graph --out docs/img/asset-graph.png
	$(BIN)/python -m docs.tools.screenshot_dashboards --serve --out docs/img

# ruff, then sqlfluff + dbt build against a throwaway embedded stack, then pytest.
test: $(CHROMIUM_STAMP) $(POSTGRES_STAMP)
	$(BIN)/ruff check .
	$(BIN)/eventhouse stack run --ephemeral -- $(MAKE) --no-print-directory dbt-checks
	$(BIN)/pytest -n 2 --no-loadscope-reorder

# seeds/event_types.csv from the event registry (ingestion/contract.py): run after changing it.
event-types: $(STAMP)
	$(BIN)/python -m ingestion.event_types_seed

# The unit tests alone: no servers, under a minute.
unit: $(STAMP)
	$(BIN)/pytest tests/unit

# Needs EVENTHOUSE_* pointing at a running stack (the dbt templater compiles against it).
# sqlfluff (about 45 s of one core: its dbt templater compiles every file) runs beside the dbt
# commands, which spend much of their time waiting for ClickHouse; each one's output is printed
# whole when it ends (--output-sync), and dbt-checks fails if either does.
dbt-checks: $(STAMP)
	$(BIN)/eventhouse load --create-tables-only
	@$(MAKE) --no-print-directory -j2 --output-sync=target dbt-checks-lint dbt-checks-build

# sqlfluff compiles in a database of its own, where nothing is built, and a target directory of its
# own: what it lints (incremental models on their first run: no relation exists yet) does not depend
# on how far the build beside it has got. The name is as long as the default `eventhouse`, so the
# rendered SQL is the same length line for line.
dbt-checks-lint:
	EVENTHOUSE_CLICKHOUSE_DATABASE=eh_lint_db DBT_TARGET_PATH=target/sqlfluff DBT_LOG_PATH=logs/sqlfluff \
		$(BIN)/sqlfluff lint models macros analyses tests/dbt

dbt-checks-build:
	$(BIN)/dbt seed --profiles-dir . --project-dir .
	@# unit tests of incremental models read the columns of `this`: it must exist before `dbt build` (on a
	@# new database a plain `dbt build` stops at once and names these two commands: macros/hooks/)
	$(BIN)/dbt run --empty --select +config.materialized:incremental --profiles-dir . --project-dir .
	$(BIN)/dbt build --profiles-dir . --project-dir .

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/eventhouse stack run --ephemeral -- bash -c '$(BIN)/eventhouse load --create-tables-only && $(BIN)/sqlfluff lint models macros analyses tests/dbt'

# Each writes its numbers to bench/results/; bench/RESULTS.md discusses them. About an hour.
bench: $(POSTGRES_STAMP)
	$(BIN)/python -m bench.server_overhead --json bench/results/server_overhead.json
	$(BIN)/python -m bench.loader_throughput --json bench/results/loader_throughput.json
	$(BIN)/python -m bench.loader_ceiling --json bench/results/loader_ceiling.json
	$(BIN)/python -m bench.loader_latency --json bench/results/loader_latency.json
	$(BIN)/python -m bench.warehouse_build --json bench/results/warehouse_build.json
	$(BIN)/python -m bench.orchestration --json bench/results/orchestration.json
	$(BIN)/python -m bench.live_alerts --json bench/results/live_alerts.json
	$(BIN)/python -m bench.collector --json bench/results/collector.json
	$(BIN)/python -m bench.api --json bench/results/api.json
	$(BIN)/python -m bench.outbox --json bench/results/outbox.json

stack-up: $(STAMP)
	$(BIN)/eventhouse stack up
stack-down: $(STAMP)
	$(BIN)/eventhouse stack down
stack-status: $(STAMP)
	$(BIN)/eventhouse stack status

clean:
	-$(BIN)/eventhouse stack down
	rm -rf target logs .eventhouse .pytest_cache .ruff_cache
