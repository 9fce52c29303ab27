"""The `local` router: `weir run`'s proxy (`local/proxy.py`), which sends exactly `weight` of
every 100 requests to the canary, whatever the replica counts. It is never in a spec: `weir
run` uses it for every ModelDeployment, and writes no object for it."""

from __future__ import annotations

from typing import Literal

from weir_operator.core.render import Manifest
from weir_operator.core.routers.split import Split, exact_split
from weir_operator.core.spec import ModelDeployment


class LocalRouter:
    name: Literal["local"] = "local"
    exact_weights = True
    owned_kinds: frozenset[str] = frozenset()

    def split(self, total: int, weight: int) -> Split:
        return exact_split(total, weight)

    def split_beside(self, stable: int, weight: int) -> Split:
        return exact_split(stable, weight)

    def serving_stable_replicas(self, total: int, target: Split, canary_ready: int) -> int:
        return target.stable_replicas

    def children(self, md: ModelDeployment, canary_weight: int) -> list[Manifest]:
        return []
