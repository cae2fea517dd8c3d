"""`harness run | merge | report | fetch | cases | lint | new-case | review | bench | compare` — the command line.

`harness run` is pytest over the installed check families (harness/suite) with the
repository's cases/, golden/ and reports/; anything after `--` goes to pytest as is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SUITE = Path(__file__).parent / "suite"


def pytest_args(ns: argparse.Namespace, extra: list[str]) -> list[str]:
    root = Path(ns.root).resolve()
    reports = Path(ns.report_dir).resolve() if ns.report_dir else root / "reports"
    shard = getattr(ns, "shard", None)
    if shard and not ns.report_dir:       # each shard its own folder, for `harness merge`
        reports = reports / f"shard-{shard.index}-of-{shard.total}"
    args = [str(SUITE), f"--rootdir={root}", "-p", "no:cacheprovider",
            f"--cases={root / 'cases'}", f"--golden-dir={root / 'golden'}", f"--report-dir={reports}",
            f"--junitxml={reports / 'junit.xml'}", "-o", "junit_family=xunit2", "-q", "-rfEX"]
    for c in ns.case or []:
        args.append(f"--case={c}")
    for b in ns.backend or []:
        args.append(f"--backend={b}")
    if ns.update_goldens:
        args.append("--snapshot-update")
    if shard:
        args.append(f"--shard={shard}")
    if getattr(ns, "durations", None):
        args.append(f"--shard-durations={Path(ns.durations).resolve()}")
    if ns.workers not in (None, "0"):
        # xdist isolates native crashes (a crashed worker fails its current test and is
        # replaced); loadgroup keeps each case on one worker so models load once
        args += ["-n", str(ns.workers), "--dist", "loadgroup", "--max-worker-restart", "20"]
    from harness.run.options import run_option_args
    return args + run_option_args(ns) + extra   # after the defaults: a given --cases/--golden-dir wins


def cmd_run(ns: argparse.Namespace, extra: list[str]) -> int:
    import pytest
    if ns.durations and not ns.shard:
        print("harness run: --durations balances shards; give --shard K/N too", file=sys.stderr)
        return 2
    if ns.shard:
        from harness.run.shard import ShardSpec
        try:
            ns.shard = ShardSpec.parse(ns.shard)
        except ValueError as exc:
            print(f"harness run: {exc}", file=sys.stderr)
            return 2
    args = pytest_args(ns, extra)
    if ns.family:
        # a family's suite module, from the registry (harness/families)
        from harness.families import BY_NAME, suite_families
        names = [f.removeprefix("test_").removesuffix(".py") for f in ns.family]
        unknown = [n for n in names if n not in BY_NAME or BY_NAME[n].suite is None]
        if unknown:
            known = ", ".join(f.name for f in suite_families())
            print(f"harness run: unknown check family {', '.join(unknown)} (known: {known})", file=sys.stderr)
            return 2
        args[0:1] = [str(SUITE / f"{BY_NAME[n].suite.rpartition('.')[2]}.py") for n in names]
    return int(pytest.main(args))


def cmd_fetch(ns: argparse.Namespace, extra: list[str]) -> int:
    """Resolve and verify every model file the cases name (what CI does before running)."""
    from harness.cases.model import discover
    from .errors import SourceError
    from harness.models.sources import FileSpec, resolve
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
    from harness.cases.model import discover
    cases = discover(Path(ns.root) / "cases", select=ns.case or None)
    for case in cases.cases:
        print(f"{case.id:70} {case.kind:9} {case.location()}")
    for err in cases.errors:
        print(f"error: {err}", file=sys.stderr)
    return 1 if cases.errors else 0


def cmd_new_case(ns: argparse.Namespace, extra: list[str]) -> int:
    """Write a complete, commented case file for a GGUF (harness/cases/newcase.py)."""
    from harness.cases import newcase
    return newcase.run(ns)


def cmd_lint(ns: argparse.Namespace, extra: list[str]) -> int:
    """Validate every case file; unused shared files and unpinned sources (harness/cases/lint.py)."""
    from harness.cases import lint
    return lint.run(ns)


def cmd_review(ns: argparse.Namespace, extra: list[str]) -> int:
    """The review summary of the last run, per case (harness/report/review.py)."""
    from harness.report import review
    return review.run(ns)


def cmd_bench(ns: argparse.Namespace, extra: list[str]) -> int:
    """Throughput and harness-overhead benchmarks (pytest-benchmark over harness/bench_suite);
    every run is saved under reports/benchmarks/<machine>/ and the report is refreshed."""
    import pytest
    root = Path(ns.root).resolve()
    reports = root / "reports"
    args = [str(Path(__file__).parent / "bench_suite"), f"--rootdir={root}", "-p", "no:cacheprovider",
            f"--cases={root / 'cases'}", f"--golden-dir={root / 'golden'}",
            f"--report-dir={reports / 'bench'}", f"--benchmark-storage=file://{reports / 'benchmarks'}",
            "--benchmark-columns=min,mean,max,stddev,rounds", "--benchmark-sort=name", "-q", "-rfE",
            f"--threads={ns.threads}", f"--overhead-scope={ns.overhead}", f"--collect-cases={ns.collect_cases}",
            f"--bench-timer={ns.timer}"]
    args.append(f"--benchmark-save={ns.save}" if ns.save else "--benchmark-autosave")
    if ns.compare is not None:
        saved = sorted((reports / "benchmarks").glob("*/[0-9][0-9][0-9][0-9]_*.json"))
        if ns.compare is True:
            found = saved[-1:]
        else:   # a run number (0001), a saved name (baseline) or a file stem (0001_baseline)
            found = [p for p in saved if ns.compare in (p.stem, p.stem[:4], p.stem[5:])][-1:]
        if not found:
            listed = ", ".join(p.stem for p in saved[-10:]) or "none"
            print(f"harness bench: no saved run matches {ns.compare!r} in {reports / 'benchmarks'} "
                  f"(latest: {listed})", file=sys.stderr)
            return 2
        args.append(f"--benchmark-compare={found[0].stem}")
    args += [f"--benchmark-compare-fail={f}" for f in ns.compare_fail or []]
    args += [f"--case={c}" for c in ns.case or []] + [f"--backend={b}" for b in ns.backend or []]
    if ns.rounds:
        args.append(f"--rounds={ns.rounds}")
    from pytest_benchmark.session import PerformanceRegression
    try:
        rc = int(pytest.main(args + extra))
    except PerformanceRegression as exc:  # raised from pytest-benchmark's summary; the run is already saved
        print(f"harness bench: {exc} (see the comparison above)", file=sys.stderr)
        rc = 1
    if (reports / "results.json").exists():
        from harness.report.build import write_report
        write_report(reports)          # refresh the throughput section and chart of reports/report.*
    return rc


def cmd_merge(ns: argparse.Namespace, extra: list[str]) -> int:
    """Shard folders of one run into one (harness/report/merge.py)."""
    from harness.report import merge
    return merge.run(ns)


def cmd_report(ns: argparse.Namespace, extra: list[str]) -> int:
    """Write a folder's report.html and report.md again, with changes against a baseline."""
    from harness.report.build import build_report
    changes = None
    try:
        if ns.baseline:
            from harness.report.changes import compare, load_result_set
            changes = compare(load_result_set(ns.baseline), load_result_set(ns.dir))
        written = build_report(Path(ns.dir), changes=changes)
    except (OSError, ValueError) as exc:
        print(f"harness report: {exc}", file=sys.stderr)
        return 2
    print(f"written: {written['html']} and {written['md']}")
    return 0


def cmd_compare(ns: argparse.Namespace, extra: list[str]) -> int:
    """What changed between two result sets (harness/report/compare.py)."""
    from harness.report import compare
    return compare.run(ns)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    p.add_argument("--root", default=os.getcwd(), help="repository root with cases/, golden/, reports/")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the conformance suite (pytest); args after -- go to pytest")
    run.add_argument("--case", action="append", help="case id glob (repeatable)")
    run.add_argument("--backend", action="append", help="backend name (repeatable)")
    run.add_argument("--family", action="append", help="check family, e.g. templates (repeatable)")
    run.add_argument("--update-goldens", action="store_true", help="write goldens (syrupy --snapshot-update)")
    run.add_argument("-n", "--workers", default="2",
                     help="pytest-xdist workers (default 2; 0 runs serially in one process)")
    run.add_argument("--report-dir", help="where results.json and junit.xml go (default: reports/, and "
                                          "reports/shard-K-of-N/ with --shard)")
    run.add_argument("--shard", metavar="K/N", help="run only shard K of N (whole cases, balanced by expected cost; "
                                                    "join the shards with `harness merge`)")
    run.add_argument("--durations", metavar="RESULTS_JSON",
                     help="balance the shards by the check durations of this earlier results.json (or its folder)")
    from harness.run.options import add_run_options
    add_run_options(run)
    run.set_defaults(func=cmd_run)

    merge_p = sub.add_parser("merge", help="join the reports folders of `harness run --shard K/N` into one "
                                           "(results.json, goldens.json, junit.xml, report.html, report.md)")
    merge_p.add_argument("dirs", nargs="+", metavar="DIR", help="a shard's reports folder (every shard of the run)")
    merge_p.add_argument("--out", required=True, help="folder for the merged files")
    merge_p.add_argument("--allow-mixed", action="store_true",
                         help="merge shards of different stacks anyway (the report marks the mix)")
    merge_p.add_argument("--baseline", help="a previous result set: the report lists what changed against it")
    merge_p.add_argument("--golden-dir", help="goldens folder for the stale-golden check of a run of whole modules "
                                              "(default: <root>/golden)")
    merge_p.set_defaults(func=cmd_merge)

    report_p = sub.add_parser("report", help="write a reports folder's report.html and report.md again "
                                             "(optionally with the changes against a baseline)")
    report_p.add_argument("dir", help="a reports folder with results.json")
    report_p.add_argument("--baseline", help="a previous result set: the report lists what changed against it")
    report_p.set_defaults(func=cmd_report)

    fetch = sub.add_parser("fetch", help="resolve and verify every model file the cases name")
    fetch.add_argument("--case", action="append")
    fetch.set_defaults(func=cmd_fetch)

    cases = sub.add_parser("cases", help="list the cases and where they are defined")
    cases.add_argument("--case", action="append")
    cases.set_defaults(func=cmd_cases)

    from harness.cases import lint
    from harness.cases import newcase
    from harness.report import review
    new_case = sub.add_parser("new-case", help="write a complete, commented case file for a GGUF",
                              description=newcase.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    newcase.add_arguments(new_case)
    new_case.set_defaults(func=cmd_new_case)

    lint_p = sub.add_parser("lint", help="validate every case file; unused shared contexts, duplicate ids, "
                                         "known defects without a real description",
                            description=lint.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    lint.add_arguments(lint_p)
    lint_p.set_defaults(func=cmd_lint)

    review_p = sub.add_parser("review", help="per-case review summary of the last run (goldens, backends, "
                                             "skips, failures)")
    review.add_arguments(review_p)
    review_p.set_defaults(func=cmd_review)
    bench = sub.add_parser("bench", help="throughput and harness-overhead benchmarks (pytest-benchmark); "
                                         "saved under reports/benchmarks/; args after -- go to pytest")
    bench.add_argument("--save", metavar="NAME", help="save the run as NAME (default: autosave, numbered)")
    bench.add_argument("--compare", nargs="?", const=True, metavar="NUM|NAME",
                       help="compare with a saved run (default: the latest one)")
    bench.add_argument("--compare-fail", action="append", metavar="EXPR",
                       help="fail past this regression, e.g. mean:10%% or min:0.05 (repeatable; needs --compare)")
    bench.add_argument("--case", action="append", help="case id glob (repeatable)")
    bench.add_argument("--backend", action="append", help="backend name (repeatable)")
    bench.add_argument("--threads", type=int, default=1, help="backend threads (default 1)")
    bench.add_argument("--rounds", type=int, help="override each case's throughput rounds")
    bench.add_argument("--timer", default="wall", choices=["wall", "cpu"],
                       help="what the saved statistics and --compare-fail measure: wall time (default) or CPU time "
                            "of the harness and llama-server (far less noisy on a shared machine)")
    bench.add_argument("--overhead", default="quick", choices=["quick", "models", "full", "off"],
                       help="suite run measured for harness overhead (default quick; see harness/bench_suite)")
    bench.add_argument("--collect-cases", type=int, default=1000,
                       help="generated cases for the collection-time benchmark (default 1000; 0 skips)")
    bench.set_defaults(func=cmd_bench)

    cmp_p = sub.add_parser("compare", help="what changed between two result sets (goldens, check status, "
                                           "throughput), in Markdown and HTML")
    cmp_p.add_argument("old", help="OLD result set: a reports folder, its results.json, or a saved benchmark run")
    cmp_p.add_argument("new", help="NEW result set")
    cmp_p.add_argument("--old-bench", help="saved benchmark run to use for OLD (default: latest in OLD/benchmarks)")
    cmp_p.add_argument("--new-bench", help="saved benchmark run to use for NEW")
    cmp_p.add_argument("--out", help="folder for compare.md and compare.html (default: NEW/compare)")
    cmp_p.add_argument("--min-change", type=float, default=0.05,
                       help="smallest relative throughput change reported (default 0.05)")
    cmp_p.add_argument("--noise-k", type=float, default=3.0,
                       help="a change must exceed this many standard errors of the rounds (default 3)")
    cmp_p.add_argument("--ratio-threshold", type=float, default=0.10,
                       help="smallest relative move of a cross-backend throughput ratio (e.g. llama-cpp-python / "
                            "llama-server tokens/s on one model and constraint) that is flagged (default 0.10)")
    cmp_p.add_argument("--limit", type=int, default=400, help="most items listed per section on stdout")
    cmp_p.add_argument("--quiet", action="store_true", help="print only the summary lines")
    cmp_p.add_argument("--fail-on-change", action="store_true", help="exit 1 when anything changed")
    cmp_p.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ns = build_parser().parse_args(argv)
    try:
        return ns.func(ns, extra)
    except BrokenPipeError:
        # `harness review | head`: the reader has gone; say nothing more (and not at exit)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
