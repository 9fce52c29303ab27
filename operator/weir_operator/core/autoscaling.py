"""Weir's own autoscaler for `autoscaling.metric: concurrency | rps`. Pure.

Why it exists: scaling a model server on CPU needs metrics-server and lags; on in-flight
requests or requests per second it needs a Prometheus adapter or KEDA. Weir already scrapes
every server for the canary analysis, so it scales on those numbers itself, in the style of
Knative's KPA: desired = ceil(observed load / target per server), within [minReplicas,
maxReplicas].

- The load is measured over a short window (the time between two scrapes of the same pods):
  requests/s is Δrequests / Δt; concurrency is Δ(time spent answering) / Δt, the mean number of
  requests in flight over the window (Little's law, from the latency histogram's sum), so a
  scrape that happens to fall between two requests does not read as idle.
- Up at once: a recommendation above the current count is applied immediately.
- Down only after `scaleDownDelay`: the count is the highest recommendation of the whole
  window (as the HPA's stabilization window does), so steady load with noise does not flap,
  and nothing is removed until the window is full of lower recommendations. The window's
  recommendations are kept by the shell in memory; after a restart the window starts empty, so
  a restart delays a scale-down, never causes one.
- No data, no action: without a measurement the count stays (clamped to the bounds). A load
  that misses some serving pods (their scrape failed, or they were seen for the first time)
  is a lower bound: it can add servers, never remove any."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from weir_operator.core.analysis import PodWindow
from weir_operator.core.spec import Autoscaling, duration_seconds

LoadMetric = Literal["concurrency", "rps"]
Recommendation = tuple[float, int]  # (seconds on the shell's clock, replicas)


@dataclass(frozen=True, slots=True)
class Policy:
    min_replicas: int
    max_replicas: int
    metric: LoadMetric
    target: float  # per server
    scale_down_seconds: float

    @classmethod
    def of(cls, autoscaling: Autoscaling) -> Policy:
        if autoscaling.metric == "cpu":
            raise ValueError("cpu autoscaling belongs to a HorizontalPodAutoscaler")
        return cls(
            autoscaling.min_replicas,
            autoscaling.max_replicas,
            autoscaling.metric,
            autoscaling.target,
            duration_seconds(autoscaling.scale_down_delay),
        )

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.min_replicas), self.max_replicas)


@dataclass(frozen=True, slots=True)
class Load:
    """The instance's load over the last window: in-flight requests or requests/s, summed
    over the pods measured."""

    value: float
    pods: int
    seconds: float
    unmeasured: int = 0  # serving pods without a window: `value` is then a lower bound


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    replicas: int
    recommended: int | None  # this window's recommendation; None without a measurement
    history: tuple[Recommendation, ...]
    reason: str
    load: float | None = None
    # Per revision, when each track scales on its own load (an exact-weight router during a
    # rollout); `replicas` is then the count for the whole load (the canary's at promotion).
    tracks: Mapping[str, ScaleDecision] = field(default_factory=dict)


def observed_load(metric: LoadMetric, windows: Iterable[PodWindow]) -> Load | None:
    """The load of the pods' last windows; None when no pod has a window yet."""
    measured = [w for w in windows if w.seconds > 0]
    if not measured:
        return None
    if metric == "rps":
        value = math.fsum(w.requests / w.seconds for w in measured)
    else:
        value = math.fsum(w.busy / w.seconds for w in measured)
    return Load(value, len(measured), max(w.seconds for w in measured))


def track_loads(
    metric: LoadMetric, windows: Iterable[PodWindow], serving: Mapping[str, int]
) -> dict[str, Load | None]:
    """The load of each serving revision (`serving`: revision -> pods scraped), from the pods'
    last windows; None for a revision none of whose pods has a window yet."""
    by_revision: dict[str, list[PodWindow]] = {revision: [] for revision in serving}
    for window in windows:
        by_revision.setdefault(window.revision, []).append(window)
    loads: dict[str, Load | None] = {}
    for revision, pods in serving.items():
        load = observed_load(metric, by_revision[revision])
        if load is not None:
            load = Load(load.value, load.pods, load.seconds, max(pods - load.pods, 0))
        loads[revision] = load
    return loads


def recommend(policy: Policy, load: float) -> int:
    """ceil(load / target) servers, within the bounds (no load: the minimum)."""
    # A hair below a whole number is that number: float sums must not add a server.
    wanted = math.ceil(load / policy.target - 1e-9) if load > 0 else 0
    return policy.clamp(wanted)


def scale_decision(
    policy: Policy,
    current: int,
    load: Load | None,
    history: tuple[Recommendation, ...],
    now: float,
) -> ScaleDecision:
    """The replicas to run now, and the recommendations to remember for the next call."""
    window = policy.scale_down_seconds
    kept = tuple((at, n) for at, n in history if now - at < window)
    if load is None:
        replicas = policy.clamp(current)
        return ScaleDecision(replicas, None, kept, "no load measured yet: keeping the count")
    recommended = recommend(policy, load.value)
    unit = "in flight" if policy.metric == "concurrency" else "requests/s"
    measured = f"{load.value:.1f} {unit} on {load.pods} servers, target {policy.target:g}"
    if load.unmeasured and recommended < current:  # the others may carry any load
        why = f"{measured}, {load.unmeasured} more not measured: keeping the count"
        return ScaleDecision(policy.clamp(current), None, kept, why, load.value)
    kept = (*kept, (now, recommended))
    if recommended >= current:
        verb = "scaling up" if recommended > current else "steady"
        return ScaleDecision(recommended, recommended, kept, f"{measured}: {verb}", load.value)
    full = bool(history) and now - min(at for at, _ in history) >= window
    highest = max(n for _, n in kept)
    if not full:
        why = f"{measured}: {recommended} would do; waiting out scaleDownDelay"
        return ScaleDecision(policy.clamp(current), recommended, kept, why, load.value)
    replicas = policy.clamp(min(current, highest))
    verb = "scaling down" if replicas < current else "waiting out scaleDownDelay"
    return ScaleDecision(replicas, recommended, kept, f"{measured}: {verb}", load.value)
