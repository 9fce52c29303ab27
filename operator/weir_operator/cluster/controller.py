"""The kopf operator: thin handlers that observe, call the pure `reconcile`, and apply the plan.

`create_registry()` builds a fresh kopf registry (nothing is registered at import time). Children
are watched through kopf indexes (in-memory, from watch streams), so a reconcile reads no list
from the API; it runs on create, update and resume of a ModelDeployment and on a timer, which is
what makes it level-based: whatever happened meanwhile, the next tick converges.

Handlers are async because the rollout's probes (pre-traffic checks, metric analysis) talk to
many servers at once (`weir_operator.probes.rollout`); the `kubernetes` client is blocking, so
the plan
is applied in a worker thread. The timer is also the analysis clock: it must tick at least as
often as the shortest `analysis.interval` (`weir operator --interval`, default 5 s)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from weir_operator.cluster.kube import Kube, explain, is_transient
from weir_operator.cluster.metrics import OperatorMetrics
from weir_operator.cluster.trust import SecretTrust
from weir_operator.core.observe import observe, owner_key
from weir_operator.core.policy import Policy
from weir_operator.core.reconcile import Plan, status_patch
from weir_operator.core.render import MANAGED_BY_LABEL, RenderSettings
from weir_operator.core.requests import REQUEST_ANNOTATION
from weir_operator.core.rollout import restored_spec
from weir_operator.core.spec import (
    GROUP,
    PLURAL,
    VERSION,
    ModelDeployment,
    SpecError,
    parse_model_deployment,
    warm_up_cel_rules,
)
from weir_operator.core.status import Event, ModelDeploymentStatus
from weir_operator.driver import ReconcileDriver, World
from weir_operator.probes.autoscaler import Autoscalers
from weir_operator.probes.rollout import RolloutProber

log = logging.getLogger("weir.operator")
WEIR = {MANAGED_BY_LABEL: "weir"}
# Children kept in kopf indexes (watch caches): kind -> ("group/version", plural).
CACHED_CHILDREN = {
    "Deployment": ("apps/v1", "deployments"),
    "Service": ("v1", "services"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "ConfigMap": ("v1", "configmaps"),  # `<md>-shadow` (core/shadow.py)
}


@dataclass
class OperatorContext:
    """What every handler needs; kept in kopf's `memo`."""

    kube: Kube
    metrics: OperatorMetrics
    render: RenderSettings = field(default_factory=RenderSettings)
    policy: Policy = field(default_factory=Policy)
    exact_namespaces: bool = False
    # Parsed specs by (uid, generation): the spec only changes with the generation, and
    # parsing (CEL rules included) is most of an idle reconcile's cost.
    parsed: dict[tuple[str, int], ModelDeployment] = field(default_factory=dict)
    # Created in the operator's event loop (startup), which its HTTP clients belong to.
    driver: ReconcileDriver | None = None
    # kopf runs the timer and the event handlers of one object concurrently: a lock per object
    # serialises them, and a body whose status this process already changed is not decided on
    # again until the status write arrives (SETTLE_SECONDS at most): the same request or
    # analysis result would be taken twice, and the same events posted twice.
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    written: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)


SETTLE_SECONDS = 5.0


def _dump(status: ModelDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


async def reconcile_object(
    body: kopf.Body, patch: kopf.Patch, memo: Any, indexes: dict[str, kopf.Index[Any, Any]]
) -> None:
    """Observe, probe, decide, apply; shared by every ModelDeployment handler, one at a time
    per object, and never twice on the same stale body."""
    context: OperatorContext = memo.context
    key = (body.metadata.namespace or "default", body.metadata.name or "")
    version = str(body.metadata.get("resourceVersion") or "")
    async with context.locks.setdefault(key, asyncio.Lock()):
        written = context.written.get(key)
        if written and written[0] == version and time.monotonic() - written[1] < SETTLE_SECONDS:
            return
        if await _reconcile(body, patch, context, indexes):
            context.written[key] = (version, time.monotonic())


async def _reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    context: OperatorContext,
    indexes: dict[str, kopf.Index[Any, Any]],
) -> bool:
    """One reconcile: parse, have the driver do the rest, write the status; True when the
    status changed."""
    old_raw = dict(body.get("status") or {})
    old = ModelDeploymentStatus.model_validate(old_raw)
    started = time.perf_counter()
    assert context.driver is not None, "made at startup"
    generation = body.metadata.get("generation")
    cache_key = (str(body.metadata.uid), int(generation or 0))
    try:
        md = context.parsed.get(cache_key) or parse_model_deployment(dict(body))
    except SpecError as error:
        invalid = context.driver.invalid(old, error.problems, generation)
        patch.status.update(status_patch(old_raw, _dump(invalid)))
        return False
    if len(context.parsed) > 4096:
        context.parsed.clear()
    context.parsed[cache_key] = md
    port = KubernetesPort(context, body, indexes)
    request = body.metadata.annotations.get(REQUEST_ANNOTATION)
    plan = await context.driver.reconcile(port, md, old, request)
    changes = status_patch(old_raw, _dump(plan.status))
    patch.status.update(changes)
    context.metrics.record(md.namespace, md.name, old, plan.status)
    context.metrics.reconcile_seconds.observe(time.perf_counter() - started)
    return bool(changes)


class KubernetesPort:
    """The driver's port on a cluster: children from the watch caches, plans applied through
    the API (in a thread: the client blocks), events posted by kopf."""

    router = None  # the spec's

    def __init__(
        self, context: OperatorContext, body: kopf.Body, indexes: dict[str, kopf.Index[Any, Any]]
    ) -> None:
        self.context = context
        self.body = body
        key = (body.metadata.namespace or "default", body.metadata.name or "")
        self.cache = {
            (kind, child["metadata"]["name"]): child
            for kind, (_, plural) in CACHED_CHILDREN.items()
            for child in indexes[plural].get(key, [])
        }
        self.pods = list(indexes["pods"].get(key, []))
        self.deployments: list[Any] = list(indexes["deployments"].get(key, []))
        self.hpas: list[Any] = list(indexes["horizontalpodautoscalers"].get(key, []))

    async def observe(self, md: ModelDeployment) -> World:
        return World(observe(self.deployments, self.pods, self.hpas), self.pods)

    async def apply(self, md: ModelDeployment, plan: Plan) -> None:
        try:
            await asyncio.to_thread(_apply, self.context, md, plan, self.cache)
        except ApiException as error:
            self.context.metrics.reconcile_errors.labels(f"api{error.status}").inc()
            if is_transient(error):
                raise kopf.TemporaryError(
                    f"API answered {explain(error)}; retrying", delay=2
                ) from None
            raise kopf.PermanentError(f"API answered {explain(error)}") from None

    def post(self, md: ModelDeployment, events: Sequence[Event]) -> None:
        for event in events:
            log.info("%s/%s: %s: %s", md.namespace, md.name, event.reason, event.message)
            kopf.event(self.body, type=event.type, reason=event.reason, message=event.message)


def _apply(
    context: OperatorContext,
    md: ModelDeployment,
    plan: Plan,
    cache: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """Apply a plan's children, deletions and model restore (undo), in that order; blocking.
    HPAs that go are deleted first: one owner per count, so an HPA hands its Deployment's
    count over (autoscaling leaves cpu) before the operator writes that count."""
    handed_over = [d for d in plan.delete if d[0] == "HorizontalPodAutoscaler"]
    for kind, child_name in handed_over:
        context.kube.delete(kind, md.namespace, child_name)
    for child in plan.apply:
        cached = child["kind"] in CACHED_CHILDREN
        found = cache.get((child["kind"], child["metadata"]["name"]))
        context.kube.apply(child, found, trust_cache=cached)
    for kind, child_name in plan.delete:
        if (kind, child_name) not in handed_over:
            context.kube.delete(kind, md.namespace, child_name)
    if plan.restore is not None:
        # The request goes with the change it asked for, in one write: a reconcile that still
        # reads the status from before this one must not find it and undo again.
        annotations = {REQUEST_ANNOTATION: None}
        spec = restored_spec(md.spec, plan.restore)
        body = {"metadata": {"annotations": annotations}, "spec": spec}
        context.kube.merge_patch("ModelDeployment", md.namespace, md.name, body)


def create_registry(interval: float = 5.0) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    resource: dict[str, Any] = {
        "group": GROUP,
        "version": VERSION,
        "plural": PLURAL,
        "registry": registry,
    }

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # The same credentials as the `kubernetes` client (in-cluster, KUBECONFIG, ~/.kube/config).
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        # kopf keeps its progress in annotations: the status schema is Weir's own, and fields
        # it does not declare would be pruned by the API server.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # events are posted on purpose, not from logs
        settings.networking.error_backoffs = [1, 2, 5, 10, 20]
        settings.batching.error_delays = [1, 2, 5, 10, 20]
        settings.execution.max_workers = 16
        if memo.context.exact_namespaces:
            settings.scanning.disabled = True
        warm_up_cel_rules()

    @kopf.on.startup(registry=registry)
    async def start_probes(memo: Any, **_: Any) -> None:
        if memo.context.driver is None:
            # TLS server pods are verified with their Secret's ca.crt, read through the API;
            # the autoscaler scrapes through the same clients (`providers.servers`).
            prober = RolloutProber(trust=SecretTrust(memo.context.kube))
            autoscalers = Autoscalers(prober.providers.direct)
            memo.context.driver = ReconcileDriver(
                prober, autoscalers, memo.context.render, policy=memo.context.policy
            )

    @kopf.on.cleanup(registry=registry)
    async def close(memo: Any, **_: Any) -> None:
        if memo.context.driver is not None:
            await memo.context.driver.aclose()

    def index_child(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        key = owner_key(body)
        return {key: dict(body)} if key else {}

    for group_version, plural in CACHED_CHILDREN.values():
        group, _, version = group_version.rpartition("/")
        kopf.index(
            group=group, version=version, plural=plural, id=plural, labels=WEIR, registry=registry
        )(index_child)

    @kopf.index("v1", "pods", id="pods", labels=WEIR, registry=registry)
    def pods(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        key = owner_key(body)
        if not key:
            return {}
        return {key: {"metadata": dict(body.metadata), "status": dict(body.get("status") or {})}}

    async def handle(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
        names = ("pods", *(plural for _, plural in CACHED_CHILDREN.values()))
        await reconcile_object(body, patch, memo, {n: kwargs[n] for n in names})

    kopf.on.create(**resource, id="reconcile-on-create", backoff=2)(handle)
    kopf.on.update(**resource, id="reconcile-on-update", backoff=2)(handle)
    kopf.on.resume(**resource, id="reconcile-on-resume", backoff=2)(handle)

    @kopf.timer(**resource, id="converge", interval=interval, initial_delay=1.0, backoff=2)
    async def converge(body: kopf.Body, patch: kopf.Patch, memo: Any, **kwargs: Any) -> None:
        await handle(body, patch, memo, **kwargs)

    @kopf.on.delete(**resource, id="forget", optional=True)
    def forget(namespace: str | None, name: str | None, memo: Any, **_: Any) -> None:
        # Children go with their ownerReferences (the garbage collector); metrics go here.
        memo.context.metrics.forget(namespace or "default", name or "")
        memo.context.locks.pop((namespace or "default", name or ""), None)
        memo.context.written.pop((namespace or "default", name or ""), None)
        if memo.context.driver is not None:
            memo.context.driver.forget(namespace or "default", name or "")

    return registry
