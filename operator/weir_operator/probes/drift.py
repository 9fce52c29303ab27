"""Model monitoring's I/O shell: measures the drift of the stable revision's traffic once per
`spec.monitoring.drift.window`, for the pure core to judge and put in the status.

Why it exists: the verdict (core.drift) is pure, so someone must read the servers' counts for
it. On each reconcile of a ModelDeployment with spec.monitoring.reference this prober asks
whether a window is due (status.drift.at, or the last try, a window ago: level-based, so a
restarted operator carries on from the status), and if so reads the window from the metrics
provider the analysis uses (`DriftSource`: the direct provider's two scrapes of each stable
pod, or the prometheus provider's PromQL) and judges it. The direct provider's first scrape
of a set of pods is only a baseline (after a restart, or for a new stable): the measurement
comes a window later. A window that cannot be read is Unknown (MeasurementFailed) and is tried
again sooner than a window later (RETRY_SECONDS)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from weir_operator.core.drift import DriftResult, judge, measurement_failed
from weir_operator.core.render import REVISION_LABEL
from weir_operator.core.spec import ModelDeployment, duration_seconds
from weir_operator.core.status import ModelDeploymentStatus, parse_timestamp
from weir_operator.providers import ProviderError, Providers, RevisionTarget, pod_target

RETRY_SECONDS = 30.0


def stable_target(revision: str, pods: list[Mapping[str, Any]]) -> RevisionTarget:
    """The stable revision and its ready serving pods."""
    mine = (
        p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL)
        == revision
    )  # fmt: skip
    return RevisionTarget(revision, tuple(t for t in map(pod_target, mine) if t is not None))


class DriftProber:
    """The drift measurements of one operator process (`providers`: the rollout prober's, so
    that the HTTP clients and the TLS trust are shared)."""

    def __init__(self, providers: Providers) -> None:
        self.providers = providers
        self._tried: dict[tuple[str, str], tuple[datetime, bool]] = {}  # (when, it failed)

    def due(self, md: ModelDeployment, status: ModelDeploymentStatus, now: datetime) -> bool:
        """A window has passed since the last measurement (status.drift.at) and since the
        last try of this process (RETRY_SECONDS at most after a failed one)."""
        monitoring = md.spec.monitoring
        if monitoring is None or monitoring.reference is None or status.stable is None:
            return False
        window = timedelta(seconds=duration_seconds(monitoring.drift.window))
        if status.drift is not None and now - parse_timestamp(status.drift.at) < window:
            return False
        tried = self._tried.get((md.namespace, md.name))
        if tried is None:
            return True
        wait = min(window, timedelta(seconds=RETRY_SECONDS)) if tried[1] else window
        return now - tried[0] >= wait

    async def probe(
        self,
        md: ModelDeployment,
        status: ModelDeploymentStatus,
        pods: list[Mapping[str, Any]],
        now: datetime,
    ) -> DriftResult | None:
        """The drift of the window that ends now, when one is due and there is one; None
        otherwise (not due, or only a baseline was taken)."""
        if not self.due(md, status, now):
            return None
        monitoring, stable = md.spec.monitoring, status.stable
        assert monitoring is not None
        assert stable is not None
        key = (md.namespace, md.name)
        source = self.providers.drift_source(md)
        target = stable_target(stable.revision, pods)
        window = duration_seconds(monitoring.drift.window)
        try:
            counts = await source.drift_window(md, target, window)
        except ProviderError as error:
            self._tried[key] = (now, True)
            return measurement_failed(f"cannot measure the stable's drift: {error}")
        self._tried[key] = (now, False)
        if counts is None:
            return None
        return judge(counts, monitoring, now, stable.revision)

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: drop what is kept for it."""
        self._tried.pop((namespace, name), None)
        self.providers.direct_drift.forget(namespace, name)
