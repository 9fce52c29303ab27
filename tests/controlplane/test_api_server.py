"""What a real kube-apiserver accepts and refuses of Weir's API: the CRD's schema and CEL rules
(every examples/invalid file is refused, with the field named), the printer columns, the status
and scale subresources, and generation; and what the operator renders for each example, as
the API server validates it. No operator runs here: this is the API alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.controlplane.conftest import Kubectl
from weir_operator.core.render import RenderSettings, render_children, revision_of
from weir_operator.core.shadow import render_shadow_config
from weir_operator.core.spec import parse_model_deployment
from weir_operator.core.status import ModelDeploymentStatus

ROOT = Path(__file__).resolve().parents[2]
VALID = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "examples" / "invalid").glob("*.yaml"))
MD = "modeldeployments.serving.weir.dev"


def expected_field(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path} must start with '# expect: <field path>'"
    return first.removeprefix("# expect: ").strip()


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_every_invalid_example_is_refused_with_its_field_named(
    admin: Kubectl, namespace: str, path: Path
) -> None:
    result = admin("apply", "-n", namespace, "-f", str(path))
    assert result.returncode != 0, f"{path.name} was accepted:\n{result.stdout}"
    # Schema and CEL violations are 422 "is invalid"; an unknown field is a 400 strict decoding error.
    assert "is invalid" in result.stderr or "strict decoding error" in result.stderr
    assert expected_field(path) in result.stderr, result.stderr
    assert admin.json("get", MD, "-n", namespace)["items"] == []


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_every_valid_example_is_accepted(admin: Kubectl, namespace: str, path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    document["metadata"].pop("namespace", None)  # each test works in its own namespace
    admin.apply(document, namespace=namespace)
    stored = admin.json("get", MD, document["metadata"]["name"], "-n", namespace)
    assert stored["metadata"]["generation"] == 1
    assert stored["spec"]["model"] == document["spec"]["model"]


@pytest.mark.parametrize("path", VALID, ids=[p.stem for p in VALID])
def test_every_examples_children_are_accepted_by_the_api_server(
    admin: Kubectl, namespace: str, path: Path
) -> None:
    """What the operator would create for each example (its Deployment with every pod setting:
    scheduling, extended resources, env from Secrets, TLS; its Services, PDB, HPA, shadow
    ConfigMap), checked by the API server itself (a server-side dry run: admission and
    validation, nothing stored). HTTPRoutes need Gateway API's CRDs, which this tier installs
    only for the gateway tests; they are checked against those in test_gateway_rollout."""
    document = yaml.safe_load(path.read_text())
    document["metadata"]["namespace"] = namespace
    md = parse_model_deployment(document)
    children = [
        c
        for c in render_children(md, revision_of(md.spec), md.spec.replicas)
        if c["kind"] != "HTTPRoute"
    ]
    children.append(render_shadow_config(md, ModelDeploymentStatus(), RenderSettings()))
    for child in children:
        child["metadata"].pop("ownerReferences", None)  # no uid: the object is not stored
    result = admin(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-",
        stdin=yaml.safe_dump_all(children),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_kubectl_get_shows_the_printer_columns(admin: Kubectl, namespace: str) -> None:
    admin.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "iris.yaml"))
    header, row = admin.ok("get", "md", "-n", namespace).splitlines()
    assert header.split() == [
        "NAME",
        "PHASE",
        "MODEL",
        "STABLE",
        "CANARY",
        "WEIGHT",
        "READY",
        "AGE",
    ]
    assert row.split()[0] == "iris"
    by_short_name = admin.ok("get", "mdep", "-n", namespace, "-o", "name")
    assert by_short_name.strip() == "modeldeployment.serving.weir.dev/iris"
    by_category = admin.ok("get", "weir", "-n", namespace, "-o", "name")
    assert "modeldeployment.serving.weir.dev/iris" in by_category


def test_status_is_kept_apart_from_spec_and_generation_counts_spec_changes(
    admin: Kubectl, namespace: str
) -> None:
    document = yaml.safe_load((ROOT / "examples" / "iris.yaml").read_text())
    document["status"] = {"phase": "Healthy"}
    admin.apply(document, namespace=namespace)
    stored = admin.json("get", "md", "iris", "-n", namespace)
    assert "status" not in stored or "phase" not in stored["status"]  # status only via /status
    assert stored["metadata"]["generation"] == 1

    admin.ok(
        "patch", "md", "iris", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", '{"status": {"phase": "Healthy", "observedGeneration": 1}}',
    )  # fmt: skip
    stored = admin.json("get", "md", "iris", "-n", namespace)
    assert stored["status"]["phase"] == "Healthy"
    assert stored["metadata"]["generation"] == 1  # a status write is not a spec change

    admin.ok("label", "md", "iris", "-n", namespace, "team=ml")
    assert admin.json("get", "md", "iris", "-n", namespace)["metadata"]["generation"] == 1

    admin.ok(
        "patch", "md", "iris", "-n", namespace, "--type=merge", "-p", '{"spec": {"replicas": 3}}'
    )
    assert admin.json("get", "md", "iris", "-n", namespace)["metadata"]["generation"] == 2


def test_the_scale_subresource_reads_and_writes_replicas(admin: Kubectl, namespace: str) -> None:
    admin.ok("apply", "-n", namespace, "-f", str(ROOT / "examples" / "iris.yaml"))
    admin.ok(
        "patch", "md", "iris", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", '{"status": {"replicas": 2, "selector": "app.kubernetes.io/instance=iris"}}',
    )  # fmt: skip
    url = f"/apis/serving.weir.dev/v1alpha1/namespaces/{namespace}/modeldeployments/iris/scale"
    scale = yaml.safe_load(admin.ok("get", "--raw", url))
    assert scale["kind"] == "Scale"
    assert scale["status"] == {"replicas": 2, "selector": "app.kubernetes.io/instance=iris"}

    admin.ok("scale", "md", "iris", "-n", namespace, "--replicas=4")
    assert admin.json("get", "md", "iris", "-n", namespace)["spec"]["replicas"] == 4
    assert yaml.safe_load(admin.ok("get", "--raw", url))["spec"]["replicas"] == 4
