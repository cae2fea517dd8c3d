"""Check families: thin pytest modules over backend capabilities.

Each module declares PARAMETERS (argument name -> expander from harness.expand); the
plugin turns them into ordinary parametrized tests, so syrupy and pytest-benchmark see
ordinary test functions.
"""

from __future__ import annotations

import pytest

from ..backends.base import Backend, BackendError, Unsupported, require
from ..errors import SourceError
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
