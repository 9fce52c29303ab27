"""A split of servers between the two tracks (shared by the routers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Split:
    """Servers per track for one weight, and the canary's share of traffic they give."""

    stable_replicas: int
    canary_replicas: int
    canary_weight: int  # percent of requests the canary receives once both counts are running


def exact_split(total: int, weight: int) -> Split:
    """The split of an exact-weight router: the weight as asked, canary servers for its share
    (at least one), and the stable keeps all of its servers (it may have to take all traffic
    back at any moment)."""
    if total <= 0 or weight <= 0:
        return Split(max(total, 0), 0, 0)
    canary = min(total, max(1, -(-total * weight // 100)))
    return Split(total, canary, weight)
