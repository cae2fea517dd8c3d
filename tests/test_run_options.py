"""Every plugin option the README lists works on `harness run` itself (issue 17)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import cli
from harness.run.options import RUN_OPTIONS

REPO = Path(__file__).resolve().parent.parent

# one value per option, as a contributor would give it
VALUES = {
    "--cases": "cases", "--golden-dir": "golden", "--model-dir": "models", "--threads": "2", "--seed": "7",
    "--server-url": "http://127.0.0.1:8080", "--server-binary": "bin/llama-server",
    "--llama-cpp-tree": "llama.cpp", "--openai-url": "http://127.0.0.1:9000/v1",
    "--openai-capabilities": "chat,stream,tools", "--case-timeout": "30", "--memory-ceiling": "2048",
}


def readme_plugin_options() -> set[str]:
    """The options of the README's "the plugin is registered as `harness` and adds ..." paragraph
    and of its robustness paragraph."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    para = text[text.index("the plugin is registered as"):]
    para = para[:para.index("\n\n")]
    robust = text[text.index("Robustness:"):]
    robust = robust[:robust.index("\n\n")]
    return set(re.findall(r"`(--[a-z-]+)", para + robust))


def captured_args(monkeypatch, argv: list[str]) -> list[str]:
    seen: list[list[str]] = []
    monkeypatch.setattr(pytest, "main", lambda args: seen.append(list(args)) or 0)
    assert cli.main(argv) == 0
    return seen[0]


def test_every_readme_option_is_a_run_option():
    own = {"--case", "--backend", "--report-dir"}            # harness run's own, long-standing
    missing = readme_plugin_options() - own - {o.flag for o in RUN_OPTIONS}
    assert not missing, f"README lists {sorted(missing)} but `harness run` does not accept them"


def test_every_run_option_is_a_plugin_option(pytestconfig):
    # the plugin is loaded in this session (entry point `harness`): each flag must be one of its options
    for o in RUN_OPTIONS:
        assert pytestconfig.getoption(o.flag.lstrip("-").replace("-", "_"), default="<none>") != "<none>", o.flag


@pytest.mark.parametrize("flag", [o.flag for o in RUN_OPTIONS])
def test_run_option_reaches_pytest(flag, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    option = next(o for o in RUN_OPTIONS if o.flag == flag)
    value = VALUES[flag]
    args = captured_args(monkeypatch, ["--root", str(REPO), "run", "--case", "smollm2-*", flag, value,
                                       "--", "-x"])
    expected = str((tmp_path / value).resolve()) if option.path else value
    assert f"{flag}={expected}" in args
    # after the defaults (a given --cases or --golden-dir wins) and before the pytest passthrough
    assert args.index(f"{flag}={expected}") < args.index("-x")
    defaults = [i for i, a in enumerate(args) if a.startswith(f"{flag}=") and a != f"{flag}={expected}"]
    assert all(i < args.index(f"{flag}={expected}") for i in defaults)


def test_model_dir_repeats(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = captured_args(monkeypatch, ["--root", str(REPO), "run", "--model-dir", "a", "--model-dir", "b"])
    assert [a for a in args if a.startswith("--model-dir=")] == [f"--model-dir={tmp_path / 'a'}",
                                                                 f"--model-dir={tmp_path / 'b'}"]


def test_run_options_are_understood_by_pytest(pytester):
    """Not only passed: a real collection with --model-dir and --llama-cpp-tree on `harness run`
    reaches the plugin (an unknown option would make pytest exit 4, 'unrecognized arguments')."""
    models = pytester.mkdir("models")
    tree = pytester.mkdir("tree")
    status = cli.main(["--root", str(REPO), "run", "-n", "0", "--case", "no-such-case-*",
                       "--report-dir", str(pytester.path / "reports"),
                       "--model-dir", str(models), "--llama-cpp-tree", str(tree), "--threads", "1",
                       "--", "--collect-only", "-q", "-p", "no:randomly"])
    assert status in (0, 5), status          # 5: nothing collected for a case id that matches nothing


def test_a_namespace_without_the_run_options_gives_none():
    """The overhead bench builds its own namespace for `harness run` (harness/bench_suite/
    test_harness_overhead.py): options it does not set are simply not passed (a repeatable one
    missing raised TypeError, and `harness bench --overhead` failed before running anything)."""
    import argparse
    from harness.run.options import run_option_args
    assert run_option_args(argparse.Namespace()) == []
