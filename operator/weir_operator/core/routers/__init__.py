"""Traffic routers: who splits a model's traffic between its stable and canary revisions, and
so how a canary weight becomes replica counts, a router weight and the objects that carry it.
Pure.

One implementation per module, chosen by `router_named` (Flagger's answer to the same question:
a narrow Router interface and a small factory):
- `replicas` (replicas.py): one Service over both revisions; the split follows whole servers.
- `gateway-api` (gateway_api.py): an HTTPRoute weights the stable and canary Services exactly.
- `local` (local.py): `weir run`'s own proxy, which weights exactly.

Adding a router touches its own module, `ROUTERS` below, the spec enum
(`spec.Traffic.router`) and, when it writes new kinds of objects, the operator's RBAC
(`cluster/permissions.py`, the chart)."""

from __future__ import annotations

from typing import Literal, Protocol

from weir_operator.core.render import Manifest
from weir_operator.core.routers.gateway_api import GatewayApiRouter
from weir_operator.core.routers.local import LocalRouter
from weir_operator.core.routers.replicas import ReplicasRouter
from weir_operator.core.routers.split import Split
from weir_operator.core.spec import ModelDeployment

RouterName = Literal["replicas", "gateway-api", "local"]

__all__ = ["ROUTERS", "RouterName", "Split", "TrafficRouter", "router_named"]


class TrafficRouter(Protocol):
    """What the rollout core needs to know of whoever splits traffic."""

    @property
    def name(self) -> RouterName: ...

    @property
    def exact_weights(self) -> bool:
        """The weight is the share of requests whatever the replica counts, so each track may
        scale on its own load (Weir's autoscaler, per track)."""
        ...

    @property
    def owned_kinds(self) -> frozenset[str]:
        """Kinds of the objects `children` writes (named after the ModelDeployment); when a
        ModelDeployment leaves this router, they are deleted."""
        ...

    def split(self, total: int, weight: int) -> Split:
        """Servers per track for a canary `weight` (percent) out of `total`, and the share of
        requests those servers give the canary."""
        ...

    def split_beside(self, stable: int, weight: int) -> Split:
        """The split when the stable's count is not the rollout's (an HPA owns it): the stable
        keeps its `stable` servers, and the canary gets servers for `weight` beside them."""
        ...

    def serving_stable_replicas(self, total: int, target: Split, canary_ready: int) -> int:
        """Stable servers to run while the canary moves towards `target`."""
        ...

    def children(self, md: ModelDeployment, canary_weight: int) -> list[Manifest]:
        """The objects that carry the weight (an HTTPRoute), beside the Services."""
        ...


ROUTERS: dict[RouterName, TrafficRouter] = {
    "replicas": ReplicasRouter(),
    "gateway-api": GatewayApiRouter(),
    "local": LocalRouter(),
}


def router_named(name: RouterName) -> TrafficRouter:
    return ROUTERS[name]
