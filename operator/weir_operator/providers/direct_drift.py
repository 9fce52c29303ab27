"""The `direct` provider's drift source: what the stable revision's servers counted against
the model's reference, from their own /metrics, without Prometheus.

Why it exists: with the direct provider nobody keeps the servers' history, so a drift window
is the difference between two scrapes of each pod (core.drift.delta), summed over the pods
(core.drift.merge). The previous scrape of each pod is kept in memory, per ModelDeployment,
and only that: after an operator restart, or for pods that were not scraped before (a new
stable after a promotion, a new replica), the first scrape is only a baseline, and a window
that has no baseline at all is None ("no window yet"), never a guess. A pod that cannot be
scraped, or that answers for another revision (its address was reused), is left out of the
window and loses its baseline; when no pod can be scraped the measurement fails, with why.

Scraping is the direct provider's (`providers.direct.scrape_text`): the same TLS
verification (`providers.servers`), timeouts and size limit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

from weir_operator.core.drift import Sample, WindowCounts, delta, merge, window_from_samples
from weir_operator.core.spec import ModelDeployment
from weir_operator.providers.base import SCRAPE_TIMEOUT, PodTarget, ProviderError, RevisionTarget
from weir_operator.providers.direct import MAX_CONCURRENT_SCRAPES, ScrapeFailed, scrape_text
from weir_operator.providers.servers import ServerClients

DRIFT_PREFIX = "weir_drift_"


def drift_samples(text: str) -> Iterator[Sample]:
    """The weir_drift_* samples of a Prometheus text exposition; ValueError when it is not
    one."""
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(DRIFT_PREFIX):
            continue
        for sample in family.samples:
            yield sample.name, sample.labels, float(sample.value)


def _revisions(samples: list[Sample]) -> set[str]:
    return {s[1]["revision"] for s in samples if s[1].get("revision")}


class DirectDriftSource:
    """Scrapes `http(s)://<podIP>:<port>/metrics` of every pod of the stable revision."""

    def __init__(self, servers: ServerClients) -> None:
        self._servers = servers
        self._previous: dict[tuple[str, str], dict[str, tuple[str, WindowCounts]]] = {}
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)

    async def drift_window(
        self, md: ModelDeployment, stable: RevisionTarget, window_seconds: float
    ) -> WindowCounts | None:
        """The counts since the previous call, summed over the pods scraped both times (the
        window is the time between the calls: `window_seconds` is the prober's to keep)."""
        key = (md.namespace, md.name)
        if not stable.pods:
            raise ProviderError(
                f"no server of the stable revision {stable.revision[:10]} is ready to be measured"
            )
        scraped = await asyncio.gather(*(self._snapshot(stable.revision, p) for p in stable.pods))
        failures = [s for s in scraped if isinstance(s, str)]
        now = {
            pod.name: (stable.revision, snapshot)
            for pod, snapshot in zip(stable.pods, scraped, strict=True)
            if isinstance(snapshot, WindowCounts)
        }
        previous = self._previous.get(key, {})
        self._previous[key] = now  # pods gone or unreachable start afresh
        if not now:
            raise ProviderError("; ".join(failures))
        windows = [
            delta(snapshot, previous[pod][1])
            for pod, (revision, snapshot) in now.items()
            if pod in previous and previous[pod][0] == revision
        ]
        return merge(windows) if windows else None

    async def _snapshot(self, revision: str, pod: PodTarget) -> WindowCounts | str:
        """What the pod counted since it started, or why it could not be had."""
        async with self._limit:
            text = await scrape_text(self._servers, pod, SCRAPE_TIMEOUT)
        if isinstance(text, ScrapeFailed):
            return str(text)
        try:
            samples = list(drift_samples(text))
        except ValueError as error:
            return f"pod {pod.name} ({pod.url('/metrics')}): not Prometheus metrics: {error}"
        served = _revisions(samples)
        if served and served != {revision}:
            return (
                f"pod {pod.name} ({pod.url('/metrics')}) serves revision "
                f"{', '.join(sorted(served))}, not {revision}: its address was reused"
            )
        return window_from_samples(samples)

    def forget(self, namespace: str, name: str) -> None:
        self._previous.pop((namespace, name), None)

    def remembered(self, namespace: str, name: str) -> frozenset[str]:
        """Names of the pods whose previous scrape is kept for a ModelDeployment."""
        return frozenset(self._previous.get((namespace, name), {}))
