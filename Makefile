# Taskwire developer commands. `make help` lists them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help install run test test-unit test-integration lint format bench loadtest chaos chaos-quick vendor screenshots clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with Taskwire (editable) and its dev tools; quick when nothing changed

# pip's own lines are the progress of a first install (about two minutes); CI keeps its log short.
PIP_OUTPUT := $(if $(CI),--quiet,--progress-bar on --no-color)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "Creating .venv…"; $(PYTHON) -m venv $(VENV); }
	@echo "Installing Taskwire and its tools into .venv (the first time takes a couple of minutes)…"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install $(PIP_OUTPUT) -e '.[dev]'
	@touch $(STAMP)
	@echo "Installed."

run: install ## start everything locally (migrations, embedded Redis, API, worker) on http://127.0.0.1:$(PORT) (PORT=8000)
	@$(BIN)/taskwire run --port $(PORT)

test: install ## run the whole test suite (unit + integration with real Redis, uvicorn and Celery)
	$(BIN)/pytest

test-unit: install ## run the fast unit tests only
	$(BIN)/pytest tests/unit

test-integration: install ## run the integration tests only
	$(BIN)/pytest tests/integration

lint: install ## ruff format --check, ruff check, mypy on backend/
	$(BIN)/ruff format --check backend tests alembic loadtests
	$(BIN)/ruff check backend tests alembic loadtests
	$(BIN)/mypy backend

bench: install ## benchmarks against same-run baselines; results go to docs/performance.md
	$(BIN)/python -m loadtests.bench.run

loadtest: install ## Locust, headless, against a private stack (or HOST=url); USERS=10 DURATION=60s; reports in loadtests/reports/
	$(BIN)/python -m loadtests.run_loadtest

chaos: install ## fault injection under load, 3 runs of each scenario; table to docs/reliability.md
	$(BIN)/python -m loadtests.chaos.run

chaos-quick: install ## one run of fault scenarios 1-5 (part of CI); fails when any misses the bar
	$(BIN)/python -m loadtests.chaos.run --quick

screenshots: install ## run the browser tests and copy the README's screenshots from what they saved
	$(BIN)/pytest tests/e2e -q
	cp test-artifacts/screenshots/2-dashboard.png docs/screenshots/dashboard.png
	cp test-artifacts/screenshots/4-exercise.png docs/screenshots/exercise.png
	cp test-artifacts/screenshots/3-chat-markdown.png docs/screenshots/chat.png

vendor: ## rebuild frontend/vendor/*.js and LICENSES.txt from npm (pinned in tools/vendor/package-lock.json)
	cd tools/vendor && npm ci --no-audit --no-fund && node build.mjs

format: install ## apply ruff formatting and safe fixes
	$(BIN)/ruff format backend tests alembic loadtests
	$(BIN)/ruff check --fix backend tests alembic loadtests

clean: ## remove the virtualenv, caches and local data (var/)
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
