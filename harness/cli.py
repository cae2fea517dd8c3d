"""`harness run | fetch | cases | lint | new-case | compare` — the command line.

`harness run` is pytest over the installed check families (harness/suite) with the
repository's cases/, golden/ and reports/; anything after `--` goes to pytest as is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SUITE = Path(__file__).parent / "suite"


def _pytest_args(ns: argparse.Namespace, extra: list[str]) -> list[str]:
    root = Path(ns.root).resolve()
    reports = Path(ns.report_dir).resolve() if ns.report_dir else root / "reports"
    args = [str(SUITE), f"--rootdir={root}", "-p", "no:cacheprovider",
            f"--cases={root / 'cases'}", f"--golden-dir={root / 'golden'}", f"--report-dir={reports}",
            f"--junitxml={reports / 'junit.xml'}", "-o", "junit_family=xunit2", "-q", "-rfEX"]
    for c in ns.case or []:
        args.append(f"--case={c}")
    for b in ns.backend or []:
        args.append(f"--backend={b}")
    if ns.update_goldens:
        args.append("--snapshot-update")
    if ns.workers:
        args += ["-n", str(ns.workers)]
    return args + extra


def cmd_run(ns: argparse.Namespace, extra: list[str]) -> int:
    import pytest
    args = _pytest_args(ns, extra)
    if ns.family:
        # a family is a module of harness/suite: test_<family>.py
        args[0:1] = [str(SUITE / f"test_{f.removeprefix('test_').removesuffix('.py')}.py") for f in ns.family]
    return int(pytest.main(args))


def cmd_fetch(ns: argparse.Namespace, extra: list[str]) -> int:
    """Resolve and verify every model file the cases name (what CI does before running)."""
    from .cases import discover
    from .errors import SourceError
    from .sources import FileSpec, resolve
    cases = discover(Path(ns.root) / "cases", select=ns.case or None)
    status = 0
    for err in cases.errors:
        print(f"error: {err}", file=sys.stderr)
        status = 1
    for case in cases.cases:
        if case.kind != "model":
            continue
        try:
            res = resolve(FileSpec.from_case(case.model["gguf"]))
            print(f"{case.id}: {res.path} (from {res.source})")
        except SourceError as exc:
            print(f"{case.id}: {exc}", file=sys.stderr)
            status = 1
    return status


def cmd_cases(ns: argparse.Namespace, extra: list[str]) -> int:
    from .cases import discover
    cases = discover(Path(ns.root) / "cases", select=ns.case or None)
    for case in cases.cases:
        print(f"{case.id:70} {case.kind:9} {case.location()}")
    for err in cases.errors:
        print(f"error: {err}", file=sys.stderr)
    return 1 if cases.errors else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.getcwd(), help="repository root with cases/, golden/, reports/")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the conformance suite (pytest); args after -- go to pytest")
    run.add_argument("--case", action="append", help="case id glob (repeatable)")
    run.add_argument("--backend", action="append", help="backend name (repeatable)")
    run.add_argument("--family", action="append", help="check family, e.g. templates (repeatable)")
    run.add_argument("--update-goldens", action="store_true", help="write goldens (syrupy --snapshot-update)")
    run.add_argument("-n", "--workers", help="pytest-xdist workers, e.g. 2 or auto")
    run.add_argument("--report-dir", help="where results.json and junit.xml go (default: reports/)")
    run.set_defaults(func=cmd_run)

    fetch = sub.add_parser("fetch", help="resolve and verify every model file the cases name")
    fetch.add_argument("--case", action="append")
    fetch.set_defaults(func=cmd_fetch)

    cases = sub.add_parser("cases", help="list the cases and where they are defined")
    cases.add_argument("--case", action="append")
    cases.set_defaults(func=cmd_cases)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ns = build_parser().parse_args(argv)
    return ns.func(ns, extra)


if __name__ == "__main__":
    sys.exit(main())
