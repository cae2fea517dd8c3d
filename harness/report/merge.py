"""`harness merge DIR... --out DIR`: the reports folders of `harness run --shard K/N` joined
into one, as if the run had not been sharded: results.json, goldens.json, junit.xml,
report.html and report.md (then `harness compare` and `harness review` read it like any run).

Refused, with a message naming the folders and the two values:
  * shards of different stacks (package versions, Python, the lock file, the llama.cpp tree,
    threads and seed): `--allow-mixed` merges them anyway and the report says what was mixed;
  * a shard given twice, a shard missing, shards of different N, a folder with no results;
  * shards planned from different collections or durations files (their plan digests differ),
    and a check found in two shards: the union would not be the unsharded run.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report import build as report
from harness.atomic import write_atomic
from harness.report.results import merge_errors

STACK_HINT = "use --allow-mixed to merge them anyway (the report marks the mix)"


class MergeError(Exception):
    """A set of shard folders that cannot be merged; the message says why."""


@dataclass
class Shard:
    dir: Path
    doc: dict[str, Any]
    goldens: dict[str, str] | None
    golden_dir: str | None

    @property
    def index(self) -> int:
        return int((self.doc.get("shard") or {}).get("index", 1))

    @property
    def total(self) -> int:
        return int((self.doc.get("shard") or {}).get("total", 1))

    @property
    def spec(self) -> str:
        return f"{self.index}/{self.total}"


def load_shard(path: Path) -> Shard:
    path = Path(path)
    results = path / "results.json" if path.is_dir() else path
    if not results.is_file():
        raise MergeError(f"{path}: no results.json (did that shard run? an empty shard writes one too)")
    try:
        doc = json.loads(results.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise MergeError(f"{results}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tests"), list):
        raise MergeError(f"{results}: not a harness results.json (no list of tests)")
    goldens, golden_dir = None, None
    gpath = results.parent / report.GOLDENS_FILE
    if gpath.is_file():
        gdoc = json.loads(gpath.read_text(encoding="utf-8"))
        goldens, golden_dir = gdoc.get("files", {}), gdoc.get("golden_dir")
    return Shard(results.parent, doc, goldens, golden_dir)


# --- what must agree ---------------------------------------------------------------------------
def _arg_value(args: list[str], option: str) -> str | None:
    for i, a in enumerate(args or []):
        if a.startswith(option + "="):
            return a.split("=", 1)[1]
        if a == option and i + 1 < len(args):
            return args[i + 1]
    return None


def stack_of(doc: dict[str, Any]) -> dict[str, str]:
    """The stack a run tested, as comparable strings. A missing key is a value of its own."""
    prov = doc.get("provenance") or {}
    out = {f"{name} version": str(v) for name, v in sorted((prov.get("packages") or {}).items())}
    out["python"] = str(prov.get("python"))
    out["lock file"] = json.dumps(prov["lock"], sort_keys=True) if "lock" in prov else "(not recorded)"
    out["--llama-cpp-tree"] = str(_arg_value(prov.get("args") or [], "--llama-cpp-tree"))
    out["threads"], out["seed"] = str(prov.get("threads")), str(prov.get("seed"))
    return out


def server_trees(doc: dict[str, Any]) -> set[str]:
    """The llama.cpp trees (and versions) llama-server was built from in this run, if it ran."""
    out = set()
    for t in doc.get("tests", []):
        info = t.get("backend_info") or {}
        if isinstance(info, dict) and info.get("tree_hash"):
            out.add(f"{info['tree_hash']} ({info.get('server_version')})")
    return out


def mixed_stacks(shards: list[Shard]) -> list[dict[str, Any]]:
    """Every stack key on which the shards differ: {key, values: {shard dir: value}}."""
    out = []
    stacks = [(s, stack_of(s.doc)) for s in shards]
    for key in sorted({k for _, st in stacks for k in st}):
        values = {str(s.dir): st.get(key, "(not recorded)") for s, st in stacks}
        if len(set(values.values())) > 1:
            out.append({"key": key, "values": values})
    trees = {str(s.dir): " + ".join(sorted(t)) for s in shards if (t := server_trees(s.doc))}
    if len(set(trees.values())) > 1:      # shards that never ran llama-server say nothing about it
        out.append({"key": "llama.cpp tree (llama-server)", "values": trees})
    return out


def _two(values: dict[str, str]) -> str:
    (a, va), (b, vb) = next(iter(values.items())), next((k, v) for k, v in values.items()
                                                         if v != next(iter(values.values())))
    return f"{va!r} in {a} but {vb!r} in {b}"


def check_set(shards: list[Shard], *, allow_mixed: bool) -> list[dict[str, Any]]:
    """Raise MergeError for a set that is not one whole run; return the stack mix (allowed)."""
    if not shards:
        raise MergeError("no shard folders given")
    totals = {s.total for s in shards}
    if len(totals) > 1:
        a = shards[0]
        b = next(s for s in shards if s.total != a.total)
        raise MergeError(f"shards of different runs: {a.dir} is shard {a.spec} but {b.dir} is shard {b.spec}")
    total = totals.pop()
    seen: dict[int, Shard] = {}
    for s in shards:
        if s.index in seen:
            raise MergeError(f"shard {s.spec} given twice: {seen[s.index].dir} and {s.dir}")
        seen[s.index] = s
    missing = [f"{k}/{total}" for k in range(1, total + 1) if k not in seen]
    if missing:
        given = ", ".join(f"{s.spec} ({s.dir})" for s in sorted(shards, key=lambda s: s.index))
        raise MergeError(f"shard(s) {', '.join(missing)} missing; given: {given}")
    mixed = mixed_stacks(shards)
    plans = {str(s.dir): (s.doc.get("shard") or {}).get("plan") or "(none)" for s in shards if total > 1}
    if len(set(plans.values())) > 1:
        mixed.append({"key": "shard plan", "values": plans})
    if mixed and not allow_mixed:
        lines = [f"{m['key']}: {_two(m['values'])}" for m in mixed]
        what = ("different stacks" if any(m["key"] != "shard plan" for m in mixed) else
                "shards planned from different collections or --durations files (their union need not be the "
                "unsharded run)")
        raise MergeError(f"cannot merge {what}:\n  " + "\n  ".join(lines) + f"\n{STACK_HINT}")
    where: dict[str, Path] = {}
    for s in shards:
        for t in s.doc["tests"]:
            if t["nodeid"] in where:
                raise MergeError(f"check {t['nodeid']} is in two shards: {where[t['nodeid']]} and {s.dir}")
            where[t["nodeid"]] = s.dir
    return mixed


# --- the merged files --------------------------------------------------------------------------------
def merged_memory(shards: list[Shard]) -> dict[str, Any]:
    """Per process, named by shard; each shard ran on its own machine, so the bound is the
    largest shard's, not the sum."""
    procs: dict[str, int] = {}
    servers: list[int] = []
    bound = 0
    for s in shards:
        mem = s.doc.get("memory") or {}
        for p, m in (mem.get("processes_mib") or {}).items():
            procs[f"shard {s.spec} {p}"] = m
        servers += mem.get("llama_server_peaks_mib") or []
        bound = max(bound, mem.get("upper_bound_mib") or 0)
    if not procs:
        return {}
    return {"processes_mib": procs, "max_process_mib": max(procs.values()),
            "llama_server_peaks_mib": sorted(servers, reverse=True), "upper_bound_mib": bound}


def merged_results(shards: list[Shard], mixed: list[dict[str, Any]]) -> dict[str, Any]:
    shards = sorted(shards, key=lambda s: s.index)
    tests = sorted((t for s in shards for t in s.doc["tests"]), key=lambda t: t["nodeid"])
    models: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for s in shards:
        for case, m in (s.doc.get("models") or {}).items():
            models.setdefault(case, m)
        merge_errors(errors, s.doc.get("errors") or [])
    statuses = [int(s.doc.get("exitstatus", 0)) for s in shards]
    # an empty shard exits 0 (5, no tests, when an older harness wrote it)
    statuses = [0 if (x == 5 and not s.doc["tests"]) else x for x, s in zip(statuses, shards)]
    first = shards[0].doc
    return {
        "format": first.get("format", "llm-harness-results/1"),
        "finished": max(str(s.doc.get("finished", "")) for s in shards),
        "exitstatus": max(statuses),
        "provenance": first.get("provenance") or {},
        "models": dict(sorted(models.items())),
        "memory": merged_memory(shards),
        "errors": errors,
        "merged": {"shards": [{"shard": s.spec, "dir": str(s.dir), "finished": s.doc.get("finished"),
                               "exitstatus": s.doc.get("exitstatus"), "checks": len(s.doc["tests"]),
                               "platform": (s.doc.get("provenance") or {}).get("platform"),
                               "plan": (s.doc.get("shard") or {}).get("plan"),
                               "expected_s": (s.doc.get("shard") or {}).get("expected_s")} for s in shards],
                   "mixed": mixed},
        "counts": dict(Counter(t["outcome"] for t in tests)),
        "tests": tests,
    }


def merged_goldens(shards: list[Shard]) -> tuple[dict[str, str], str | None] | None:
    if not any(s.goldens is not None for s in shards):
        return None
    files: dict[str, str] = {}
    for s in sorted(shards, key=lambda s: s.index):
        files.update(s.goldens or {})
    dirs = [s.golden_dir for s in shards if s.golden_dir]
    return dict(sorted(files.items())), (dirs[0] if dirs else None)


def merged_junit(shards: list[Shard]) -> ET.ElementTree | None:
    """One <testsuite> with every shard's test cases (sorted, so the file does not depend on
    the order of the shards) and the summed counts."""
    cases: list[ET.Element] = []
    suites: list[ET.Element] = []
    for s in shards:
        path = s.dir / "junit.xml"
        if not path.is_file():
            continue
        root = ET.parse(path).getroot()
        for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
            suites.append(suite)
            cases += suite.findall("testcase")
    if not suites:
        return None
    out = ET.Element("testsuite", {"name": suites[0].get("name", "pytest")})
    for attr in ("errors", "failures", "skipped", "tests"):
        out.set(attr, str(sum(int(s.get(attr, 0) or 0) for s in suites)))
    out.set("time", f"{sum(float(s.get('time', 0) or 0) for s in suites):.3f}")
    stamps = sorted(s.get("timestamp") for s in suites if s.get("timestamp"))
    if stamps:
        out.set("timestamp", stamps[0])
    out.set("hostname", ",".join(sorted({s.get("hostname") for s in suites if s.get("hostname")})))
    for c in sorted(cases, key=lambda c: (c.get("classname", ""), c.get("name", ""))):
        out.append(c)
    top = ET.Element("testsuites")
    top.append(out)
    return ET.ElementTree(top)


def stale_goldens(shards: list[Shard], tests: list[dict[str, Any]], golden_dir: Path | None) -> list[str] | None:
    """Goldens no check of the whole run produced (review.stale_goldens), when every shard ran
    whole modules (a shard alone cannot tell); None when not checked."""
    if golden_dir is None or not Path(golden_dir).is_dir() or not all(
            (s.doc.get("shard") or {}).get("whole_modules") for s in shards):
        return None
    from harness.report.review import stale_goldens as find
    return [str(f.relative_to(golden_dir)) for f in find(Path(golden_dir), tests)]


def merge(dirs: list[Path], out: Path, *, allow_mixed: bool = False, baseline: Path | None = None,
          golden_dir: Path | None = None) -> dict[str, Any]:
    """Merge shard folders into `out`; returns the merged results document."""
    shards = [load_shard(Path(d)) for d in dirs]
    mixed = check_set(shards, allow_mixed=allow_mixed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = merged_results(shards, mixed)
    stale = stale_goldens(shards, doc["tests"], golden_dir)
    if stale:
        doc["stale_goldens"] = {"found": stale}
        doc["exitstatus"] = max(doc["exitstatus"], 1)
    write_atomic(out / "results.json", json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    goldens = merged_goldens(shards)
    if goldens is not None:
        report.write_goldens_files(out, goldens[0], goldens[1])
    junit = merged_junit(shards)
    if junit is not None:
        ET.indent(junit)
        junit.write(out / "junit.xml", encoding="utf-8", xml_declaration=True)
    changes = None
    if baseline is not None:
        from harness.report.changes import compare, load_result_set
        changes = compare(load_result_set(baseline), load_result_set(out))
    report.build_report(out, changes=changes)
    return doc


def run(ns) -> int:
    """`harness merge` (arguments: see harness/cli.py)."""
    try:
        doc = merge([Path(d) for d in ns.dirs], Path(ns.out), allow_mixed=ns.allow_mixed,
                    baseline=Path(ns.baseline) if ns.baseline else None,
                    golden_dir=Path(ns.golden_dir) if ns.golden_dir else Path(ns.root) / "golden")
    except MergeError as exc:
        print(f"harness merge: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"harness merge: {exc}", file=sys.stderr)
        return 2
    shards = doc["merged"]["shards"]
    print(f"merged {len(shards)} shard(s), {len(doc['tests'])} checks "
          f"({', '.join(f'{n} {k}' for k, n in sorted(doc['counts'].items()))}) into {ns.out}")
    for m in doc["merged"]["mixed"]:
        print(f"MIXED {m['key']}: " + "; ".join(f"{d}: {v}" for d, v in m["values"].items()))
    stale = (doc.get("stale_goldens") or {}).get("found") or []
    if stale:
        print(f"goldens: {len(stale)} stale (no check of the merged run produced them; `harness run "
              "--update-goldens` removes them):", file=sys.stderr)
        for f in stale[:20]:
            print(f"  {f}", file=sys.stderr)
        return 1
    return 0
