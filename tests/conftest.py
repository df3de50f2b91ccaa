"""Test-suite wide checks: the oracle and services the tests need must be there, or we say how."""

from __future__ import annotations

import importlib.util

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if importlib.util.find_spec("pyFAI") is None:
        raise pytest.UsageError("pyFAI (the numerical oracle of the test suite) is not installed: "
                                "run `make test`, or `pip install -e '.[test]'` in your environment")
