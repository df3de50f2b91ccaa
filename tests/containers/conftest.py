"""Fixtures of the container tests (the helpers behind them: container_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from container_helpers import CONTAINERS, ApptainerStub, make_apptainer_stub, make_fake_image, parse_definition


@pytest.fixture()
def apptainer_stub(tmp_path: Path) -> ApptainerStub:
    """A stand-in ``apptainer`` (records argv, runs the command on the host); put ``.bin`` on PATH."""
    return make_apptainer_stub(tmp_path)


@pytest.fixture()
def fake_image(tmp_path: Path) -> Path:
    """A file standing for xreduce.sif (the stub only checks that it exists)."""
    return make_fake_image(tmp_path)


@pytest.fixture(scope="session")
def definition() -> tuple[dict[str, str], dict[str, str]]:
    """(header, sections) of containers/xreduce.def."""
    return parse_definition((CONTAINERS / "xreduce.def").read_text())
