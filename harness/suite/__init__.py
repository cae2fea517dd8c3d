"""Check families: thin pytest modules over backend capabilities.

Each module declares PARAMETERS (argument name -> expander from harness.expand); the
plugin turns them into ordinary parametrized tests, so syrupy and pytest-benchmark see
ordinary test functions. The check logic lives in harness/families/* and never calls pytest:
it returns a harness.outcome.Outcome or raises Skip / CaseProblem, which `run_check` and
`conclude` here turn into pytest's verdicts (the only place that does).
"""

from __future__ import annotations

import pytest

from ..backends.base import Backend, BackendError, Unsupported, require
from ..errors import SourceError
from harness import outcome as check_outcome
from harness.outcome import CaseProblem, Outcome, Skip
from harness.run.server_build import ServerBuildError


def open_backend(runtime, name: str, case, capability: str, record_property) -> Backend:
    """The session's backend for this case, or skip with the reason it lacks `capability`.
    A backend that cannot be opened (or a model that cannot be resolved) fails the test; one that
    could not be built (llama-server) skips it, and the build failure is reported once per run."""
    try:
        backend = runtime.backend(name, case)
    except Unsupported as exc:
        pytest.skip(f"{name}: {exc.reason}")
    except ServerBuildError as exc:
        skip_build_failure(runtime, name, exc)
    except (SourceError, BackendError) as exc:
        # the message is the whole story (sources tried, load error); a traceback adds nothing
        pytest.fail(f"{case.location()}: {exc}", pytrace=False)
    record_property("backend_info", backend.info())
    reason = require(backend, capability)
    if reason:
        pytest.skip(reason)
    return backend


def skip_unsupported(exc: Unsupported) -> None:
    pytest.skip(f"unsupported: {exc.reason}")


def skip_build_failure(runtime, name: str, exc: ServerBuildError) -> None:
    """Skip a check whose backend could not be built, with a one-line reason; the build log's
    tail goes to the run's summary and results.json once (Runtime.build_failed, plugin.py)."""
    pytest.skip(runtime.build_failed(name, exc))


def require_capability(backend: Backend, capability: str) -> None:
    """Skip, with the reason, when the backend lacks `capability` (as open_backend does)."""
    reason = require(backend, capability)
    if reason:
        pytest.skip(reason)


def run_check(check, *args):
    """check(*args), with the ways check logic stops early made pytest's: Skip and an
    unsupported request skip, a CaseProblem fails plainly (the message is the whole story)."""
    try:
        return check(*args)
    except Skip as exc:
        pytest.skip(exc.reason)
    except CaseProblem as exc:
        pytest.fail(str(exc), pytrace=False)
    except Unsupported as exc:
        skip_unsupported(exc)


def needs(backend: Backend, *caps: str) -> None:
    """Skip unless the backend declares every capability in `caps` (harness.outcome.needs)."""
    run_check(check_outcome.needs, backend, *caps)


def conclude(outcome: Outcome, golden, record_property) -> None:
    """An Outcome as pytest's verdict: notes recorded, the golden compared (or written) first,
    then the case's errors as a plain failure and the findings as one Mismatch."""
    for note in outcome.notes:
        record_property("finding", note)
    assert outcome.golden == golden
    run_check(outcome.raise_if_failed)
