"""The harness's native helpers: C++ programs built from the llama.cpp tree under test, as extra
targets of llama-server's own build (probe.cmake), and their Python clients (probe.py)."""
