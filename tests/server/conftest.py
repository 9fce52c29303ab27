"""Real `weir serve` processes over the sample models, one per module that needs them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import ServerProcess, running_server


@pytest.fixture(scope="module")
def iris_server(iris_model: Path) -> Iterator[ServerProcess]:
    env = {"WEIR_REVISION": "abc123", "WEIR_TRACK": "canary"}
    with running_server(iris_model, "--name", "iris", "--version", "7", env=env) as server:
        yield server


@pytest.fixture(scope="module")
def all_types_server(all_types_model: Path) -> Iterator[ServerProcess]:
    with running_server(all_types_model, "--name", "types") as server:
        yield server
