"""The autoscaler's shell, shared by the operator and `weir run`: when a measurement is due,
scrape the instance's serving pods (`LoadMeter`), call the pure `autoscaler.decide` with the
recommendations remembered for the instance, and remember the new ones.

Only for `autoscaling.metric: concurrency | rps`: cpu is a HorizontalPodAutoscaler's job, and
the operator never writes a count the HPA owns. Between measurements the last decision stands."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from weir_operator.autoscaler import Policy, Recommendation, ScaleDecision, decide
from weir_operator.loadmeter import Key, LoadMeter
from weir_operator.providers.base import pod_target
from weir_operator.providers.direct import DirectProvider
from weir_operator.render import REVISION_LABEL
from weir_operator.spec import ModelDeployment
from weir_operator.status import ModelDeploymentStatus


class Autoscalers:
    def __init__(
        self,
        scraper: DirectProvider,
        *,
        min_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._meter = LoadMeter(scraper, min_seconds=min_seconds, clock=clock)
        self._clock = clock
        self._history: dict[Key, tuple[Recommendation, ...]] = {}
        self._last: dict[Key, ScaleDecision] = {}

    async def decide(
        self,
        md: ModelDeployment,
        status: ModelDeploymentStatus,
        pods: Iterable[Mapping[str, Any]],
    ) -> ScaleDecision | None:
        """The count to run now; None when Weir's autoscaler is not in charge."""
        autoscaling = md.spec.autoscaling
        if autoscaling is None or autoscaling.metric == "cpu":
            return None
        key = (md.namespace, md.name)
        policy = Policy.of(autoscaling)
        current = _current(status, policy)
        last = self._last.get(key)
        if last is not None and not self._meter.due(key):
            return ScaleDecision(policy.clamp(last.replicas), last.recommended, last.history,
                                 last.reason, last.load)  # fmt: skip
        serving = {r.revision for r in (status.stable, status.canary) if r is not None}
        targets = []
        for pod in pods:
            revision = ((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL)
            target = pod_target(pod)
            if revision in serving and target is not None:
                targets.append((str(revision), target))
        load = await self._meter.measure(key, policy.metric, targets)
        decision = decide(policy, current, load, self._history.get(key, ()), self._clock())
        self._history[key] = decision.history
        self._last[key] = decision
        return decision

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._meter.forget(key)
        self._history.pop(key, None)
        self._last.pop(key, None)


def _current(status: ModelDeploymentStatus, policy: Policy) -> int:
    """The count in force: the autoscaler's last decision (kept in the status, so a restart
    resumes from it), else the servers running."""
    if status.autoscaler is not None:
        return policy.clamp(status.autoscaler.desired_replicas)
    return policy.clamp(status.replicas)
