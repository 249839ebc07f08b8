# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch for the venv (warm, demo and test need it). The default is the version whose CPU build this
# machine kind has on disk (pip's find-links). Where there is no such local wheel, pip takes it from
# PyPI, and on Linux that is the CUDA build: several GB of nvidia-* wheels. For the CPU build, ask
# PyTorch's CPU index, or give the CPU build's own requirement:
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
#   make test TORCH_SPEC='torch==2.13.0+cpu' TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Both are read when the venv is made; for an existing venv, `rm -rf .venv` first.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test lint bench system-deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet '$(TORCH_SPEC)' $(if $(TORCH_INDEX),--index-url '$(TORCH_INDEX)')
	# The distribution was called `preloader` before `hf-preloader`: a venv made then has it too.
	$(PY) -m pip uninstall -qq --yes preloader
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash demo/run.sh

# Test files run on TEST_WORKERS processes (pytest-xdist), each file on one worker (tests/conftest.py):
# most of a test's time is spent waiting on subprocesses and the local hub, so more workers than cores pay.
TEST_WORKERS ?= 4

test: $(VENV)/.installed system-deps
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# What the container, Kubernetes and fleet tests need (podman, runc, docker-compose, debootstrap,
# catatonit for podman kube play, bindfs for two mounts of one volume); idempotent. Podman's
# settings go to .containers/containers.conf in this checkout, which the tests and scripts pass in
# CONTAINERS_CONF; nothing under /etc/containers/ is written.
# As root, or on CI (CI=true), it must work. Elsewhere (no root) the container tests skip and say why.
system-deps:
	@scripts/install-system-deps.sh || { [ "$$(id -u)" != 0 ] && \
	  case "$$(printf %s "$${CI:-}" | tr A-Z a-z)" in ""|0|false|no) true;; *) false;; esac && \
	  echo "make: no podman set-up here (needs root); the container tests will be skipped" >&2; }
