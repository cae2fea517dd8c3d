"""Hostile chat templates, as data (PAYLOADS: each a template and what a safe renderer must do with
it), and the canary (a secret in the environment and a file) whose leak a render must not show."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


SECRET_ENV = "HARNESS_HOSTILE_CANARY"


@dataclass(frozen=True)
class Payload:
    id: str
    kind: str           # attr-walk | exec | file-read | mutation | loop | blowup | recursion
    template: str       # @@SECRET_FILE@@, @@TOUCH@@ are filled in by Canary.fill
    description: str


PAYLOADS: tuple[Payload, ...] = (
    Payload("subclasses-popen", "exec",
            "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'Popen' %}"
            "{{ c(['touch', '@@TOUCH@@']).wait() }}{% endif %}{% endfor %}",
            "walk str -> object -> __subclasses__() to subprocess.Popen and run `touch`"),
    Payload("cycler-globals-os-popen", "file-read",
            "{{ cycler.__init__.__globals__.os.popen('cat @@SECRET_FILE@@').read() }}",
            "the classic SSTI: a global's __init__.__globals__ reaches os; read the secret with cat"),
    Payload("joiner-globals-os-system", "exec",
            "{{ joiner.__init__.__globals__.os.system('touch @@TOUCH@@') }}",
            "os.system through another default global"),
    Payload("namespace-builtins-import", "exec",
            "{{ namespace.__init__.__globals__['__builtins__']['__import__']('subprocess')"
            ".run(['touch', '@@TOUCH@@']) }}",
            "__builtins__.__import__('subprocess') through namespace, subscript syntax"),
    Payload("raise-exception-globals-open", "file-read",
            "{{ raise_exception.__globals__['__builtins__']['open']('@@SECRET_FILE@@').read() }}",
            "the renderer's own Python callable raise_exception: __globals__ -> open()"),
    Payload("self-context-os", "file-read",
            "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen("
            "'cat @@SECRET_FILE@@').read() }}",
            "the template's `self` reference, a private attribute, then os"),
    Payload("attr-filter-environ", "file-read",
            "{{ (cycler|attr('__init__')|attr('__globals__'))['os'].environ }}",
            "the attr filter instead of dots, to read the environment (second canary)"),
    Payload("format-string-environ", "file-read",
            "{{ '{0.__init__.__globals__[os].environ}'.format(cycler) }}",
            "str.format's own field lookup walks attributes, to read the environment"),
    Payload("include-file", "file-read", "{% include '@@SECRET_FILE@@' %}",
            "{% include %} of the secret file"),
    Payload("import-file", "file-read", "{% import '@@SECRET_FILE@@' as s %}{{ s }}",
            "{% import %} of the secret file"),
    Payload("extends-file", "file-read", "{% extends '@@SECRET_FILE@@' %}",
            "{% extends %} of the secret file"),
    Payload("mutate-messages", "mutation",
            "{% set _ = messages[0].update({'content': 'PWNED'}) %}{% set _ = messages.append(messages[0]) %}"
            "{{ messages|length }}",
            "change the caller's messages in place (dict.update, list.append)"),
    Payload("nested-loops", "loop",
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "10^10 iterations with an empty body"),
    Payload("huge-range", "loop", "{% for i in range(1000000000000) %}{% endfor %}",
            "a loop over a range of 10^12"),
    Payload("string-times-huge", "blowup", "{{ 'x' * 10000000000 }}",
            "one 10 GB string from `*`"),
    Payload("string-doubling", "blowup",
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"
            "{{ ns.s|length }}",
            "double a string 64 times with `~`"),
    Payload("integer-power", "blowup", "{{ 10 ** (10 ** 10) }}",
            "an integer of 10^10 digits"),
    Payload("integer-squaring", "blowup",
            "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}"
            "{{ ns.x > 1 }}",
            "square an integer 64 times (3^(2^64))"),
    Payload("format-width", "blowup", "{{ '{:>9999999999}'.format(1) }}",
            "a 10 GB padding through a str.format width"),
    Payload("filter-center", "blowup", "{{ 'x'|center(10000000000) }}",
            "a 10 GB padding through a filter"),
    Payload("macro-recursion", "recursion", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "a macro that calls itself for ever"),
    Payload("recursive-loop", "recursion", "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
            "a recursive for loop that never ends"),
    Payload("deep-nesting", "recursion", "{{ " + "(" * 50000 + "1" + ")" * 50000 + " }}",
            "50,000 nested parentheses: the parser's own recursion"),
)


PAYLOAD_IDS = tuple(p.id for p in PAYLOADS)


def payload(pid: str) -> Payload:
    return next(p for p in PAYLOADS if p.id == pid)


# --- the canary --------------------------------------------------------------------------
class Canary:
    """A private folder with a secret file, a second secret for the environment, and a path
    that must never come to exist. Use as a context manager: the folder is removed on exit,
    Ctrl-C included."""

    def __init__(self, parent: Path | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="hostile-canary-", dir=parent))
        self.secret = "CANARY-" + secrets.token_hex(16)
        self.env_secret = "ENVCANARY-" + secrets.token_hex(16)
        self.secret_file = self.dir / "secret.txt"
        self.secret_file.write_text(self.secret + "\n")
        self.touch = self.dir / "pwned"
        self.before = self._listing()

    def _listing(self) -> set[str]:
        return {p.name for p in self.dir.iterdir()}

    def fill(self, template: str) -> str:
        return template.replace("@@SECRET_FILE@@", str(self.secret_file)).replace("@@TOUCH@@", str(self.touch))

    def evidence(self, *texts: str | None) -> list[str]:
        found = []
        for t in texts:
            if t and self.secret in t:
                found.append("the secret file's content appears in the output")
            if t and self.env_secret in t:
                found.append("the environment's secret appears in the output")
        if self.touch.exists():
            found.append(f"{self.touch.name} was created (a command or a write ran)")
        new = self._listing() - self.before - {self.touch.name}
        if new:
            found.append(f"new files in the canary folder: {sorted(new)}")
        return sorted(set(found))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Canary":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
