"""CEL rules (`x-kubernetes-validations`) evaluated in Python, with cel-python.

The CRD carries each rule for the API server; `weir run` and the tests evaluate the very same
rule text here, so a manifest is accepted or rejected alike on a cluster and on a laptop. The
Kubernetes CEL library functions the rules use (`isSorted`) are provided below."""

from __future__ import annotations

import itertools
import re
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

    @property
    def paths(self) -> tuple[tuple[str, ...], ...]:
        """The field paths the rule reads from `self` (`self.server.resources` ->
        ("server", "resources")), stopping at a macro or method call (`self.steps.filter(`
        -> ("steps",)). A rule reads nothing else, so `holds` converts only these fields."""
        return _paths(self.rule)

    def to_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


_SELF_PATH = re.compile(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*(?![A-Za-z0-9_(]))*)")


@cache
def _paths(rule: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(match.group(1).split(".")[1:]) for match in _SELF_PATH.finditer(rule))


def _is_sorted(values: Any) -> celtypes.BoolType:
    items = list(values)
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(items)))


# Kubernetes' CEL `lists` library functions used by Weir's rules.
KUBERNETES_FUNCTIONS: dict[str, Any] = {"isSorted": _is_sorted}


@cache
def compiled(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule), functions=KUBERNETES_FUNCTIONS)


def _pruned(value: Any, paths: tuple[tuple[str, ...], ...]) -> Any:
    """`value` with only the fields along `paths` (whole subtrees where a path ends)."""
    if any(not path for path in paths) or not isinstance(value, dict):
        return value
    kept: dict[str, Any] = {}
    for key in {path[0] for path in paths}:
        if key in value:
            kept[key] = _pruned(value[key], tuple(p[1:] for p in paths if p[0] == key))
    return kept


def holds(rule: CelRule, value: dict[str, Any]) -> bool:
    """Evaluate `rule` with `self` bound to `value` (the object as the API server sees it).
    Only the fields the rule reads are converted to CEL values: a large opaque field (a
    sample input) would otherwise cost seconds per validation."""
    try:
        result = compiled(rule.rule).evaluate({"self": json_to_cel(_pruned(value, rule.paths))})
    except CELEvalError:
        return False  # an evaluation error rejects the object, as on the API server
    return bool(result)
