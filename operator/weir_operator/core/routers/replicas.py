"""The `replicas` router: one Service (`<md>`) over the servers of both revisions, so the
canary's share of traffic is its share of the servers. No mesh and no Gateway needed.

Weights come in whole servers: the split is the one whose share is closest to the weight asked
for (ties go to the smaller canary), a canary with any weight gets at least one server, the
stable keeps at least one server until it is replaced (so a rollback always has somewhere to
send traffic), and the two add up to `total` (with one server in all, that is impossible: the
canary then runs one more). `Split.canary_weight` says honestly what the servers give (10% of
4 servers is 1 canary server next to 3 stable ones: 25%). While the canary grows, the stable
gives up one server only for each canary server that is ready."""

from __future__ import annotations

from typing import Literal

from weir_operator.core.render import Manifest
from weir_operator.core.routers.split import Split
from weir_operator.core.spec import ModelDeployment


def _percent(part: int, whole: int) -> int:
    """round(100 * part / whole), halves up, in integers (no float ties)."""
    return (200 * part + whole) // (2 * whole)


def replicas_split(total: int, weight: int) -> Split:
    """The split of `total` servers for a canary `weight` (percent)."""
    if total <= 0 or weight <= 0:
        return Split(max(total, 0), 0, 0)
    # Closest share: minimise |100 * canary / servers - weight|, compared exactly as
    # distance / servers across different denominators; ties keep the smaller canary.
    canary, stable = 1, max(total - 1, 1)
    distance, servers = abs(100 * canary - weight * (canary + stable)), canary + stable
    for candidate in range(2, total):
        rest = total - candidate
        candidate_distance = abs(100 * candidate - weight * (candidate + rest))
        if candidate_distance * servers < distance * (candidate + rest):
            canary, stable = candidate, rest
            distance, servers = candidate_distance, candidate + rest
    return Split(stable, canary, _percent(canary, canary + stable))


def replicas_split_beside(stable: int, weight: int) -> Split:
    """Canary servers beside a stable count the rollout does not own: the count whose share of
    all the servers is closest to `weight` (ties: the smaller canary)."""
    if stable <= 0 or weight <= 0:
        return Split(max(stable, 0), 0, 0)
    if weight >= 100:
        return Split(stable, stable, _percent(stable, 2 * stable))
    best, best_distance = 1, abs(100 - weight * (stable + 1)) / (stable + 1)
    for canary in range(2, -(-stable * weight // (100 - weight)) + 2):
        distance = abs(100 * canary - weight * (stable + canary)) / (stable + canary)
        if distance < best_distance:
            best, best_distance = canary, distance
    return Split(stable, best, _percent(best, stable + best))


class ReplicasRouter:
    name: Literal["replicas"] = "replicas"
    exact_weights = False
    owned_kinds: frozenset[str] = frozenset()

    def split(self, total: int, weight: int) -> Split:
        return replicas_split(total, weight)

    def split_beside(self, stable: int, weight: int) -> Split:
        return replicas_split_beside(stable, weight)

    def serving_stable_replicas(self, total: int, target: Split, canary_ready: int) -> int:
        """The stable shrinks only by the canary servers already ready, so the instance never
        serves with fewer than `total` ready servers because of the canary."""
        if target.canary_replicas == 0:
            return target.stable_replicas
        replaced = min(max(canary_ready, 0), target.canary_replicas)
        return max(target.stable_replicas, total - replaced)

    def children(self, md: ModelDeployment, canary_weight: int) -> list[Manifest]:
        return []  # the `<md>` Service (render.render_services) is all it needs
