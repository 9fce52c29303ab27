"""CEL rules (`x-kubernetes-validations`) evaluated in Python, with cel-python.

The CRD carries each rule for the API server; `weir run` and the tests evaluate the very same
rule text here, so a manifest is accepted or rejected alike on a cluster and on a laptop. The
Kubernetes CEL library functions the rules use (`isSorted`) are provided below."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError


@dataclass(frozen=True, slots=True)
class CelRule:
    """One `x-kubernetes-validations` entry: the rule, its message and the field it is about."""

    rule: str
    message: str
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


def _is_sorted(values: Any) -> celtypes.BoolType:
    items = list(values)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


# Kubernetes' CEL `lists` library functions used by Weir's rules.
KUBERNETES_FUNCTIONS: dict[str, Any] = {"isSorted": _is_sorted}


@cache
def compiled(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule), functions=KUBERNETES_FUNCTIONS)


def holds(rule: CelRule, value: dict[str, Any]) -> bool:
    """Evaluate `rule` with `self` bound to `value` (the object as the API server sees it)."""
    try:
        result = compiled(rule.rule).evaluate({"self": json_to_cel(value)})
    except CELEvalError:
        return False  # an evaluation error rejects the object, as on the API server
    return bool(result)
