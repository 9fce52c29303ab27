"""Metric providers: where the canary analysis gets its numbers. Thin shells that do I/O and
nothing clever; the math and the verdict live in `weir_operator.core.analysis`.

One implementation per file (as Flagger does): `direct` scrapes every server pod's /metrics and
keeps the previous scrape in memory; `prometheus` asks a Prometheus server with PromQL. Both
answer the same question through `MetricsProvider.measure`: what did each revision serve in the
window that ends now? A provider that cannot tell raises `ProviderError`, which the verdict
turns into Inconclusive (hold), never into Pass or Fail. Both are also drift sources
(`DriftSource.drift_window`, model monitoring): what the stable's servers counted against the
model's reference in the window that ends now (the direct one in `direct_drift.py`).

Use one `Providers` for the operator's lifetime: the direct provider's memory of the previous
scrapes is what makes windows, and is rebuilt from nothing after a restart (so the first window
after a restart is Inconclusive)."""

from __future__ import annotations

from datetime import datetime

import httpx

from weir_operator.core.spec import ModelDeployment
from weir_operator.core.status import AnalysisResult
from weir_operator.core.verdict import judge
from weir_operator.providers.base import (
    DriftSource,
    MetricsProvider,
    PodTarget,
    ProviderError,
    RevisionTarget,
    pod_target,
)
from weir_operator.providers.direct import DirectProvider
from weir_operator.providers.direct_drift import DirectDriftSource
from weir_operator.providers.prometheus import PrometheusProvider
from weir_operator.providers.servers import ServerClients, TrustError, TrustSource

__all__ = [
    "DirectDriftSource",
    "DirectProvider",
    "DriftSource",
    "MetricsProvider",
    "PodTarget",
    "PrometheusProvider",
    "ProviderError",
    "Providers",
    "RevisionTarget",
    "ServerClients",
    "TrustError",
    "TrustSource",
    "analyse",
    "pod_target",
]


class Providers:
    """The providers of one operator process, chosen per ModelDeployment by
    `spec.rollout.analysis.provider`, sharing one HTTP client (and one verifying client per
    CA for server pods that speak HTTPS: `servers`, whose CAs come from `trust`)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        trust: TrustSource | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False)
        self.servers = ServerClients(self._client, trust, transport)
        self.direct = DirectProvider(self._client, servers=self.servers)
        self.prometheus = PrometheusProvider(self._client)
        # Its memory is not the rollout's: `forget` (a rollout ended) leaves it alone.
        self.direct_drift = DirectDriftSource(self.servers)

    def for_deployment(self, md: ModelDeployment) -> MetricsProvider:
        if md.spec.rollout.analysis.provider.prometheus is not None:
            return self.prometheus
        return self.direct

    def drift_source(self, md: ModelDeployment) -> DriftSource:
        """Where the drift of the stable's traffic is read: the provider the analysis uses."""
        if md.spec.rollout.analysis.provider.prometheus is not None:
            return self.prometheus
        return self.direct_drift

    def forget(self, namespace: str, name: str) -> None:
        self.direct.forget(namespace, name)
        self.prometheus.forget(namespace, name)

    async def aclose(self) -> None:
        await self.servers.aclose()
        await self._client.aclose()


async def analyse(
    provider: MetricsProvider,
    md: ModelDeployment,
    canary: RevisionTarget,
    stable: RevisionTarget | None,
    canary_problem: str | None,
    now: datetime,
    *,
    mirroring: bool = False,
) -> AnalysisResult:
    """Measure the window that ends now and judge it: the one call an analysis tick needs
    (`mirroring`: a shadow step is in force)."""
    try:
        windows = await provider.measure(md, canary, stable)
    except ProviderError as error:
        return judge(
            md.spec.rollout.analysis, None, None, canary_problem, now, provider_error=str(error)
        )
    return judge(
        md.spec.rollout.analysis,
        windows.get(canary.revision),
        windows.get(stable.revision) if stable else None,
        canary_problem,
        now,
        mirroring=mirroring,
    )
