"""Model files: where they come from (local, HF cache/hub, PyPI mirrors) and the GGUF reader."""
