"""Per-worker session state: resolved model files, open backends, cached renders.

Everything heavy happens here, lazily, once per worker: a GGUF is resolved and verified
once, each backend is opened once per model, and a failure to do either is remembered so
that every affected item fails with the same clear message without retrying.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dataclasses

from harness.backends.base import (Backend, BackendError, BackendOptions, ModelFiles, Rendered, RenderRequest, Unsupported,
                            backend_class)
from harness.cases.model import Case, Context
from harness.errors import SourceError, raise_again
from harness.models.gguf_check import check_gguf
from harness.run.probe import probe_backend
from harness.run.server_build import ServerBuildError
from harness.models.sources import FileSpec, resolve


@dataclass
class Runtime:
    options: BackendOptions
    backend_filter: list[str] | None = None
    model_dirs: list[Path] = field(default_factory=list)
    _models: dict[str, ModelFiles | Exception] = field(default_factory=dict)
    _backends: dict[tuple[str, str | None], Backend | Exception] = field(default_factory=dict)
    _renders: dict[tuple, Rendered] = field(default_factory=dict)
    resolutions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # a backend that could not be built (llama-server): reported once per run, not per check
    build_failures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __repr__(self) -> str:
        # short and the same in every run: pytest prints fixture arguments in tracebacks,
        # and the caches' contents (paths, load order) would make identical runs differ
        return f"Runtime(threads={self.options.threads}, seed={self.options.seed}, backends={self.backend_filter})"

    def available(self, names: list[str]) -> list[str]:
        return [n for n in names if not self.backend_filter or n in self.backend_filter]

    # --- models -------------------------------------------------------------------------
    def model_files(self, case: Case) -> ModelFiles | None:
        if case.kind != "model":
            return None
        if case.id not in self._models:
            try:
                self._models[case.id] = self._resolve(case)
            except SourceError as exc:
                self._models[case.id] = exc
        got = self._models[case.id]
        if isinstance(got, Exception):
            raise_again(got)
        return got

    def _resolve(self, case: Case) -> ModelFiles:
        model = case.model
        spec = FileSpec.from_case(model["gguf"])
        res = resolve(spec, extra_dirs=self.model_dirs)
        self.resolutions[case.id] = {"file": spec.file, "sha256": spec.sha256, "source": res.source,
                                     "path": str(res.path)}
        # harness/models/gguf_check.py: a verified file can still be a broken GGUF (truncated when it was
        # pinned, wrong magic, a metadata value of the wrong type); name the cause before any backend
        # reads it. ModelFileError is a SourceError, so the model's cases fail with this message.
        check_gguf(res.path)
        tok_dir, missing = self._hub_tokenizer(case)
        return ModelFiles(key=case.id, gguf=res.path, gguf_sha256=spec.sha256,
                          vocab_only=not model.get("weights", True), hf_tokenizer_dir=tok_dir,
                          hf_from_gguf=model.get("tokenizer", {}).get("from_gguf", True),
                          hf_tokenizer_missing=missing)

    def _hub_tokenizer(self, case: Case) -> tuple[Path | None, str | None]:
        """model.tokenizer.hub: the repo's tokenizer.json and tokenizer_config.json (one snapshot
        folder of the HF cache, at the pinned revision), from the HF cache or the hub.
        Returns (folder, None), or (None, every source tried and why)."""
        from harness.models.sources import from_hf_cache_or_hub
        hub = case.model.get("tokenizer", {}).get("hub")
        if not hub:
            return None, None
        attempts: list[tuple[str, str]] = []
        folder = None
        for name in ("tokenizer.json", "tokenizer_config.json"):
            got = from_hf_cache_or_hub(hub["repo"], name, hub.get("revision"), attempts)
            if got is None:
                tried = "; ".join(f"{where}: {why}" for where, why in attempts)
                return None, (f"the HF tokenizer {hub['repo']}@{hub.get('revision') or 'main'} ({name}) did not "
                              f"resolve; tried {tried}. Fix: run once where the hub is reachable (files are "
                              f"cached in the HF cache), or set HF_HUB_CACHE to a cache that has them")
            folder = got[0].parent          # the snapshot folder: both files land in the same one
        self.resolutions.setdefault(case.id, {})["hf_tokenizer"] = f"{hub['repo']}@{hub.get('revision') or 'main'}"
        return folder, None

    # --- backends -------------------------------------------------------------------------
    def backend(self, name: str, case: Case) -> Backend:
        model = self.model_files(case)
        key = (name, model.key if model else None)
        if key not in self._backends:
            try:
                # harness/run/probe.py: a load that can crash the process (llama.cpp on an untrusted
                # GGUF) is first done in a forked child, once per file (memoised by sha256 in the
                # cache); a crash or load error there becomes this BackendError, not a dead worker
                probe_backend(name, model, self.options_for(name))
                self._backends[key] = backend_class(name)(model, self.options_for(name))
            except Unsupported as exc:
                self._backends[key] = exc        # skips, with the backend's reason
            except ServerBuildError as exc:
                self._backends[key] = exc        # kept as is: its checks skip (build_failed)
            except (BackendError, ImportError, OSError) as exc:
                self._backends[key] = BackendError(f"{name} could not be opened for {key[1] or 'templates'}: {exc}")
        got = self._backends[key]
        if isinstance(got, Exception):
            raise_again(got)
        return got

    def build_failed(self, name: str, exc: ServerBuildError) -> str:
        """Note that a check of `name` is skipped because the backend could not be built; the
        failure (with the build log's tail) is kept once, however many checks it skips. Returns
        the skip reason: the failure's first line, without the log tail."""
        key = exc.log_path or exc.headline
        entry = self.build_failures.setdefault(key, {
            "backend": name, "error": "build failed", "message": exc.headline, "log": exc.log_path,
            "tail": exc.tail, "skipped_checks": 0})
        entry["skipped_checks"] += 1
        return f"{name} could not be built: {exc.headline} (log tail: run summary, results.json errors)"

    def options_for(self, name: str) -> BackendOptions:
        """The llama-server backend builds from the llama.cpp tree vendored in the sdist of the
        installed llama-cpp-python unless told otherwise, so both backends are the same llama.cpp."""
        extra = dict(self.options.extra)
        if name in ("llama-server", "llama.cpp-chat") and not any(k in extra for k in ("server_url", "server_binary", "llama_cpp_tree")):
            if not os.environ.get("HARNESS_LLAMA_CPP_TREE"):
                from importlib.metadata import version

                from harness.models.sources import llama_cpp_tree
                # the tree vendored in the sdist of the llama-cpp-python that is installed
                extra["llama_cpp_tree"] = str(llama_cpp_tree(version("llama-cpp-python")))
        return dataclasses.replace(self.options, extra=extra)

    def backend_infos(self) -> dict[str, dict[str, Any]]:
        out = {}
        for (name, model), b in self._backends.items():
            if not isinstance(b, Exception) and name not in out:
                try:
                    out[name] = b.info()
                except Exception as exc:  # info is best effort: a dead server must not break the report
                    out[name] = {"error": str(exc)}
        return out

    # --- rendering --------------------------------------------------------------------------
    def render_request(self, case: Case, context: Context, gen: bool) -> RenderRequest:
        template = case.template_path.read_text(encoding="utf-8") if case.template_path else None
        tools = context.tools.tools if context.tools else None
        return RenderRequest(messages=context.messages, add_generation_prompt=gen, tools=tools,
                             template=template, bos_token=case.bos_token, eos_token=case.eos_token)

    def render(self, backend_name: str, case: Case, context: Context, gen: bool) -> Rendered:
        key = (backend_name, case.id, context.id, gen)
        if key not in self._renders:
            backend = self.backend(backend_name, case)
            self._renders[key] = backend.render_prompt(self.render_request(case, context, gen))
        return self._renders[key]

    def close(self) -> None:
        for b in self._backends.values():
            if not isinstance(b, Exception):
                try:
                    b.close()
                except Exception:  # closing is best effort at session end
                    pass
        self._backends.clear()
