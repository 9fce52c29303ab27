"""The ModelDeployment API: the CRD is generated from the typed models, and the two agree on
every field, default, bound and rule; examples are accepted and each broken manifest in
examples/invalid/ is rejected by both with an error that names the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.crdschema import apply_defaults, validate_custom_resource
from weir_operator.core.spec import SpecError, parse_model_deployment
from weir_operator.crd import crd_yaml, render_crd

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
INVALID = sorted((ROOT / "examples" / "invalid").glob("*.yaml"))
CRD = render_crd()
SPEC_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

# A spec with every optional part present, the base for probing each field's bounds.
MAXIMAL: dict[str, Any] = {
    "apiVersion": "serving.weir.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "probe"},
    "spec": {
        "model": {
            "uri": "https://m.example.com/a.onnx",
            "sha256": "a" * 64,
            "name": "a",
            "version": "1",
        },
        "server": {
            "image": "weir:1",
            "resources": {
                "requests": {"cpu": "1", "memory": "1Gi"},
                "limits": {"cpu": "2", "memory": "2Gi"},
            },
            "env": [{"name": "A", "value": "b"}],
            "workers": 2,
            "intraOpThreads": 1,
            "batching": {"maxBatchSize": 8, "maxBatchDelayMs": 3},
            "sampleInput": {"inputs": []},
        },
        "replicas": 2,
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 5,
            "metric": "rps",
            "target": 10,
            "scaleDownDelay": "1m",
        },
        "traffic": {
            "router": "gateway-api",
            "gateway": {
                "parentRefs": [{"name": "gw", "namespace": "n", "sectionName": "s"}],
                "hostnames": ["h.example.com"],
            },
        },
        "rollout": {
            "steps": [{"setWeight": 10}, {"pause": {"duration": "5s"}}, {"pause": {}}],
            "analysis": {
                "interval": "5s",
                "failureThreshold": 2,
                "minRequests": 10,
                "maxErrorRate": 0.1,
                "maxP99LatencyMs": 100,
                "maxLatencyRatio": 2,
                "provider": {"prometheus": {"url": "http://p:9090", "scrapeInterval": "1s"}},
            },
            "progressDeadline": "5m",
            "allowSignatureChange": True,
        },
    },
}


def pydantic_problems(document: dict[str, Any]) -> list[str]:
    try:
        parse_model_deployment(document)
    except SpecError as error:
        return error.problems
    return []


def crd_problems(document: dict[str, Any]) -> list[str]:
    return validate_custom_resource(document, CRD)


class TestTheCrd:
    def test_the_checked_in_crd_is_generated_from_the_models(self) -> None:
        checked_in = (ROOT / "crds" / "modeldeployment.yaml").read_text()
        assert checked_in == crd_yaml(), (
            "run: .venv/bin/python -m weir_operator.crd > crds/modeldeployment.yaml"
        )

    def test_it_is_a_valid_kubernetes_object(self) -> None:
        kubernetes_validate.validate(CRD, "1.30.0", strict=True)

    def test_names_subresources_and_columns(self) -> None:
        spec = CRD["spec"]
        assert spec["group"] == "serving.weir.dev"
        assert spec["names"]["shortNames"] == ["md", "mdep"]
        assert spec["names"]["categories"] == ["weir"]
        version = spec["versions"][0]
        assert version["name"] == "v1alpha1"
        assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
        assert [c["name"] for c in version["additionalPrinterColumns"]] == [
            "Phase",
            "Model",
            "Stable",
            "Canary",
            "Weight",
            "Ready",
            "Age",
        ]

    def test_the_schema_is_structural_and_every_field_is_described(self) -> None:
        def walk(node: dict[str, Any], path: str) -> None:
            assert not {"$ref", "anyOf", "allOf", "oneOf", "not"} & node.keys(), path
            if not node.get("x-kubernetes-preserve-unknown-fields"):
                assert "type" in node, f"{path} has no type"
            assert node.get("additionalProperties") is not False, path
            for name, sub in node.get("properties", {}).items():
                assert sub.get("description"), f"{path}.{name} has no description (kubectl explain)"
                walk(sub, f"{path}.{name}")
            if "items" in node:
                walk(node["items"], f"{path}[]")

        walk(SPEC_SCHEMA, "spec")
        walk(
            CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"],
            "status",
        )


class TestExamples:
    @pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
    def test_each_example_is_accepted_by_both_with_the_same_defaults(self, path: Path) -> None:
        document = yaml.safe_load(path.read_text())
        assert crd_problems(document) == []
        model = parse_model_deployment(document)
        assert apply_defaults(document["spec"], SPEC_SCHEMA) == model.spec.to_manifest()

    @pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
    def test_each_broken_manifest_is_rejected_by_both_naming_the_field(self, path: Path) -> None:
        text = path.read_text()
        expected_field = text.splitlines()[0].removeprefix("# expect: ").strip()
        document = yaml.safe_load(text)
        for problems in (pydantic_problems(document), crd_problems(document)):
            assert problems, f"{path.name} was accepted"
            assert any(p.startswith(expected_field + ":") for p in problems), problems

    def test_there_is_a_broken_manifest_for_every_cel_rule(self) -> None:
        rules: set[str] = set()

        def collect(node: dict[str, Any]) -> None:
            rules.update(r["message"] for r in node.get("x-kubernetes-validations", []))
            for sub in node.get("properties", {}).values():
                collect(sub)
            if "items" in node:
                collect(node["items"])

        collect(SPEC_SCHEMA)
        triggered = {
            p.split(": ", 1)[1]
            for path in INVALID
            for p in crd_problems(yaml.safe_load(path.read_text()))
        }
        assert rules <= triggered, f"no example breaks: {rules - triggered}"


def _leaves(
    schema: dict[str, Any], value: Any, path: list[str | int]
) -> list[tuple[list[str | int], dict[str, Any]]]:
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name in value:
                found += _leaves(sub, value[name], [*path, name])
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += _leaves(schema["items"], item, [*path, index])
    else:
        found.append((path, schema))
    return found


def _probe_values(schema: dict[str, Any]) -> list[Any]:
    values: list[Any] = []
    for bound in ("minimum", "maximum"):
        if bound in schema:
            edge = schema[bound]
            step = 1 if schema.get("type") == "integer" else 0.001
            values += [edge - step, edge, edge + step]
    if "enum" in schema:
        values += [*schema["enum"], "not-in-enum"]
    if "pattern" in schema:
        values += [
            "",
            "x y",
            "30s",
            "1m30s",
            "a" * 64,
            "https://h/p",
            "pvc://c/p",
            "ftp://h/p",
            "1Gi",
            "500m",
        ]
    if "maxLength" in schema:
        values += ["a" * schema["maxLength"], "a" * (schema["maxLength"] + 1)]
    if schema.get("type") == "boolean":
        values += [True, False, "yes"]
    return values


def _set(document: dict[str, Any], path: list[str | int], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    node: Any = changed["spec"]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return changed


LEAVES = _leaves(SPEC_SCHEMA, MAXIMAL["spec"], [])


def test_the_maximal_spec_is_valid() -> None:
    assert pydantic_problems(MAXIMAL) == []
    assert crd_problems(MAXIMAL) == []


@pytest.mark.parametrize(("path", "schema"), LEAVES, ids=[".".join(map(str, p)) for p, _ in LEAVES])
def test_models_and_crd_agree_on_every_bound_enum_and_pattern(
    path: list[str | int], schema: dict[str, Any]
) -> None:
    values = _probe_values(schema)
    for value in values:
        document = _set(MAXIMAL, path, value)
        by_model, by_crd = pydantic_problems(document), crd_problems(document)
        assert bool(by_model) == bool(by_crd), (
            f"{path}={value!r}: models say {by_model}, CRD says {by_crd}"
        )


def test_the_api_reference_is_generated_from_the_crd() -> None:
    from weir_operator.apidocs import api_markdown

    checked_in = (ROOT / "docs" / "api.md").read_text()
    assert checked_in == api_markdown(), "run: make generate"
