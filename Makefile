# The two commands: `make demo` and `make test`. Everything installs into .venv inside the project.
# `make lint` runs the same checks as CI (.ci/run: `make lint`, then `make test`); `make -k lint` runs all of them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LINT_PATHS := tis_pipeline tis_pipeline_tests bench migrations
export GX_ANALYTICS_ENABLED := false
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install demo test dev bench lint lint-ruff lint-format lint-mypy lint-defs clean-db

install: $(VENV)/.installed

# dev: pytest, playwright, ruff, mypy, pre-commit; scale-out: dagster-celery and redis, for the Celery test.
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,scale-out]'
	@touch $@

demo: install
	$(BIN)/tis demo

test: install
	$(BIN)/pytest -q -n 2 --dist loadfile

dev: install
	$(BIN)/tis dev

bench: install
	$(BIN)/python -m bench.ingest --rows $${BENCH_ROWS:-1000000}

lint: lint-ruff lint-format lint-mypy lint-defs

lint-ruff: install
	$(BIN)/ruff check $(LINT_PATHS)

lint-format: install
	$(BIN)/ruff format --check $(LINT_PATHS)

# The paths are [tool.mypy] packages in pyproject.toml: the pure modules.
lint-mypy: install
	$(BIN)/mypy

# Loads the Definitions without a database: a throwaway DAGSTER_HOME, and a URL that is never connected to.
lint-defs: install
	@home=$$(mktemp -d) && trap 'rm -rf "$$home"' EXIT && \
	  DAGSTER_HOME="$$home" TIS_DATABASE_URL=postgresql+psycopg://nobody@127.0.0.1:1/none \
	  $(BIN)/dagster definitions validate -m tis_pipeline.definitions

clean-db:
	-$(BIN)/tis db stop
	rm -rf .tis
