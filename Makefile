# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean system-tools

# A real Prometheus server is used by the telemetry test and headless Chromium by the HTML
# report test (Debian packages): the missing ones are installed with one apt-get update.
system-tools:
	@missing=""; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	  || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: install Debian's$$missing package(s) for the Prometheus scrape and" \
	    "HTML report tests"; fi; \
	fi

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e ".[test,plots]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hz-ray demo

# The unit tier runs on both cores (pytest-xdist; --dist loadfile keeps each test file on one
# worker, so module fixtures are built once); the Ray tier runs alone after it: its tests time
# stragglers and kill nodes, and flake beside a second load.
test: $(STAMP) system-tools
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile tests/unit
	$(PY) -m pytest -q tests/ray

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
