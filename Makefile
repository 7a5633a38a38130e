# Everything a fresh machine needs, from python3, make and git alone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-unit bench install clean mutation

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## start the gateway on its embedded PostgreSQL
	$(BIN)/lectr serve

test: $(STAMP)  ## every test: tests/unit, tests/protocol, tests/e2e (real PostgreSQL, the openai SDK), tests/browser
	$(BIN)/pytest -q

test-unit: $(STAMP)  ## the unit tests alone: pure logic, no database, seconds
	$(BIN)/pytest -q tests/unit

mutation: $(STAMP)  ## mutation score of the pure request-path modules (not part of `make test`)
	$(BIN)/pip install --quiet -e '.[test,mutation]'
	rm -rf mutants
	timeout 1200 $(BIN)/mutmut run --max-children 2 || true
	$(BIN)/mutmut results

bench: $(STAMP)  ## added latency and throughput, Lectr against a direct connection
	$(BIN)/python -m lectr.bench.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache lectr/bench/results
