"""The ModelDeployment CustomResourceDefinition, generated from the typed API models.

`python -m weir_operator.crd` prints `crds/modeldeployment.yaml`; a test fails when the file
and the models disagree, so the schema the API server enforces is always the one `weir run`
enforces. pydantic's JSON Schema is turned into a Kubernetes *structural* schema: references
inlined, optionals unwrapped, draft-2020 bounds turned into OpenAPI v3.0 ones, factory defaults
written out, and each model's CEL rules attached as `x-kubernetes-validations`."""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from weir_operator.core import spec, status
from weir_operator.core.spec_base import ApiModel

# Schema keywords a structural schema may carry (others, e.g. "title", are dropped).
_KEPT = {
    "type", "description", "default", "enum", "format", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "minItems", "maxItems",
    "minProperties", "maxProperties",
    "required", "properties", "items", "additionalProperties", "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "nullable",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
}  # fmt: skip


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model class reachable from `root`, by the name pydantic gives its $defs entry."""
    found: dict[str, type[BaseModel]] = {}

    def visit(cls: type[BaseModel]) -> None:
        if cls.__name__ in found:
            return
        found[cls.__name__] = cls
        for field in cls.model_fields.values():
            for candidate in _classes_in(field.annotation):
                visit(candidate)

    visit(root)
    return found


def _classes_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [c for arg in getattr(annotation, "__args__", ()) for c in _classes_in(arg)]


def _manifest_of(value: Any) -> Any:
    if isinstance(value, ApiModel):
        return value.to_manifest()
    if isinstance(value, BaseModel):
        return value.model_dump(by_alias=True, exclude_none=True, mode="json")
    if isinstance(value, list):
        return [_manifest_of(v) for v in value]
    if isinstance(value, dict):
        return {k: _manifest_of(v) for k, v in value.items()}
    return value


def structural_schema(root: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `root` (a pydantic model)."""
    document = root.model_json_schema(by_alias=True, mode="validation")
    definitions = document.pop("$defs", {})
    classes = _models(root)

    def convert(node: dict[str, Any], owner: type[BaseModel] | None = None) -> dict[str, Any]:
        description = node.get("description")
        if "$ref" in node:
            name = node["$ref"].split("/")[-1]
            resolved = convert(definitions[name], classes.get(name))
            if description:
                resolved["description"] = " ".join(description.split())
            extra = {k: v for k, v in node.items() if k in ("default",)}
            return {**resolved, **extra}
        if "anyOf" in node:  # Optional[X] -> X (absent, never null)
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express a union in a structural schema: {node}")
            merged = convert(options[0])
            if node.get("description"):
                merged["description"] = " ".join(node["description"].split())
            if node.get("default") is not None:
                merged["default"] = node["default"]
            merged.update({k: v for k, v in node.items() if k.startswith("x-kubernetes-")})
            if merged.get("x-kubernetes-preserve-unknown-fields"):
                merged.pop("additionalProperties", None)
            return merged
        result: dict[str, Any] = {}
        for key, value in node.items():
            if key not in _KEPT:
                continue
            if key == "properties":
                result[key] = {
                    name: _with_factory_default(convert(prop), owner, name)
                    for name, prop in value.items()
                }
            elif key == "items":
                result[key] = convert(value)
            elif key == "additionalProperties":
                if isinstance(value, dict) and value:
                    result[key] = convert(value)
            elif key == "exclusiveMinimum":
                result["minimum"], result["exclusiveMinimum"] = value, True
            elif key == "exclusiveMaximum":
                result["maximum"], result["exclusiveMaximum"] = value, True
            elif key == "default" and value is None:
                continue
            elif key == "description":
                result[key] = " ".join(value.split())
            else:
                result[key] = value
        if result.get("x-kubernetes-preserve-unknown-fields"):
            result.pop("additionalProperties", None)
        if result.get("type") == "object" and "properties" in result:
            result.pop("additionalProperties", None)
        return result

    return convert(document, root)


def _with_factory_default(
    schema: dict[str, Any], owner: type[BaseModel] | None, alias: str
) -> dict[str, Any]:
    if owner is None:
        return schema
    for name, field in owner.model_fields.items():
        if (field.alias or name) == alias and field.default_factory is not None:
            factory: Any = field.default_factory
            return {**schema, "default": _manifest_of(factory())}
    return schema


PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Model", "type": "string", "jsonPath": ".status.modelName"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stable.version"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canary.version"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canary.weight"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.readyText"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def render_crd() -> dict[str, Any]:
    spec_schema = structural_schema(spec.ModelDeploymentSpec)
    status_schema = structural_schema(status.ModelDeploymentStatus)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{spec.PLURAL}.{spec.GROUP}",
            "labels": {"app.kubernetes.io/name": "weir", "app.kubernetes.io/part-of": "weir"},
        },
        "spec": {
            "group": spec.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": spec.KIND,
                "listKind": f"{spec.KIND}List",
                "plural": spec.PLURAL,
                "singular": "modeldeployment",
                "shortNames": ["md", "mdep"],
                "categories": ["weir"],
            },
            "versions": [
                {
                    "name": spec.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": (
                                "A ModelDeployment serves an ONNX model with Weir's inference "
                                "servers, scales them, and rolls out new model versions as "
                                "canaries, rolling back by itself when they are worse."
                            ),
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version."},
                                "kind": {"type": "string", "description": "Kind."},
                                "metadata": {
                                    "type": "object",
                                    "properties": {
                                        "name": {"type": "string", "maxLength": 45},
                                    },
                                },
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = (
        "# Generated by `python -m weir_operator.crd` from operator/weir_operator/spec.py and\n"
        "# status.py. Do not edit by hand: change the models and regenerate.\n"
    )
    return header + yaml.safe_dump(render_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(crd_yaml())
