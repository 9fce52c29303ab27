"""Real `weir serve` processes over the sample models, one per module that needs them, and\nthe certificates of the TLS ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.certs import Authority, ServerCert
from tests.support.processes import ServerProcess, running_server

TLS_NAME = "iris.tests.svc"  # the name TLS servers' certificates are issued for (as SNI)


@pytest.fixture(scope="module")
def iris_server(iris_model: Path) -> Iterator[ServerProcess]:
    env = {"WEIR_REVISION": "abc123", "WEIR_TRACK": "canary"}
    with running_server(iris_model, "--name", "iris", "--version", "7", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def all_types_server(all_types_model: Path) -> Iterator[ServerProcess]:
    with running_server(all_types_model, "--name", "types") as server:
        yield server


@pytest.fixture(scope="module")
def authority() -> Authority:
    """A test CA (tests/support/certs.py)."""
    return Authority()


@pytest.fixture(scope="module")
def issued(authority: Authority) -> ServerCert:
    """A server certificate for TLS_NAME, with its key and CA."""
    return authority.issue(TLS_NAME)
