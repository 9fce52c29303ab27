"""Fixtures shared by every tier: the sample ONNX models, built once per session in code."""

from __future__ import annotations

from pathlib import Path

import pytest

from weir_server import sample_models


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def iris_model(models_dir: Path) -> Path:
    return sample_models.iris(models_dir / "iris.onnx")


@pytest.fixture(scope="session")
def all_types_model(models_dir: Path) -> Path:
    return sample_models.identity_all_types(models_dir / "identity_all_types.onnx")


@pytest.fixture(scope="session")
def gather_model(models_dir: Path) -> Path:
    return sample_models.gather(models_dir / "gather.onnx")


@pytest.fixture(scope="session")
def mlp_model(models_dir: Path) -> Path:
    return sample_models.mlp(models_dir / "mlp.onnx", width=256, layers=2)
