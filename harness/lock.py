"""The reference stack: constraints.txt, the exact versions the project has reviewed.

`make setup` installs with `pip install -c constraints.txt`, so every machine runs the default
suite on the same packages; a result may then change only when the stack under test or a case
changes. Every results.json records the lock file's digest and every package whose installed
version differs from it (`drift`): a run on a relaxed stack (tox's llama-latest, hf-previous)
says exactly what it relaxed, and `harness merge` refuses to mix runs of different locks.

Refresh the pins with `make lock` (README: "The reference stack").
"""

from __future__ import annotations

import hashlib
import re
from importlib import metadata
from pathlib import Path
from typing import Any

LOCK_FILE = "constraints.txt"
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """name -> pinned version of every `name==version` line (comments and blank lines ignored)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _PIN.match(line)
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def drift(pins: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """Pinned packages whose installed version differs (None: not installed)."""
    out = {}
    for name, want in sorted(pins.items()):
        have = installed_version(name)
        if have != want and not (have and have.split("+")[0] == want.split("+")[0]):
            out[name] = {"pinned": want, "installed": have}
    return out


def provenance(root: Path) -> dict[str, Any]:
    """What results.json records of the lock file under `root`."""
    path = Path(root) / LOCK_FILE
    if not path.is_file():
        return {"file": LOCK_FILE, "sha256": None, "note": f"no {LOCK_FILE} under {root}: unpinned stack"}
    pins = read_pins(path)
    return {"file": LOCK_FILE, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "packages": len(pins), "drift": drift(pins)}


HEADER = """\
# The reference stack: every package the default conformance suite runs on, at the version the
# project has reviewed. `make setup` installs with `pip install -c constraints.txt`; a result may
# change only when the stack under test or a case changes, never because another library moved.
# Refresh with `make lock` (newest versions pyproject.toml allows), review the diff, run
# `make conformance`, commit. tox's llama-latest and hf-previous relax only the package they test.
"""


def freeze(python: str) -> str:
    """constraints.txt for the environment of `python`: every installed distribution but the
    harness itself, as name==version, sorted."""
    import subprocess
    out = subprocess.run([python, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                         capture_output=True, text=True, check=True).stdout
    lines = sorted({ln.strip() for ln in out.splitlines()
                    if _PIN.match(ln) and canonical(_PIN.match(ln).group(1)) != "llm-conformance-harness"},
                   key=lambda ln: canonical(_PIN.match(ln).group(1)))
    return HEADER + "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys
    sys.stdout.write(freeze(sys.argv[1] if len(sys.argv) > 1 else sys.executable))
