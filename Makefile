# facewatch: the two commands in the README (`make demo`, `make test`) do all set-up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Keep Ray and the tests on loopback, and the demo's data inside the checkout.
export RAY_NODE_IP_ADDRESS ?= 127.0.0.1
DEMO_HOME ?= $(CURDIR)/.facewatch/demo-home
DEMO_OUT ?= $(CURDIR)/demo-out

.PHONY: demo test lint format install install-dev bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev]'
	bash .ci/ensure-chromium
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(PY) -m jobs.demo --home $(DEMO_HOME) --out $(DEMO_OUT)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check pipelines serve jobs tests benchmarks
	$(VENV)/bin/ruff format --check pipelines serve jobs tests benchmarks

test: lint
	$(VENV)/bin/pytest -q

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check --fix pipelines serve jobs tests benchmarks
	$(VENV)/bin/ruff format pipelines serve jobs tests benchmarks

clean:
	rm -rf $(DEMO_OUT) .facewatch .pytest_cache .ruff_cache
