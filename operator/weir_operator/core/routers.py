"""How a canary weight becomes replica counts and a router weight. Pure.

Routers split traffic (`spec.traffic.router`, and `weir run`'s own):
- `replicas`: one Service over the servers of both revisions, so the canary's share is its share
  of the servers. Weights come in whole servers: the split is the one whose share is closest to
  the weight asked for (ties go to the smaller canary), a canary with any weight gets at least one
  server, the stable keeps at least one server until it is replaced (so a rollback always has
  somewhere to send traffic), and the two add up to `total` (with one server in all, that is
  impossible: the canary then runs one more). `Split.canary_weight` says honestly what the
  servers give (10% of 4 servers is 1 canary server next to 3 stable ones: 25%).
- `gateway-api`: an HTTPRoute weights the two tracks exactly. The stable keeps every server (it
  may have to take all traffic back at any moment) and the canary gets enough servers for its
  share.
- `local`: the router of `weir run` weights exactly, as `gateway-api` does.

`serving_stable_replicas` keeps capacity while the canary grows: under the `replicas` router the
stable gives up one server only for each canary server that is ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Router = Literal["replicas", "gateway-api", "local"]


@dataclass(frozen=True, slots=True)
class Split:
    """Servers per track for one weight, and the canary's share of traffic they give."""

    stable_replicas: int
    canary_replicas: int
    canary_weight: int  # percent of requests the canary receives once both counts are running


def _percent(part: int, whole: int) -> int:
    """round(100 * part / whole), halves up, in integers (no float ties)."""
    return (200 * part + whole) // (2 * whole)


def replicas_split(total: int, weight: int) -> Split:
    """The `replicas` router's split of `total` servers for a canary `weight` (percent)."""
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


def gateway_split(total: int, weight: int) -> Split:
    """The `gateway-api` router's split: exact weight, canary servers for its share (at least
    one), the stable keeps all of its servers."""
    if total <= 0 or weight <= 0:
        return Split(max(total, 0), 0, 0)
    canary = min(total, max(1, -(-total * weight // 100)))
    return Split(total, canary, weight)


def split(router: Router, total: int, weight: int) -> Split:
    """The split of `total` servers for a canary `weight` under `router`."""
    if router != "replicas":
        return gateway_split(total, weight)
    return replicas_split(total, weight)


def serving_stable_replicas(router: Router, total: int, target: Split, canary_ready: int) -> int:
    """Stable servers to run while the canary moves towards `target`: under the `replicas`
    router the stable shrinks only by the canary servers already ready, so the instance never
    serves with fewer than `total` ready servers because of the canary; under `gateway-api` the
    stable keeps `target.stable_replicas` (all of them)."""
    if router != "replicas" or target.canary_replicas == 0:
        return target.stable_replicas
    replaced = min(max(canary_ready, 0), target.canary_replicas)
    return max(target.stable_replicas, total - replaced)
