# Two commands do all set-up on a fresh machine (Python 3.11, pip, a C/C++ toolchain):
#   make conformance   the default conformance suite, offline, and its report in reports/
#   make test          the harness's own tests
# Both create .venv and install the harness with every backend on first use
# (llama-cpp-python is compiled from source: ~8 min once, then pip's wheel cache).

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: setup conformance test bench lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	# xgrammar without its triton requirement (GPU kernels the token-table check never calls)
	$(BIN)/python -m pip install --quiet --no-deps 'xgrammar==0.2.8'
	# LLaMA-Factory's tool_utils.py only (loaded from its file): none of its training dependencies
	$(BIN)/python -m pip install --quiet --no-deps 'llamafactory==0.9.5'
	touch $(STAMP)

conformance: setup
	$(BIN)/harness run

test: setup
	$(BIN)/python -m pytest tests -n 2

bench: setup
	$(BIN)/harness bench

lint: setup
	$(BIN)/harness lint

clean-venv:
	rm -rf $(VENV)
