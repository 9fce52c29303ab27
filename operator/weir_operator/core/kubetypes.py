"""The Kubernetes types a ModelDeployment embeds in its server pods (core/v1), as typed models.

Why here and not `dict[str, Any]`: the CRD is generated from these models, so the API server
validates each field (and `kubectl explain md.spec.server.tolerations` explains it), and `weir
run` and the operator reject a wrong field for the same reason. They follow Kubernetes' own
field names, types and enums; fields Weir has no use for in a server pod are left out, and
unknown fields are refused rather than silently dropped."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from weir_operator.core.celrules import CelRule
from weir_operator.core.spec_base import ApiModel

QualifiedName = Annotated[
    str,
    Field(
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        max_length=317,
    ),
]
LabelValue = Annotated[
    str, Field(pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", max_length=63)
]
ObjectName = Annotated[
    str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", min_length=1, max_length=253)
]


class LocalObjectReference(ApiModel):
    """An object of the same namespace, by name."""

    name: ObjectName = Field(description="Its name.")


class KeySelector(ApiModel):
    """One key of a Secret or ConfigMap of the same namespace."""

    name: ObjectName = Field(description="The Secret's (or ConfigMap's) name.")
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253, description="The key within it.")
    optional: bool | None = Field(None, description="Whether it may be missing.")


class ObjectFieldSelector(ApiModel):
    """A field of the pod (metadata.name, metadata.namespace, status.podIP, ...)."""

    field_path: str = Field(max_length=256, description="Path of the field, e.g. status.podIP.")
    api_version: str | None = Field(None, max_length=64, description="Default: v1.")


class ResourceFieldSelector(ApiModel):
    """A resource limit or request of a container (limits.cpu, requests.memory, ...)."""

    resource: str = Field(max_length=256, description="e.g. limits.cpu.")
    container_name: str | None = Field(None, max_length=63, description="Default: this one.")
    divisor: str | None = Field(None, max_length=64, description="Unit of the value, e.g. 1m.")


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from: exactly one source."""

    cel_rules = (
        CelRule(
            "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
            "has(self.resourceFieldRef)].filter(x, x).size() == 1",
            "valueFrom needs exactly one of secretKeyRef, configMapKeyRef, fieldRef, "
            "resourceFieldRef",
        ),
    )

    secret_key_ref: KeySelector | None = Field(None, description="A key of a Secret.")
    config_map_key_ref: KeySelector | None = Field(None, description="A key of a ConfigMap.")
    field_ref: ObjectFieldSelector | None = Field(None, description="A field of the pod.")
    resource_field_ref: ResourceFieldSelector | None = Field(
        None, description="A resource of a container."
    )


class EnvFromSource(ApiModel):
    """Every key of a Secret or ConfigMap as a variable, each name prefixed."""

    cel_rules = (
        CelRule(
            "has(self.secretRef) != has(self.configMapRef)",
            "envFrom needs exactly one of secretRef and configMapRef",
        ),
    )

    prefix: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9]*_$",
        max_length=64,
        description=(
            "Put before every key (required, ending with '_', so that no key of the Secret or "
            "ConfigMap can set a refused variable such as PATH or PYTHONPATH)."
        ),
    )
    secret_ref: LocalObjectReference | None = Field(None, description="The Secret.")
    config_map_ref: LocalObjectReference | None = Field(None, description="The ConfigMap.")


class Toleration(ApiModel):
    """A taint the server pods tolerate (e.g. nvidia.com/gpu=present:NoSchedule)."""

    key: str | None = Field(None, max_length=317, description="Taint key; empty: any.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Default: Equal.")
    value: str | None = Field(None, max_length=63, description="Taint value (with Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect; empty: all."
    )
    toleration_seconds: int | None = Field(
        None, description="How long a NoExecute taint is tolerated."
    )


class LabelSelectorRequirement(ApiModel):
    """key In/NotIn values, Exists, DoesNotExist."""

    key: QualifiedName = Field(description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="Operator.")
    values: list[LabelValue] = Field(default_factory=list, max_length=64, description="Values.")


class LabelSelector(ApiModel):
    """Pods (or nodes) by their labels."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, description="Labels that must all match."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Requirements that must all hold."
    )


class NodeSelectorRequirement(ApiModel):
    """key In/NotIn/Exists/DoesNotExist/Gt/Lt values, on node labels or fields."""

    key: str = Field(max_length=317, description="Node label (or field) key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="Operator."
    )
    values: list[str] = Field(default_factory=list, max_length=64, description="Values.")


class NodeSelectorTerm(ApiModel):
    """Requirements a node must all meet."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="On node labels."
    )
    match_fields: list[NodeSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="On node fields."
    )


class NodeSelector(ApiModel):
    """Any one of the terms."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=16, description="Terms, ORed."
    )


class PreferredSchedulingTerm(ApiModel):
    """A node preference with its weight."""

    weight: int = Field(ge=1, le=100, description="1-100.")
    preference: NodeSelectorTerm = Field(description="The nodes preferred.")


class NodeAffinity(ApiModel):
    """Which nodes the server pods may, or prefer to, run on."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        None, description="Nodes the pods must run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=16, description="Nodes the pods prefer."
    )


class PodAffinityTerm(ApiModel):
    """Pods (matched by labels) that must, or must not, share a topology domain."""

    label_selector: LabelSelector | None = Field(None, description="The pods.")
    topology_key: str = Field(
        min_length=1, max_length=317, description="Node label of the domain, e.g. zone."
    )
    namespaces: list[str] = Field(
        default_factory=list, max_length=32, description="Their namespaces; default: this one."
    )
    namespace_selector: LabelSelector | None = Field(None, description="Their namespaces.")


class WeightedPodAffinityTerm(ApiModel):
    """A pod (anti-)affinity preference with its weight."""

    weight: int = Field(ge=1, le=100, description="1-100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The term.")


class PodAffinity(ApiModel):
    """Pods the server pods must, or prefer to, be near (or away from)."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=16, description="Terms that must hold."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=16, description="Terms preferred."
    )


class Affinity(ApiModel):
    """Scheduling constraints (core/v1 Affinity)."""

    node_affinity: NodeAffinity | None = Field(None, description=NodeAffinity.__doc__)
    pod_affinity: PodAffinity | None = Field(None, description="Pods to run near.")
    pod_anti_affinity: PodAffinity | None = Field(None, description="Pods to run away from.")


class TopologySpreadConstraint(ApiModel):
    """How evenly server pods spread over a topology (zones, nodes)."""

    max_skew: int = Field(ge=1, description="Largest difference of pod counts between domains.")
    topology_key: str = Field(min_length=1, max_length=317, description="Node label of the domain.")
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        description="DoNotSchedule or ScheduleAnyway."
    )
    label_selector: LabelSelector | None = Field(
        None, description="The pods counted; default: this revision's server pods."
    )
    min_domains: int | None = Field(None, ge=1, description="Fewest eligible domains.")
    match_label_keys: list[str] = Field(
        default_factory=list, max_length=16, description="Pod label keys to group by."
    )
