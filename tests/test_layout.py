"""The layout's rules, kept true (issue 14): no private names imported across modules, no import
cycles between harness modules, every registered check found in the code, and modules under the
size limit. AST only: nothing here imports the harness's heavy modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from harness.families import FAMILIES, checked_families

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(HARNESS.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) of every import in the file, at any depth."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
    return out


def test_no_private_names_imported_across_modules():
    files = [*HARNESS.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    modules = _modules()
    bad = []
    for path in files:
        for target, names, line in _imports(path):
            if not target.startswith("harness"):
                continue
            for name in names:
                if name.startswith("_") and not name.startswith("__") and f"{target}.{name}" not in modules:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: from {target} import {name}")
            if any(part.startswith("_") and not part.startswith("__") for part in target.split(".")):
                # a private module may be used inside its own package only
                owner = target.rpartition(".")[0]
                if not _module_name(path).startswith(owner + ".") and _module_name(path) != owner:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: imports private module {target}")
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for target, names, _ in _imports(path):
            for cand in [f"{target}.{n}" for n in names] + [target]:
                if cand in modules and cand != mod:
                    graph[mod].add(cand)
                    break
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    """Every import counts, module-level or inside a function (a deferred import still ties the
    two modules together). A package's __init__ importing its own submodules is not a cycle."""
    graph = _graph()
    for mod in graph:   # a submodule importing its package's data (__init__) is fine when __init__ is data only
        graph[mod] = {t for t in graph[mod] if not mod.startswith(t + ".")}
    assert _cycles(graph) == []


def _source_check_names() -> set[tuple[str, str]]:
    """`"family.check"` strings (and f"{FAMILY}.check") in the harness's code: what the registry
    must list."""
    families = {f.name for f in checked_families()}
    found = set()
    for path in HARNESS.rglob("*.py"):
        if path.name == "__init__.py" and path.parent.name == "families":
            continue
        text = path.read_text(encoding="utf-8")
        names = re.findall(r"""["']([a-z_]+)\.([a-z_]+)["']""", text)
        fam = re.search(r"""^FAMILY\s*=\s*["']([a-z_]+)["']""", text, re.M)
        if fam:
            names += [(fam.group(1), c) for c in re.findall(r"""f["']\{FAMILY\}\.([a-z_]+)["']""", text)]
        found |= {(f, c) for f, c in names if f in families}
    return found


def test_registry_lists_every_check_the_code_names():
    registered = {(f.name, c) for f in FAMILIES for c in f.checks}
    in_code = _source_check_names()
    assert in_code - registered == set(), "checks named in the code but not registered (harness/families)"
    assert registered - in_code == set(), "registered checks no code names"


def test_every_suite_family_has_its_module():
    for f in FAMILIES:
        if f.suite:
            assert (ROOT / (f.suite.replace(".", "/") + ".py")).is_file(), f.suite


def test_modules_under_the_size_limit():
    big = [f"{p.relative_to(ROOT)}: {n}" for p in HARNESS.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450]
    assert not big, big


def test_registry_lookups():
    from harness.families import family, family_of_suite, suite_families
    assert family_of_suite("harness.suite.test_templates").name == "templates"
    assert family_of_suite("harness.suite.test_nothing") is None
    assert [f.name for f in suite_families()][:2] == ["case_files", "templates"]
    with pytest.raises(KeyError, match="known: case_files, templates"):
        family("tempaltes")


def test_run_rejects_an_unknown_family(capsys):
    from harness.cli import main
    assert main(["run", "--family", "tempaltes"]) == 2
    assert "unknown check family tempaltes" in capsys.readouterr().err


def test_one_atomic_write(tmp_path):
    from harness.atomic import write_atomic
    target = tmp_path / "sub" / "x.json"
    assert write_atomic(target, "one") == target
    write_atomic(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]    # no temporary left behind


def test_tests_use_no_private_harness_attributes():
    """tests/ reach the harness through public names only: no `module._name` on a harness module
    they imported (a private helper a test needs is made public instead)."""
    bad = []
    for path in (ROOT / "tests").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("harness"):
                aliases |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                aliases |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("harness")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in aliases):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, bad
