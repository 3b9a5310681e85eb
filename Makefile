# pyguts: `make tour` and `make test` each do their own set-up on a fresh machine.
# A second run is fast: every set-up step leaves a stamp and is redone only when its inputs change.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENVS := .venvs
STAMPS := .make
BIN := $(VENV)/bin

# Debian packages later layers load at run time (allocators, GSL, cairo for diagram PNGs) and the compilers they use.
APT_PACKAGES := gcc g++ make debootstrap libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 libgsl-dev libcairo2

# Debian's libjemalloc2 needs static TLS room to be dlopen()ed after start-up (see SAFETY.md).
export GLIBC_TUNABLES := glibc.rtld.optional_static_tls=4096

# Every other installed CPython 3.10-3.13 (pyenv) runs the layout-sensitive tests too (3.14 and 3.15:
# test-current).
DEFAULT_VERSION := $(shell $(PYTHON) -c 'import platform; print(platform.python_version())')
PYENV_ROOT := $(shell pyenv root 2>/dev/null)
OTHER_PYTHONS := $(filter-out %/$(DEFAULT_VERSION)/bin/python,\
                   $(wildcard $(PYENV_ROOT)/versions/3.1[0123].*/bin/python))
PIP := pip --disable-pip-version-check --quiet
# The distribution was called pyguts before cpython-guts: a venv from then keeps a second editable entry.
UNINSTALL_OLD := $(PIP) uninstall -y pyguts >/dev/null 2>&1 || true

.PHONY: tour test test-default test-versions test-current test-forked bench gpu-check setup system clean

tour: $(BIN)/.installed
	$(BIN)/pyguts tour

test: test-default test-versions test-current test-forked

test-default: $(BIN)/.installed
	$(BIN)/python -m pytest tests

test-versions: $(BIN)/.installed
	@set -e; for py in $(OTHER_PYTHONS); do \
	  ver=$$(basename $$(dirname $$(dirname $$py))); venv=$(VENVS)/$$ver; \
	  if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
	    echo "== set-up for CPython $$ver"; \
	    $$py -m venv $$venv && $$venv/bin/$(UNINSTALL_OLD) && $$venv/bin/$(PIP) install -e '.[test]' && touch $$venv/.installed; \
	  fi; \
	  echo "== version-sensitive tests (-m every_python) on CPython $$ver"; \
	  $$venv/bin/python -m pytest -q -m every_python tests || exit $$?; \
	done

# The current CPythons, 3.14 and 3.15, release and debug builds: Debian sid's, in a chroot built once
# under ~/.cache/pyguts (needs root and debootstrap; skipped with the reason otherwise).
test-current: $(STAMPS)/system
	.ci/current-pythons.sh test -q -m every_python tests

FORKED_VENV := $(VENVS)/forked
# pytest-forked 1.7.5 works on pytest 8.0.2-9.1.1 and breaks on 9.2.0 (see SAFETY.md): pin both.
FORKED_PINS := pytest==9.1.1 pytest-forked==1.7.5

test-forked: $(FORKED_VENV)/.installed
	@echo "== crash-prone tests (-m crash_prone) under pytest-forked ($(FORKED_PINS))"
	$(FORKED_VENV)/bin/python -m pytest -q --forked -m crash_prone tests

setup: $(BIN)/.installed

$(FORKED_VENV)/.installed: pyproject.toml $(STAMPS)/system
	test -x $(FORKED_VENV)/bin/python || $(PYTHON) -m venv $(FORKED_VENV)
	$(FORKED_VENV)/bin/$(UNINSTALL_OLD)
	$(FORKED_VENV)/bin/$(PIP) install -e '.[test]' $(FORKED_PINS)
	touch $@

$(BIN)/.installed: pyproject.toml $(STAMPS)/system
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/$(UNINSTALL_OLD)
	$(BIN)/$(PIP) install -e '.[test,nvrtc]'
	touch $@

# System packages: installed with apt-get when root, otherwise named so the user can install them.
$(STAMPS)/system:
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "== apt-get install $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "warning: missing Debian packages (install them as root): $$missing"; \
	  fi; \
	fi
	touch $@

# The peers' facts differ by version (einspect on 3.12+, say): benchmarks/bench_peers.py runs again on every
# other CPython, each in a venv of its own with the bench extra. .venvs/forked gives the pytest-forked rows.
bench: $(BIN)/.installed $(FORKED_VENV)/.installed
	$(BIN)/$(PIP) install -e '.[test,nvrtc,bench]'
	$(BIN)/python benchmarks/run.py
	@set -e; for py in $(OTHER_PYTHONS); do \
	  ver=$$(basename $$(dirname $$(dirname $$py))); venv=$(VENVS)/bench-$$ver; \
	  if [ ! -f $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
	    echo "== set-up for the peers on CPython $$ver"; \
	    $$py -m venv $$venv && $$venv/bin/$(PIP) install -e '.[bench]' pytest pytest-forked && touch $$venv/.installed; \
	  fi; \
	  echo "== peers on CPython $$ver"; \
	  $$venv/bin/python benchmarks/run.py peers; \
	done

# The whole GPU story in one command, on the machine at hand: doctor, pytest -m gpu, the tour's cuda and
# numba steps, a bandwidth benchmark of every path against a device-to-device copy, the kernels' SASS;
# report in $OUT/gpu_report.txt (default gpu_check_out/). Without a GPU each step says "no device" and it
# exits 0. It installs nothing from a registry on the GPU machine (none there): .gpukit/ carries the few
# wheels it lacks, prepared here once (`bash .ci/gpu_check.sh --prepare .`, done below when missing).
gpu-check:
	@[ -d .gpukit/whl ] || bash .ci/gpu_check.sh --prepare . >/dev/null || echo "gpu-check: could not prepare .gpukit/ (no registry?): going on without it"
	bash .ci/gpu_check.sh

clean:
	rm -rf $(VENV) $(VENVS) $(STAMPS) build *.egg-info
