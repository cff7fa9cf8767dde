# Lethe developer commands. `make serve` and `make test` set everything up from scratch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LETHE := $(VENV)/bin/lethe
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv proto demo demo-small serve test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Generated gRPC stubs are build output (gitignored).
proto: venv
	$(PY) -m server.codegen

# The demo model is built once and cached (~/.cache/lethe, or LETHE_CACHE_DIR).
demo: proto
	$(LETHE) demo build

demo-small: proto
	$(LETHE) demo build --small

serve: demo
	$(LETHE) serve

# Everything CI runs. The small demo preset is built first so its build time shows in the log.
test: demo-small
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: proto
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: demo
	$(PY) bench/serving.py

clean:
	rm -rf $(VENV) server/api/gen build *.egg-info
