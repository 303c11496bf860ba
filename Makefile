# facewatch: the two commands in the README (`make demo`, `make test`) do all set-up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Keep Ray and the tests on loopback, and the demo's data inside the checkout.
export RAY_NODE_IP_ADDRESS ?= 127.0.0.1
DEMO_HOME ?= $(CURDIR)/.facewatch/demo-home
DEMO_OUT ?= $(CURDIR)/demo-out

.PHONY: demo test test-fast docs lint format install install-dev bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev]'
	bash .ci/ensure-chromium
	bash .ci/ensure-axe
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(PY) -m jobs.demo --home $(DEMO_HOME) --out $(DEMO_OUT)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check pipelines serve jobs tests benchmarks docs
	$(VENV)/bin/ruff format --check pipelines serve jobs tests benchmarks docs

# The docs site, strict: a broken link, a missing page or a missing generated table fails.
docs: $(VENV)/.installed-dev
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir site

test: lint docs
	$(VENV)/bin/pytest -q

# The unit tier: no Ray, no models, no servers, no browser (under a minute).
test-fast: $(VENV)/.installed-dev
	$(VENV)/bin/pytest -q -m unit

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check --fix pipelines serve jobs tests benchmarks docs
	$(VENV)/bin/ruff format pipelines serve jobs tests benchmarks docs

clean:
	rm -rf $(DEMO_OUT) .facewatch .pytest_cache .ruff_cache site
