"""The fault-injection suite: every test here is marked ``reliability`` (run it alone with
``pytest -m reliability``). Faults are made as a user, a crashing node or a bad file would make
them: real processes, real files, the real command line."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)
