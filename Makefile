# The two commands: `make demo` and `make test`. Everything installs into .venv inside the project.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export GX_ANALYTICS_ENABLED := false
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: install demo test dev bench lint clean-db

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

demo: install
	$(BIN)/tis demo

test: install
	$(BIN)/pytest -q -n 2 --dist loadfile

dev: install
	$(BIN)/tis dev

bench: install
	$(BIN)/python -m bench.ingest --rows $${BENCH_ROWS:-1000000}

lint: install
	$(BIN)/ruff check tis_pipeline tis_pipeline_tests migrations bench

clean-db:
	-$(BIN)/tis db stop
	rm -rf .tis
