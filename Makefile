# Everything a fresh machine needs, from python3, make and git alone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench install clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## start the gateway on its embedded PostgreSQL
	$(BIN)/lectr serve

test: $(STAMP)  ## run every test against real PostgreSQL, real sockets and the openai SDK
	$(BIN)/pytest -q

bench: $(STAMP)  ## added latency and throughput, Lectr against a direct connection
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache benchmarks/results
