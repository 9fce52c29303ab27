"""How `weir run` launches a rendered Deployment's servers (local/podspec.py): what it drops
from the server's arguments (TLS: its servers speak HTTP on 127.0.0.1), where the shadow
ConfigMap's file is, where the monitoring reference is fetched, and which fields of a spec it
says it ignores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from weir_operator.core.render import render_deployment, revision_of
from weir_operator.core.spec import ModelDeployment, parse_model_deployment
from weir_operator.local.podspec import LaunchError, ignored_fields, server_template


def md(**server: Any) -> ModelDeployment:
    return parse_model_deployment({
        "apiVersion": "serving.weir.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "default"},
        "spec": {"model": {"uri": "file:///models/iris.onnx"}, "server": server},
    })  # fmt: skip


def argv(model: ModelDeployment, mirror: Path | None = None) -> list[str]:
    deployment = render_deployment(model, revision_of(model.spec), "stable", 1)
    return server_template(deployment, mirror_file=mirror).argv(Path("/m/iris.onnx"), 9000)


class TestTheServersArguments:
    def test_tls_is_dropped_and_the_rest_kept(self) -> None:
        args = argv(md(tls={"secretName": "iris-tls"}))
        assert "--tls-cert" not in args
        assert "--tls-key" not in args
        assert args[:2] == ["serve", "/m/iris.onnx"]
        assert args[-4:] == ["--host", "127.0.0.1", "--port", "9000"]

    def test_the_mirror_file_is_the_runs_own(self, tmp_path: Path) -> None:
        args = argv(md(), tmp_path / "iris.json")
        assert args[args.index("--mirror-config") + 1] == str(tmp_path / "iris.json")

    def test_without_a_mirror_file_there_is_no_mirror_option(self) -> None:
        assert "--mirror-config" not in argv(md())


def monitored(uri: str, sha256: str | None = None) -> ModelDeployment:
    reference = {"uri": uri, **({"sha256": sha256} if sha256 else {})}
    return parse_model_deployment({
        "apiVersion": "serving.weir.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "default"},
        "spec": {"model": {"uri": "file:///models/iris.onnx"},
                 "monitoring": {"reference": reference}},
    })  # fmt: skip


class TestTheMonitoringReference:
    def test_is_fetched_next_to_the_model_and_given_to_the_server(self) -> None:
        model = monitored("file:///models/iris.reference.json", "ab" * 32)
        deployment = render_deployment(model, revision_of(model.spec), "stable", 1)
        template = server_template(deployment)
        assert template.source.reference_uri == "file:///models/iris.reference.json"
        assert template.source.reference_sha256 == "ab" * 32
        args = template.argv(Path("/m/r1/model.onnx"), 9000)
        assert args[args.index("--reference") + 1] == "/m/r1/reference.json"

    def test_without_one_there_is_none(self) -> None:
        deployment = render_deployment(md(), revision_of(md().spec), "stable", 1)
        template = server_template(deployment)
        assert template.source.reference_uri is None
        assert "--reference" not in template.argv(Path("/m/iris.onnx"), 9000)

    def test_one_on_a_claim_cannot_be_fetched_here(self) -> None:
        model = monitored("pvc://profiles/iris.reference.json")
        deployment = render_deployment(model, revision_of(model.spec), "stable", 1)
        with pytest.raises(LaunchError, match=r"reference URI 'pvc://profiles/iris\.reference"):
            server_template(deployment)


class TestIgnoredFields:
    def test_a_plain_spec_ignores_nothing(self) -> None:
        assert ignored_fields(md().spec) == []

    def test_cluster_only_fields_are_named(self) -> None:
        spec = md(
            nodeSelector={"gpu": "a100"},
            tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
            tls={"secretName": "iris-tls"},
            serviceAccountName="model-reader",
            env=[{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            resources={"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}},
        ).spec
        assert ignored_fields(spec) == [
            "spec.server.serviceAccountName",
            "spec.server.nodeSelector",
            "spec.server.tolerations",
            "spec.server.tls",
            "spec.server.env[].valueFrom",
            "spec.server.resources (nvidia.com/gpu)",
        ]
