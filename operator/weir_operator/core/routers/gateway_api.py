"""The `gateway-api` router: an HTTPRoute (gateway.networking.k8s.io/v1) attached to the
Gateways in `spec.traffic.gateway` weights the `<md>-stable` and `<md>-canary` Services exactly.
The stable keeps every server (it may have to take all traffic back at any moment) and the
canary gets enough servers for its share, so each track may scale on its own load."""

from __future__ import annotations

from typing import Any, Literal

from weir_operator.core.render import SERVICE_PORT, Manifest, instance_labels, object_metadata
from weir_operator.core.routers.split import Split, exact_split
from weir_operator.core.spec import ModelDeployment


def render_httproute(md: ModelDeployment, canary_weight: int) -> Manifest | None:
    """A gateway.networking.k8s.io/v1 HTTPRoute weighting `<md>-stable` and `<md>-canary`."""
    gateway = md.spec.traffic.gateway
    if md.spec.traffic.router != "gateway-api" or gateway is None:
        return None
    spec: dict[str, Any] = {
        "parentRefs": [ref.to_manifest() for ref in gateway.parent_refs],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {
                        "name": f"{md.name}-stable",
                        "port": SERVICE_PORT,
                        "weight": 100 - canary_weight,
                    },
                    {"name": f"{md.name}-canary", "port": SERVICE_PORT, "weight": canary_weight},
                ],
            }
        ],
    }
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": object_metadata(md, md.name, instance_labels(md)),
        "spec": spec,
    }


class GatewayApiRouter:
    name: Literal["gateway-api"] = "gateway-api"
    exact_weights = True
    owned_kinds: frozenset[str] = frozenset({"HTTPRoute"})

    def split(self, total: int, weight: int) -> Split:
        return exact_split(total, weight)

    def split_beside(self, stable: int, weight: int) -> Split:
        return exact_split(stable, weight)

    def serving_stable_replicas(self, total: int, target: Split, canary_ready: int) -> int:
        return target.stable_replicas

    def children(self, md: ModelDeployment, canary_weight: int) -> list[Manifest]:
        route = render_httproute(md, canary_weight)
        return [route] if route is not None else []
