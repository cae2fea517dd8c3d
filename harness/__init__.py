"""Conformance harness for llama.cpp-based inference stacks.

The flow: cases/*.yaml -> harness.cases (validated Case objects) -> pytest items
(harness.plugin) -> backend calls (harness.backends) -> goldens, benchmarks, reports.
"""

__version__ = "0.1.0"
