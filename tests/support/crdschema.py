"""What an API server does with a custom resource, done in Python for tests: reject unknown
fields (kubectl's strict field validation), apply the schema's defaults, validate the OpenAPI
v3 schema, and evaluate the `x-kubernetes-validations` CEL rules. Independent of the pydantic
models, so tests can prove the generated CRD and the models agree."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

from weir_operator.core.celrules import CelRule, holds


def _path(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + part
    return text


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting: missing properties with a default get it, recursively."""
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties", {})
        result = dict(value)
        for name, sub in properties.items():
            if name not in result and "default" in sub:
                result[name] = copy.deepcopy(sub["default"])
            if name in result:
                result[name] = apply_defaults(result[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for name in result:
                if name not in properties:
                    result[name] = apply_defaults(result[name], extra)
        return result
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def unknown_fields(value: Any, schema: dict[str, Any], at: list[str | int]) -> list[str]:
    problems: list[str] = []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return problems
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                problems += unknown_fields(item, properties[name], [*at, name])
            elif isinstance(extra, dict):
                problems += unknown_fields(item, extra, [*at, name])
            else:
                problems.append(f"{_path([*at, name])}: unknown field")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += unknown_fields(item, schema["items"], [*at, index])
    return problems


def cel_failures(value: Any, schema: dict[str, Any], at: list[str | int]) -> list[str]:
    problems: list[str] = []
    for entry in schema.get("x-kubernetes-validations", []):
        rule = CelRule(entry["rule"], entry.get("message", entry["rule"]), entry.get("fieldPath"))
        if not holds(rule, value):
            problems.append(f"{_path(at)}{rule.field_path or ''}: {rule.message}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                problems += cel_failures(item, properties[name], [*at, name])
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += cel_failures(item, schema["items"], [*at, index])
    return problems


def validate_custom_resource(document: dict[str, Any], crd: dict[str, Any]) -> list[str]:
    """Problems the API server would report for `document`, as `field.path: message` lines."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    document = {k: v for k, v in document.items() if k not in ("status", "metadata")}
    problems = unknown_fields(document, schema, [])
    defaulted = apply_defaults(document, schema)
    validator = jsonschema.Draft4Validator(schema)
    for error in sorted(validator.iter_errors(defaulted), key=lambda e: list(e.absolute_path)):
        at = list(error.absolute_path)
        if error.validator == "required":  # the API server names the missing field itself
            for name in error.validator_value:
                if name not in error.instance:
                    problems.append(f"{_path([*at, name])}: Required value")
            continue
        problems.append(f"{_path(at) or '(root)'}: {error.message}")
    if not problems:
        problems = cel_failures(defaulted, schema, [])
    return problems
