"""harness/backends/lcp_server.py: llama-cpp-python's own server as a backend (logic only; the
real server runs in the conformance suite)."""

from pathlib import Path

import pytest

from harness.backends import lcp_server
from harness.backends.base import BackendOptions, ModelFiles, Unsupported, backend_class
from harness.families.items import GENERATORS


def test_registered_as_a_generator():
    assert backend_class("llama-cpp-python-server") is lcp_server.LlamaCppServerBackend
    assert "llama-cpp-python-server" in GENERATORS


def test_missing_server_extra_is_one_clear_skip(monkeypatch, tmp_path):
    monkeypatch.setattr(lcp_server, "missing_server_modules", lambda: ["fastapi", "uvicorn"])
    with pytest.raises(Unsupported, match=r"\[server\] extra is not installed \(cannot import fastapi, uvicorn\)"):
        lcp_server.LlamaCppServerBackend(ModelFiles(key="m", gguf=tmp_path / "m.gguf"), BackendOptions())


def test_vocab_only_model_is_unsupported(monkeypatch, tmp_path):
    monkeypatch.setattr(lcp_server, "missing_server_modules", lambda: [])
    with pytest.raises(Unsupported, match="vocab-only"):
        lcp_server.LlamaCppServerBackend(ModelFiles(key="m", gguf=tmp_path / "m.gguf", vocab_only=True),
                                         BackendOptions())


def test_server_args_carry_the_run_options():
    opts = BackendOptions(threads=3, seed=7, n_ctx=1024)
    args = lcp_server.server_args(ModelFiles(key="m", gguf=Path("/m.gguf")), opts)
    assert args[:2] == ["-m", "llama_cpp.server"]
    pairs = dict(zip(args[2::2], args[3::2]))
    assert pairs == {"--model": "/m.gguf", "--n_ctx": "1024", "--n_threads": "3",
                     "--n_threads_batch": "3", "--seed": "7", "--verbose": "False"}


def test_declared_capabilities_are_possible_over_openai_endpoints():
    from harness.backends.openai_compat import POSSIBLE
    assert lcp_server.CAPABILITIES <= POSSIBLE
