# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bench system-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of exactly this version is on disk here; any other pulls GBs of CUDA packages.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash demo/run.sh

test: $(VENV)/.installed system-deps
	$(PY) -m pytest

# What the container tests need (podman, runc, docker-compose, debootstrap, containers.conf); idempotent.
# As root, or on CI (CI=true), it must work. Elsewhere (no root) the container tests skip and say why.
system-deps:
	@scripts/install-system-deps.sh || { [ "$$(id -u)" != 0 ] && \
	  case "$$(printf %s "$${CI:-}" | tr A-Z a-z)" in ""|0|false|no) true;; *) false;; esac && \
	  echo "make: no podman set-up here (needs root); the container tests will be skipped" >&2; }
