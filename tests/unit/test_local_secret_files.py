"""`weir run`'s model fetch gets what the fetch-model init container gets: the rendered
Deployment's plain values as they are, its Secret keys read from the secrets folder
(DIR/<secret>/<key>), and a missing key named by its file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from weir_operator.core.render import render_deployment, revision_of
from weir_operator.core.spec import parse_model_deployment
from weir_operator.local.podspec import LaunchError, ModelSource, SecretKeyEnv, server_template
from weir_operator.local.secret_files import (
    SecretMissing,
    default_secrets_dir,
    signature,
    store_access,
)


def source_of(model: dict[str, Any]) -> ModelSource:
    """The local model source of the Deployment the operator renders for `model`."""
    md = parse_model_deployment(
        {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "default", "uid": "u-1"},
            "spec": {"model": model},
        }
    )
    deployment = render_deployment(md, revision_of(md.spec), "stable", 1)
    return server_template(deployment).source


S3_MODEL = {
    "uri": "s3://models/iris.onnx",
    "auth": {"secretRef": {"name": "store"}},
    "s3": {"endpoint": "http://127.0.0.1:9000", "region": "eu-west-1"},
}
HEADER_MODEL = {
    "uri": "https://models.example/iris.onnx",
    "auth": {
        "header": {
            "name": "Authorization",
            "prefix": "Bearer ",
            "secretKeyRef": {"name": "hub", "key": "token"},
        }
    },
}


def write(folder: Path, secret: str, **keys: str) -> None:
    (folder / secret).mkdir(parents=True, exist_ok=True)
    for key, value in keys.items():
        (folder / secret / key).write_text(value)


class TestWhatTheRenderedDeploymentAsks:
    def test_s3_keys_come_from_the_secret_and_the_session_token_is_optional(self) -> None:
        source = source_of(S3_MODEL)
        assert source.uri == "s3://models/iris.onnx"
        assert dict(source.env) == {
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
            "AWS_REGION": "eu-west-1",
        }
        assert source.secrets == (
            SecretKeyEnv("AWS_ACCESS_KEY_ID", "store", "AWS_ACCESS_KEY_ID"),
            SecretKeyEnv("AWS_SECRET_ACCESS_KEY", "store", "AWS_SECRET_ACCESS_KEY"),
            SecretKeyEnv("AWS_SESSION_TOKEN", "store", "AWS_SESSION_TOKEN", optional=True),
        )

    def test_a_pvc_model_needs_a_cluster(self) -> None:
        with pytest.raises(LaunchError, match=r"'pvc://claim/iris.onnx' cannot be fetched"):
            source_of({"uri": "pvc://claim/iris.onnx"})


class TestReadingTheSecretsFolder:
    def test_s3_credentials_endpoint_and_region(self, tmp_path: Path) -> None:
        write(tmp_path, "store", AWS_ACCESS_KEY_ID="AKIA1\n", AWS_SECRET_ACCESS_KEY="s3cret\n")
        access = store_access(source_of(S3_MODEL), tmp_path)
        assert (access.aws_access_key_id, access.aws_secret_access_key) == ("AKIA1", "s3cret")
        assert access.aws_session_token is None
        assert (access.s3_endpoint, access.s3_region) == ("http://127.0.0.1:9000", "eu-west-1")
        assert access.credentials_from == f"{tmp_path / 'store'}/"
        assert "s3cret" not in repr(access)

    def test_the_header_with_its_prefix(self, tmp_path: Path) -> None:
        write(tmp_path, "hub", token="t0ken\n")
        access = store_access(source_of(HEADER_MODEL), tmp_path)
        assert access.header() == ("Authorization", "Bearer t0ken")
        assert access.credentials_from == str(tmp_path / "hub" / "token")
        assert "t0ken" not in repr(access)

    def test_a_missing_key_names_the_file_to_write(self, tmp_path: Path) -> None:
        write(tmp_path, "store", AWS_ACCESS_KEY_ID="AKIA1")
        with pytest.raises(SecretMissing) as raised:
            store_access(source_of(S3_MODEL), tmp_path)
        message = str(raised.value)
        assert f"no file {tmp_path / 'store' / 'AWS_SECRET_ACCESS_KEY'}" in message
        assert "--secrets-dir" in message

    def test_an_empty_key_is_missing_too(self, tmp_path: Path) -> None:
        write(tmp_path, "hub", token="\n")
        with pytest.raises(SecretMissing, match="is empty"):
            store_access(source_of(HEADER_MODEL), tmp_path)

    def test_the_signature_changes_when_a_file_appears(self, tmp_path: Path) -> None:
        source = source_of(HEADER_MODEL)
        before = signature(source, tmp_path)
        write(tmp_path, "hub", token="t0ken")
        assert signature(source, tmp_path) != before

    def test_the_default_folder_is_next_to_the_manifests(self, tmp_path: Path) -> None:
        manifest = tmp_path / "iris.yaml"
        manifest.write_text("")
        assert default_secrets_dir([manifest]) == tmp_path.resolve() / "secrets"
        assert default_secrets_dir([tmp_path]) == tmp_path.resolve() / "secrets"
        assert os.path.basename(default_secrets_dir([])) == "secrets"
