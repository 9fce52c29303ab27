"""The one reconcile driver: observe -> measure -> decide -> apply -> settle, written once for
both places where ModelDeployments run.

Why it exists: the kopf operator (`cluster/controller.py`) and `weir run` (`local/runtime.py`)
used to do this job each in their own way, and their rules had started to drift. Now each only
implements the small `ClusterPort` (how to observe the children, apply a plan and post
events) and calls `ReconcileDriver.reconcile`; everything else, the order of the steps, which
router's rules apply, when the probes forget a rollout, what an invalid spec becomes, and the
one `now` of a reconcile, is here, and is the same in both. The decisions themselves are the
pure core's (`core.reconcile`); the measurements are the probes' (the rollout's, and the drift
of the stable's traffic: `probes.drift`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from weir_operator.core import routers
from weir_operator.core.policy import Policy, refusals
from weir_operator.core.reconcile import Observed, Plan, invalid_spec, reconcile
from weir_operator.core.render import RenderSettings
from weir_operator.core.routers import RouterName
from weir_operator.core.spec import ModelDeployment
from weir_operator.core.status import Event, ModelDeploymentStatus
from weir_operator.probes.autoscaler import Autoscalers
from weir_operator.probes.drift import DriftProber
from weir_operator.probes.rollout import RolloutProber


@dataclass(frozen=True, slots=True)
class World:
    """What a port observed of one ModelDeployment: its children, and its serving pods as
    Pod-shaped dicts (the probes read their addresses, labels, readiness and restarts)."""

    observed: Observed
    pods: Sequence[Mapping[str, Any]]


class Superseded(Exception):
    """Raised by a port when the object changed or went away during the reconcile: the plan
    is for a spec that is no longer there, so nothing is applied and the next reconcile runs."""


class ClusterPort(Protocol):
    """What the driver needs from a place where servers run."""

    @property
    def router(self) -> RouterName | None:
        """Who splits traffic, when not the spec's router (`weir run`: its own, "local")."""
        ...

    async def observe(self, md: ModelDeployment) -> World: ...

    async def apply(self, md: ModelDeployment, plan: Plan) -> None:
        """Apply the children, deletions and model restore (undo) of a plan."""
        ...

    def post(self, md: ModelDeployment, events: Sequence[Event]) -> None: ...


class ReconcileDriver:
    """One per process (operator or `weir run`): the probes and the autoscaler's memory
    (`drift`: the drift prober; default: one on the rollout prober's providers)."""

    def __init__(
        self,
        prober: RolloutProber,
        autoscalers: Autoscalers,
        render: RenderSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        policy: Policy | None = None,
        drift: DriftProber | None = None,
    ) -> None:
        self.prober = prober
        self.drift = drift or DriftProber(prober.providers)
        self.autoscalers = autoscalers
        self.render = render or RenderSettings()
        self.policy = policy or Policy()
        self.clock = clock

    async def reconcile(
        self,
        port: ClusterPort,
        md: ModelDeployment,
        old: ModelDeploymentStatus,
        request: str | None,
    ) -> Plan:
        """One reconcile of a valid ModelDeployment; the plan it applied (its status is for
        the caller to write). Superseded propagates when the port saw the object change.
        A spec the policy refuses is Failed (InvalidSpec) and nothing is applied."""
        refused = refusals(self.policy, md.spec)
        if refused:
            return Plan([], [], self.invalid(old, refused, md.metadata.generation), [])
        now = self.clock()
        world = await port.observe(md)
        measured, probe_events = await self.prober.probe(md, old, list(world.pods), request, now)
        drift = await self.drift.probe(md, old, list(world.pods), now)
        if drift is not None:
            measured = dataclasses.replace(measured, drift=drift)
        router = routers.router_named(port.router or md.spec.traffic.router)
        scale = await self.autoscalers.decision_for(
            md,
            old,
            world.pods,
            counts={r: s.replicas for r, s in world.observed.revisions.items()},
            per_track=router.exact_weights,
        )
        plan = reconcile(md, old, world.observed, now, self.render, measured, port.router, scale)
        await port.apply(md, plan)
        if plan.ended:
            self.prober.forget(md.namespace, md.name)
        await self.prober.settle(md, old, plan.status, list(world.pods))
        port.post(md, [*probe_events, *plan.events])
        return plan

    def invalid(
        self, old: ModelDeploymentStatus, problems: list[str], generation: int | None
    ) -> ModelDeploymentStatus:
        """The status of an object whose spec is invalid (Failed, Ready InvalidSpec)."""
        return invalid_spec(old, problems, generation, self.clock())

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: drop what the probes and the autoscaler kept for it."""
        self.prober.forget(namespace, name)
        self.drift.forget(namespace, name)
        self.autoscalers.forget(namespace, name)

    async def aclose(self) -> None:
        await self.prober.aclose()
