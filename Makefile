# Manifold's two everyday commands, `make run` and `make test`, plus the tools around them.
# Every target bootstraps what it needs (scripts/bootstrap.sh is a no-op when nothing changed).
#
#   make run      the demo: toolbox upstream on :8471 (background) + the gateway on manifold.yaml
#   make test     venv, Node toolchain, legacy-SDK venv, Debian chromium, haproxy and postgresql, the wheel's clean venv, then the whole pytest suite, then the e2e suite on PostgreSQL
#   make fuzz     property-based fuzzing of a real gateway, the long profile (tests/fuzz; a short one runs in make test)
#   make bench    gateway overhead benchmarks (bench/README.md)
#   make screenshots  the browser tests, renewing the page screenshots in docs/screenshots (others: build/screenshots)
#   make bench-scale  scale figures: 10,000 idle sessions, 10,000 tools, a 10-minute soak, haproxy (~15 min)
#   make lint     ruff, the import-layer contracts (import-linter) and the type checker (basedpyright)
#   make check    validate manifold.yaml and virtual_servers/*.yaml
#   make lock     regenerate constraints.txt from the working venv
#   make clean    caches and build leftovers; `make distclean` also removes the venvs and node_modules

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
CONFIG ?= manifold.yaml
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.package-lock.json
# pytest-xdist workers: "auto" is one per core. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= auto
PYTEST_ARGS ?=
# What `make test` runs a second time on PostgreSQL (MANIFOLD_TEST_DATABASE=postgresql): the whole e2e suite.
# `make test PG_TESTS=` skips that pass; `PG_TESTS=tests/e2e/test_admin.py` runs one file of it.
PG_TESTS ?= tests/e2e

.PHONY: help venv run test fuzz bench bench-scale lint check lock clean distclean node legacy-venv browser haproxy wheel-venv postgres screenshots

help:
	@sed -n 's/^#   make /  make /p' Makefile

venv:
	@scripts/bootstrap.sh

# Ctrl-C or SIGTERM stops the gateway and the toolbox, and the script exits 0; make itself, sent the signal too
# (a terminal's Ctrl-C reaches the whole process group), waits for it and then ends by that signal (130/143 in
# a shell): GNU make re-raises a fatal signal on itself, whatever its recipe returned.
run: venv
	@exec scripts/run-demo.sh "$(CONFIG)"

# npm ci only when node_modules is missing or older than the lock file: make compares the
# mtime of npm's own record of the installed tree with package-lock.json.
$(NODE_STAMP): $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	@touch $(NODE_STAMP)

node: $(NODE_STAMP)

legacy-venv:
	@scripts/setup-legacy-venv.sh

# Debian's chromium for the Playwright tests in tests/browser (installed once with apt-get when missing).
browser:
	@scripts/setup-browser.sh

# Debian's postgresql for the tests that run on PostgreSQL (installed once with apt-get when missing; the tests
# start a throw-away cluster of their own, tests/postgres.py, never the package's).
postgres:
	@scripts/setup-postgres.sh

# Debian's haproxy for the replica tests in tests/replicas (installed once with apt-get when missing).
haproxy:
	@scripts/setup-haproxy.sh

# The clean venv the packaging test installs the wheel into (tests/packaging; made once per set of dependencies).
wheel-venv: venv
	@scripts/setup-wheel-venv.sh

# pytest exits 5 when it collected no test: that is a failure here, with a message saying so.
# Then the e2e suite again on PostgreSQL (PG_TESTS; docs/postgresql.md): every gateway on a fresh database in a
# throw-away cluster. `make test PG_TESTS=` skips that second pass.
test: venv node legacy-venv browser haproxy wheel-venv postgres
	@status=0; $(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS) || status=$$?; \
	if [[ $$status -eq 5 ]]; then echo "make test: pytest collected no tests" >&2; fi; \
	if [[ -n "$(PG_TESTS)" ]]; then \
	  echo "make test: the e2e suite again, on PostgreSQL"; \
	  pg=0; MANIFOLD_TEST_DATABASE=postgresql $(PY) -m pytest -n $(PYTEST_WORKERS) $(PG_TESTS) $(PYTEST_ARGS) || pg=$$?; \
	  if [[ $$status -eq 0 ]]; then status=$$pg; fi; \
	fi; \
	exit $$status

# The fuzz tests with MANIFOLD_FUZZ_PROFILE=long (thousands of examples per test, new ones each run; failures
# are kept in .pytest_cache/hypothesis and tried first next time). FUZZ_EXAMPLES overrides the number per test.
FUZZ_EXAMPLES ?=
fuzz: venv node
	MANIFOLD_FUZZ_PROFILE=long MANIFOLD_FUZZ_EXAMPLES="$(FUZZ_EXAMPLES)" $(PY) -m pytest -n 0 tests/fuzz $(PYTEST_ARGS)

screenshots: venv node browser
	MANIFOLD_SCREENSHOTS=docs/screenshots $(PY) -m pytest -n $(PYTEST_WORKERS) tests/browser $(PYTEST_ARGS)

bench: venv
	$(PY) -m bench.run_all

# SCALE_ARGS=--quick: reduced sizes (~2 min); --only sessions,tools,soak,replicas; --database-url URL.
SCALE_ARGS ?=
bench-scale: venv haproxy
	$(PY) -m bench.scale_all $(SCALE_ARGS)

# ruff for real problems; lint-imports holds the layers of docs/design.md (contracts in pyproject.toml);
# basedpyright type-checks src/ at its standard level.
lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/basedpyright

check: venv
	$(PY) -m manifold.cli --config "$(CONFIG)" check

# The full freeze of the working venv minus the project itself: a fresh machine installs exactly this set.
lock:
	@test -x $(PY) || { echo "make lock: no $(VENV); run 'make venv' first" >&2; exit 1; }
	@{ echo "# Generated by 'make lock' (pip freeze of .venv, minus the project). Used as pip -c by scripts/bootstrap.sh."; \
	   $(PY) -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^#'; } > constraints.txt.tmp
	@mv constraints.txt.tmp constraints.txt
	@echo "constraints.txt: $$(grep -vc '^#' constraints.txt) pinned packages"

clean:
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info .conformance-results bench/results
	find . -path ./$(VENV) -prune -o -path ./.venv-legacy -prune -o -path ./$(NODE_DIR)/node_modules -prune \
	    -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV) .venv-legacy $(NODE_DIR)/node_modules "$${XDG_CACHE_HOME:-$$HOME/.cache}/manifold-packaging"
