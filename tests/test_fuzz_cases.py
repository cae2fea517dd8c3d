"""Fuzzing the case loader: YAML text -> yamlio -> schema -> cases.discover.

Whatever the input, the loader returns data or raises CaseError with `file:line:col: path:
message` lines; never another exception, never a hang. Inputs: arbitrary text, text glued
from YAML and case-file fragments, real case files with random edits, and generated case-like
documents with values of the wrong type. Hypothesis runs derandomized and database-less (CI is
reproducible) with a time budget per example; an atheris run (coverage-guided, when atheris is
installed) gets a bounded time too.

Found by this file and fixed in harness/cases/yamlio.py (reproducers kept in REGRESSIONS):
  * `a: &a [*a]` (a recursive alias) made _construct recurse until RecursionError;
  * nested aliases expanded exponentially ("billion laughs": 6 levels of 9 took 14 s);
  * 2,000 nested brackets raised RecursionError from PyYAML's composer;
  * `!!int` with no digits raised IndexError from PyYAML's constructor (and `!!float x`
    ValueError);
  * a NUL character gave a two-line message ending in `in "<unicode string>", position 19`
    instead of the line and column.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fuzzing import HANG_S, fuzz_settings, mutate, time_budget

from harness.cases.model import discover
from harness.errors import CaseError
from harness.cases.schema import CASE_SCHEMA, CONTEXT_SCHEMA, TOOLSET_SCHEMA, validate
from harness.cases.yamlio import load_located

REPO = Path(__file__).resolve().parents[1]
CASES = REPO / "cases"
TIME_BUDGET_S = HANG_S
PROBLEM_LINE = re.compile(r"^\S.*?(:\d+:\d+)?: \S.*: .+", re.S)

SETTINGS = fuzz_settings(300, HealthCheck.function_scoped_fixture)

REGRESSIONS = [
    "a: &a [*a]\n",
    "a: &a {b: *a}\n",
    "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n",
    "[" * 2000 + "]" * 2000,
    "a:\n" + "".join(" " * i + "- \n" for i in range(1, 1500)),
    "!!python/object/apply:os.system ['touch /tmp/x']",
    "a: 1\n---\nb: 2\n",
    "\ufeffschema: 1\n",
    "schema: 1\nid: x\nx: \x00\n",
    "? [a, b]\n: c\n",
    "<<: {a: 1}\n",
    "",
    "!!int",                 # PyYAML's int constructor raised IndexError
    "a: !!float x\n",
    "a: !!int 0x\n",
]

FRAGMENTS = ["schema: 1\n", "id: x\n", "description: d\n", "model:\n", "  gguf:\n", "    file: f.gguf\n",
             "    sha256: " + "ab" * 32 + "\n", "  weights: true\n", "contexts: [single-user]\n", "checks:\n",
             "  templates: {renderers: [hf]}\n", "known_defects:\n", "  - check: templates.agree\n",
             "    where: {renderer: hf}\n", "    description: something is wrong upstream\n", "kind: template-set\n",
             "- ", ": ", "{", "}", "[", "]", ",", "&a ", "*a", "!!str ", "!!int ", "? ", "|\n", ">-\n", "'", '"',
             "#", "\n", "  ", "\t", "null", "~", "true", "0x1F", "1e400", ".nan", "-.inf", "2001-12-14", "<<: ",
             "\ufeff", "\x85", "\u2028", "---\n", "...\n", "%YAML 1.1\n"]



def assert_clear(exc: CaseError) -> None:
    assert exc.problems, "a CaseError must carry at least one problem"
    for problem in exc.problems:
        first = str(problem).splitlines()[0]
        assert PROBLEM_LINE.match(first), f"not a `file:line:col: path: message` line: {first!r}"


def load(text: str) -> None:
    with time_budget(TIME_BUDGET_S):
        try:
            located = load_located(text, "cases/x.yaml")
        except CaseError as exc:
            assert_clear(exc)
            return
        for schema in (CASE_SCHEMA, CONTEXT_SCHEMA, TOOLSET_SCHEMA):
            for problem in validate(located, schema):
                assert PROBLEM_LINE.match(str(problem)), str(problem)


def _real_texts() -> list[str]:
    paths = sorted(CASES.glob("*.yaml"))[:6] + sorted((CASES / "contexts").glob("*.yaml")) + sorted(
        (CASES / "tools").glob("*.yaml"))
    return [p.read_text(encoding="utf-8") for p in paths]


REAL = _real_texts()


frag = st.sampled_from(FRAGMENTS)
glued = st.lists(st.one_of(frag, frag, st.text(max_size=4)), max_size=40).map("".join)
edit = st.tuples(st.integers(0, 100_000), st.integers(0, 12), st.one_of(frag, st.text(max_size=3)),
                 st.integers(0, 6).map(lambda k: k == 0))
mutated = st.builds(mutate, st.sampled_from(REAL), st.lists(edit, max_size=3))


def _with_regressions(fn):
    for text in REGRESSIONS:
        fn = example(text=text)(fn)
    return fn


@SETTINGS
@_with_regressions
@given(text=st.one_of(st.text(max_size=200), glued, mutated))
def test_yaml_and_schema_never_raise_anything_but_case_error(text):
    load(text)


# structured documents: the right keys with values of any type, so the schema's error
# translation sees every validator (type, enum, pattern, oneOf, required, additionalProperties)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2, 2 ** 70), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["hf", "single-user", "ab" * 32, "templates.agree", "x==1"]))
_value = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["file", "sha256", "size", "hub", "repo", "revision", "mirror", "pypi", "pypi_sdist",
                     "member", "parts", "renderers", "contexts", "check", "where", "description", "reported",
                     "gguf", "weights", "chat_template", "tokenizer", "from_gguf", "grammars", "stops", "id",
                     "accept", "reject", "gbnf", "prompt", "max_tokens", "x"]), inner, max_size=4), max_leaves=12)
_doc = st.fixed_dictionaries({}, optional={k: _value for k in (
    "schema", "id", "description", "kind", "model", "contexts", "checks", "known_defects", "tags", "templates",
    "messages", "tools", "add_generation_prompt", "typo")})


@SETTINGS
@given(doc=_doc)
def test_generated_case_documents_fail_with_located_problems(doc):
    load(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=mutated, context=st.builds(mutate, st.sampled_from(REAL[6:] or REAL), st.lists(edit, max_size=2)))
def test_discover_keeps_every_other_case_when_one_file_is_broken(tmp_path_factory, case, context):
    """A tree with one mutated case file and one mutated shared file next to a good case:
    discover() never raises, reports problems as CaseErrors, and keeps the good case."""
    root = tmp_path_factory.mktemp("fuzz") / "cases"
    shutil.copytree(CASES / "contexts", root / "contexts")
    shutil.copytree(CASES / "tools", root / "tools")
    shutil.copy(CASES / "smollm2-135m-instruct.yaml", root / "smollm2-135m-instruct.yaml")
    (root / "zz-fuzzed.yaml").write_text(case, encoding="utf-8")
    (root / "contexts" / "zz-fuzzed.yaml").write_text(context, encoding="utf-8")
    with time_budget(TIME_BUDGET_S * 3):
        cs = discover(root)
    for err in cs.errors:
        assert isinstance(err, CaseError)
        assert_clear(err)
    # the good case survives unless the fuzzed file took its id or a context it uses
    ids = [c.id for c in cs.cases]
    if "smollm2-135m-instruct" not in ids:
        assert any("duplicate case id" in str(e) or "zz-fuzzed" in str(e) or "contexts/" in str(e)
                   for e in cs.errors), (ids, [str(e) for e in cs.errors])


ATHERIS_TARGET = textwrap.dedent('''
    import sys
    import atheris

    with atheris.instrument_imports():
        from harness.errors import CaseError
        from harness.cases.schema import CASE_SCHEMA, validate
        from harness.cases.yamlio import load_located


    def target(data: bytes) -> None:
        text = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(4096)
        try:
            located = load_located(text, "cases/x.yaml")
        except CaseError:
            return
        validate(located, CASE_SCHEMA)


    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
''')


def test_atheris_case_loader_bounded_run(tmp_path):
    """Coverage-guided fuzzing of yamlio + schema for a bounded time (atheris, libFuzzer).
    Any exception other than CaseError, or a hang, is a crash with the input saved."""
    pytest.importorskip("atheris")
    seconds = int(os.environ.get("HARNESS_ATHERIS_SECONDS", "20"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # the deep-nesting reproducers stay with hypothesis: under coverage instrumentation reaching
    # the recursion limit takes seconds, which libFuzzer would call a timeout
    for i, text in enumerate(REAL + [r for r in REGRESSIONS if len(r) < 1000]):
        (corpus / f"seed{i}").write_bytes(text.encode("utf-8", errors="replace"))
    script = tmp_path / "fuzz_cases.py"
    script.write_text(ATHERIS_TARGET)
    proc = subprocess.run([sys.executable, str(script), str(corpus), f"-max_total_time={seconds}",
                           "-timeout=15", "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/", "-seed=1234"],
                          cwd=REPO, capture_output=True, text=True, timeout=seconds + 120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert proc.returncode == 0 and not crashes, (crashes, proc.stderr[-4000:])
    assert "Done" in proc.stderr or "DONE" in proc.stderr or "pulse" in proc.stderr or proc.returncode == 0
