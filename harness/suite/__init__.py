"""Check families: thin pytest modules over backend capabilities.

Each module declares PARAMETERS (argument name -> expander from harness.expand); the
plugin turns them into ordinary parametrized tests, so syrupy and pytest-benchmark see
ordinary test functions.
"""

from __future__ import annotations

import pytest

from ..backends.base import Backend, BackendError, Unsupported, require
from ..errors import SourceError


def open_backend(runtime, name: str, case, capability: str, record_property) -> Backend:
    """The session's backend for this case, or skip with the reason it lacks `capability`.
    A backend that cannot be opened (or a model that cannot be resolved) fails the test."""
    try:
        backend = runtime.backend(name, case)
    except Unsupported as exc:
        pytest.skip(f"{name}: {exc.reason}")
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
