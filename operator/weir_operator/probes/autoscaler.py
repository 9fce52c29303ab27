"""The autoscaler's shell, shared by the operator and `weir run`: when a measurement is due,
scrape the instance's serving pods (`LoadMeter`), call the pure
`core.autoscaling.scale_decision` with the recommendations remembered for the instance, and
remember the new ones.

Only for `autoscaling.metric: concurrency | rps`: cpu is a HorizontalPodAutoscaler's job, and
the operator never writes a count the HPA owns. Between measurements the last decision stands.

During a rollout behind an exact-weight router (gateway-api, and `weir run`'s router) each
revision also gets its own decision from its own pods' load, with its own scale-down window
(starting from the count its Deployment has); the rollout core runs those counts. With the
`replicas` router there is one decision for the whole load, and the canary's share follows the
weight of that total."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from weir_operator.core.autoscaling import Policy, Recommendation, ScaleDecision, scale_decision
from weir_operator.core.render import REVISION_LABEL
from weir_operator.core.spec import ModelDeployment
from weir_operator.core.status import ModelDeploymentStatus
from weir_operator.probes.loadmeter import Key, LoadMeter
from weir_operator.providers.base import pod_target
from weir_operator.providers.direct import DirectProvider


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
        self._track_history: dict[Key, dict[str, tuple[Recommendation, ...]]] = {}
        self._last: dict[Key, ScaleDecision] = {}

    async def decision_for(
        self,
        md: ModelDeployment,
        status: ModelDeploymentStatus,
        pods: Iterable[Mapping[str, Any]],
        *,
        counts: Mapping[str, int | None] | None = None,
        per_track: bool = False,
    ) -> ScaleDecision | None:
        """The count to run now; None when Weir's autoscaler is not in charge. With
        `per_track` (an exact-weight router) and a canary, also each revision's own count;
        `counts` are the revisions' current counts (their Deployments' replicas)."""
        autoscaling = md.spec.autoscaling
        if autoscaling is None or autoscaling.metric == "cpu":
            return None
        key = (md.namespace, md.name)
        policy = Policy.of(autoscaling)
        serving = {r.revision for r in (status.stable, status.canary) if r is not None}
        by_track = serving if per_track and status.canary is not None else set()
        last = self._last.get(key)
        if last is not None and not self._meter.due(key):
            kept = {r: _kept(policy, d) for r, d in last.tracks.items() if r in by_track}
            return dataclasses.replace(_kept(policy, last), tracks=kept)
        targets = []
        for pod in pods:
            revision = ((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL)
            target = pod_target(pod)
            if revision in serving and target is not None:
                targets.append((str(revision), target))
        measured = await self._meter.measure(key, policy.metric, targets)
        now = self._clock()
        decision = scale_decision(policy, _current(status, policy), measured.total,
                          self._history.get(key, ()), now)  # fmt: skip
        self._history[key] = decision.history
        histories = self._track_history.setdefault(key, {})
        for gone in set(histories) - by_track:
            del histories[gone]
        tracks: dict[str, ScaleDecision] = {}
        for revision in sorted(by_track):
            before = last.tracks.get(revision) if last is not None else None
            current = (counts or {}).get(revision)
            if current is None:
                current = before.replicas if before is not None else policy.min_replicas
            load = measured.tracks.get(revision)
            own = scale_decision(policy, current, load, histories.get(revision, ()), now)
            histories[revision] = own.history
            tracks[revision] = own
        decision = dataclasses.replace(decision, tracks=tracks)
        self._last[key] = decision
        return decision

    def remember(self, namespace: str, name: str) -> dict[str, Any]:
        """The scale-down windows of one instance, on the wall clock (JSON), for a shell that
        keeps them across restarts (`weir run`'s state folder); `recall` reads them back."""
        key = (namespace, name)
        offset = time.time() - self._clock()

        def wall(history: tuple[Recommendation, ...]) -> list[list[float]]:
            return [[at + offset, replicas] for at, replicas in history]

        return {
            "history": wall(self._history.get(key, ())),
            "tracks": {r: wall(h) for r, h in self._track_history.get(key, {}).items()},
        }

    def recall(self, namespace: str, name: str, remembered: Mapping[str, Any]) -> None:
        """Resume the windows `remember` returned (recommendations from the future, after a
        clock change, are dropped: a window may only start later, never scale down sooner)."""
        key = (namespace, name)
        offset = time.time() - self._clock()
        now = self._clock()

        def monotonic(rows: Any) -> tuple[Recommendation, ...]:
            history: list[Recommendation] = []
            for row in rows if isinstance(rows, list) else []:
                if isinstance(row, list) and len(row) == 2:
                    at, replicas = float(row[0]) - offset, int(row[1])
                    if at <= now:
                        history.append((at, replicas))
            return tuple(history)

        self._history[key] = monotonic(remembered.get("history"))
        tracks = remembered.get("tracks")
        if isinstance(tracks, dict):
            self._track_history[key] = {str(r): monotonic(h) for r, h in tracks.items()}

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._meter.forget(key)
        self._history.pop(key, None)
        self._track_history.pop(key, None)
        self._last.pop(key, None)


def _kept(policy: Policy, last: ScaleDecision) -> ScaleDecision:
    """The last decision again, between two measurements (clamped: the bounds may have
    changed since)."""
    return ScaleDecision(policy.clamp(last.replicas), last.recommended, last.history,
                         last.reason, last.load)  # fmt: skip


def _current(status: ModelDeploymentStatus, policy: Policy) -> int:
    """The count in force: the autoscaler's last decision (kept in the status, so a restart
    resumes from it), else the servers running."""
    if status.autoscaler is not None:
        return policy.clamp(status.autoscaler.desired_replicas)
    return policy.clamp(status.replicas)
