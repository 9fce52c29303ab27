"""A model in a private bucket on a real control plane: the fetch-model init container reads
its keys from a Secret (spec.model.auth.secretRef, resolved by the test kubelet as a kubelet
does) and fetches from a real S3-compatible server (moto, IAM enforced, on 127.0.0.1). Wrong
keys fail the init container with one line that names the bucket and the error, which the
operator shows in the Ready condition; nothing is retried in a hot loop."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.conftest import Kubectl, eventually
from tests.controlplane.test_rollout import lookup_model, manifest, status_where
from tests.support.operator_process import Operator
from tests.support.s3 import REGION, MotoS3, moto_s3, secret_manifest

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return lookup_model(tmp_path_factory.mktemp("s3-model") / "lookup.onnx", 10)


@pytest.fixture(scope="module")
def s3(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    with moto_s3(model, tmp_path_factory.mktemp("moto")) as server:
        yield server


def in_bucket(s3: MotoS3, secret: str, model: Path) -> dict[str, Any]:
    document = copy.deepcopy(manifest(model, "1"))
    document["spec"]["replicas"] = 1
    document["spec"]["model"] = {
        "uri": s3.uri(),
        "sha256": s3.model_sha256,
        "version": "1",
        "auth": {"secretRef": {"name": secret}},
        "s3": {"endpoint": s3.endpoint, "region": REGION},
    }
    return document


def test_keys_from_a_secret_fetch_the_model_and_it_is_served(
    admin: Kubectl, namespace: str, watched: Operator, s3: MotoS3, model: Path
) -> None:
    admin.apply(secret_manifest("model-store", s3.reader), namespace=namespace)
    admin.apply(in_bucket(s3, "model-store", model), namespace=namespace)
    status = eventually(
        lambda: status_where(admin, namespace, phase="Healthy", readyReplicas=1),
        within=120,
        what="served from the private bucket",
    )
    assert status["stable"]["sha256"] == s3.model_sha256


def test_a_wrong_secret_is_a_condition_naming_the_bucket_and_the_error(
    admin: Kubectl, namespace: str, watched: Operator, s3: MotoS3, model: Path
) -> None:
    admin.apply(secret_manifest("model-store", s3.wrong_secret), namespace=namespace)
    admin.apply(in_bucket(s3, "model-store", model), namespace=namespace)

    def refused() -> dict[str, Any] | None:
        status = status_where(admin, namespace) or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        return ready if s3.bucket in ready.get("message", "") else None

    ready = eventually(refused, within=120, what="a Ready condition that names the bucket")
    assert ready["status"] == "False", ready
    assert "wrong credentials (SignatureDoesNotMatch)" in ready["message"], ready
    assert "spec.model.auth.secretRef" in ready["message"], "it says what to fix"
