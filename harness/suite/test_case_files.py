"""Every case file loads and validates; a broken one fails here, alone, with file:line:col."""

import pytest

PARAMETERS = {"case_file": None}


def test_case_file(case_file, harness_cases):
    error = harness_cases.errors_for(case_file)
    if error is not None:
        pytest.fail(str(error), pytrace=False)
