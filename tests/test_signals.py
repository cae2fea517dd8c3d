"""Signals the harness expects never surface as tracebacks.

execnet, xdist's transport, sends a worker SIGINT itself when the worker is still executing 5 s
after the controller asked it to exit (gateway_base WorkerGateway._terminate_execution). A
worker whose teardown is slow (stopping llama-servers, freeing models, a long gc) therefore gets
a SIGINT after its results are sent; the harness's handler (server_build._on_signal) stops its
servers and lets the teardown finish, instead of raising KeyboardInterrupt into whatever code
was running (a gc callback, in the field report)."""

from __future__ import annotations

import textwrap


def test_execnet_shutdown_sigint_is_quiet(pytester):
    pytester.makeconftest(textwrap.dedent("""
        import os, sys, time
        def pytest_unconfigure(config):
            if os.environ.get("PYTEST_XDIST_WORKER"):
                try:
                    time.sleep(8)     # slower than execnet's 5 s: it sends the worker SIGINT
                except BaseException as exc:
                    print("TEARDOWN INTERRUPTED:", repr(exc), file=sys.stderr)
                    raise
    """))
    pytester.makepyfile(test_one="def test_ok():\n    assert True\n")
    result = pytester.runpytest_subprocess("-n", "1", "-p", "no:cacheprovider", timeout=120)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 0, out
    result.stdout.fnmatch_lines(["*1 passed*"])
    assert "INTERRUPTED" not in out and "KeyboardInterrupt" not in out and "Traceback" not in out, out


def test_sigint_during_a_check_still_interrupts(pytester):
    """A real Ctrl-C (here: SIGINT to a worker mid-test) still stops the run as an interrupt."""
    pytester.makepyfile(test_slow=textwrap.dedent("""
        import os, signal, time
        def test_interrupted():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    """))
    result = pytester.runpytest_subprocess("-n", "1", "-p", "no:cacheprovider", timeout=120)
    assert result.ret != 0
    assert "1 passed" not in result.stdout.str()
