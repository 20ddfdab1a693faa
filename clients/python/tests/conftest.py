"""Fixtures shared by the client's tests: a real `celeritas dev` and clients of it.

The server binary is `$CELERITAS_BIN`, or `target/debug/celeritas` at the repository root (what
`cargo test` builds in CI).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import celeritas
from celeritas.testing import DevServer, find_binary

REPOSITORY_ROOT = Path(__file__).resolve().parents[3]


def pytest_report_header() -> list[str]:
    return [f"celeritas package: {Path(celeritas.__file__).parent}"]


@pytest.fixture(scope="session")
def celeritas_binary() -> Path:
    return find_binary(default=REPOSITORY_ROOT / "target" / "debug" / "celeritas")


@pytest.fixture(scope="session")
def server(celeritas_binary: Path) -> Iterator[DevServer]:
    """One server for the tests that do not stop or restart it (starting one takes a moment
    and the machine is shared)."""
    with DevServer(celeritas_binary) as dev_server:
        yield dev_server


@pytest.fixture
def client(server: DevServer) -> Iterator[celeritas.Client]:
    with celeritas.Client(server.url) as connected_client:
        yield connected_client
