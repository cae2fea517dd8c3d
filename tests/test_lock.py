"""The reference stack (constraints.txt): complete, installed with, and recorded in results."""

from __future__ import annotations

import re
import tomllib

from conftest import REPO
from harness import lock

RESULT_CHANGERS = ("hypothesis", "jinja2", "tokenizers", "transformers", "torch", "syrupy", "pytest",
                   "pytest-xdist", "numpy", "llama-cpp-python", "huggingface-hub", "sentencepiece", "protobuf",
                   "gguf", "pyyaml", "jsonschema", "time-machine", "execnet", "pluggy", "requests")


def _requirement_names() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        reqs += [r for r in items if not r.startswith("llm-conformance-harness")]
    return {lock.canonical(re.split(r"[<>=~!\[; ]", r, maxsplit=1)[0]) for r in reqs}


def test_every_requirement_and_result_changer_is_pinned():
    pins = lock.read_pins(REPO / lock.LOCK_FILE)
    missing = sorted((_requirement_names() | {lock.canonical(n) for n in RESULT_CHANGERS}) - set(pins))
    assert not missing, f"constraints.txt does not pin {missing}: run `make lock`"


def test_pins_agree_with_pyproject_exact_pins():
    pins = lock.read_pins(REPO / lock.LOCK_FILE)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for items in [project["dependencies"], *project["optional-dependencies"].values()]:
        for req in items:
            m = re.match(r"^([A-Za-z0-9._-]+)==([^;\s]+)$", req)
            if m:
                assert pins[lock.canonical(m.group(1))].split("+")[0] == m.group(2), req


def test_setup_and_tox_install_with_the_lock():
    assert "-c $(LOCK)" in (REPO / "Makefile").read_text()
    assert "-c {toxinidir}/constraints.txt" in (REPO / "tox.ini").read_text()


def test_read_pins_and_drift(tmp_path):
    f = tmp_path / "constraints.txt"
    f.write_text("# comment\npytest==0.0.1\nJinja2==3.1.6 ; python_version>'3'\n\nnot-installed-x==1.0\n")
    pins = lock.read_pins(f)
    assert pins == {"pytest": "0.0.1", "jinja2": "3.1.6", "not-installed-x": "1.0"}
    d = lock.drift(pins)
    assert d["pytest"]["pinned"] == "0.0.1" and d["pytest"]["installed"]
    assert d["not-installed-x"] == {"pinned": "1.0", "installed": None}
    prov = lock.provenance(tmp_path)
    assert prov["file"] == "constraints.txt" and len(prov["sha256"]) == 64 and prov["packages"] == 3
    assert lock.provenance(tmp_path / "nowhere")["sha256"] is None


def test_local_version_labels_are_not_drift(monkeypatch):
    monkeypatch.setattr(lock, "installed_version", lambda name: "2.13.0+cpu")
    assert lock.drift({"torch": "2.13.0"}) == {}
    assert lock.drift({"torch": "2.13.0+cpu"}) == {}
    assert lock.drift({"torch": "2.14.0"}) == {"torch": {"pinned": "2.14.0", "installed": "2.13.0+cpu"}}
