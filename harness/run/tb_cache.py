"""One parsed syntax tree per source file for pytest's failure reports, across tests.

pytest formats a failure (and every xfail the harness turns a known defect into) by locating each
traceback line's statement: `getstatementrange_ast` parses the frame's whole module with
ast.parse and walks it. pytest reuses the tree within one report (its `astcache`) but parses
again for the next one, so the ~900 known defects of a default run parsed the same few modules
~2,000 times (about 27 ms per xfail measured, 12 s of the run's wall time). This keeps the parsed
tree per source text for the process and hands it to pytest as the `astnode` pytest's own cache
would have passed: the same tree, so every report is byte for byte what it was.

`install()` wraps the two module-level names pytest calls (pinned pytest 9.2; if they are missing,
nothing is patched and reports are built as before).
"""

from __future__ import annotations

import ast
import warnings
from typing import Any

_TREES: dict[str, ast.AST] = {}
_MAX_TREES = 256


def _cached(original):
    def getstatementrange_ast(lineno: int, source: Any, assertion: bool = False,
                              astnode: ast.AST | None = None):
        if astnode is None:
            content = str(source)
            astnode = _TREES.get(content)
            if astnode is None:
                with warnings.catch_warnings():          # as pytest parses it (its #4260)
                    warnings.simplefilter("ignore")
                    astnode = ast.parse(content, "source", "exec")
                if len(_TREES) >= _MAX_TREES:
                    _TREES.pop(next(iter(_TREES)))
                _TREES[content] = astnode
        return original(lineno, source, assertion, astnode)
    getstatementrange_ast.__wrapped__ = original
    return getstatementrange_ast


def clear() -> None:
    """Forget every kept tree (the harness's own tests)."""
    _TREES.clear()


def install() -> bool:
    try:
        from _pytest._code import code, source
    except ImportError:
        return False
    original = getattr(source, "getstatementrange_ast", None)
    if original is None or hasattr(original, "__wrapped__"):
        return original is not None
    wrapped = _cached(original)
    source.getstatementrange_ast = wrapped
    if getattr(code, "getstatementrange_ast", None) is original:
        code.getstatementrange_ast = wrapped
    return True
