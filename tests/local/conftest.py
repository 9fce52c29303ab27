"""The local end-to-end tier: `weir run` with real server processes and real traffic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.local_run import LocalRun
from weir_server import sample_models

VERSIONS = ("iris", "iris_v2", "iris_slow", "iris_erroring", "iris_bad", "iris_swapped")


@pytest.fixture(scope="session")
def iris_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("iris-versions")
    return {name: sample_models.BUILDERS[name](folder / f"{name}.onnx") for name in VERSIONS}


@pytest.fixture
def local_run(tmp_path: Path) -> Iterator[LocalRun]:
    """A `weir run` on tmp_path/manifests (write them before `wait_up`); stopped, with every
    server it ran, at the end of the test."""
    (tmp_path / "manifests").mkdir()
    run = LocalRun(tmp_path / "manifests", tmp_path / "state")
    try:
        yield run
    finally:
        code = run.stop()
        orphans = run.orphans()
        assert not orphans, f"server processes outlived weir run: {orphans}"
        assert code == 0, f"weir run exited with {code}:\n{run.log()}"
