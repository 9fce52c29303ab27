"""The `direct` metrics provider: the operator scrapes every server pod's /metrics itself, so
canary analysis works without Prometheus.

A window is the difference between two scrapes of a pod, so the previous scrape of each pod is
kept in memory (per ModelDeployment, by pod name), and only that: after an operator restart the
first scrape only opens windows, and that analysis is Inconclusive, never a guess. Pods that are
gone are forgotten at the next scrape. A canary pod that cannot be scraped (or that answers for
another revision: its IP was reused) makes the window a provider error, since the canary's
numbers would be partial; a stable pod that cannot be scraped is left out of stable's window.

A pod that speaks HTTPS (`spec.server.tls`) is scraped over HTTPS and verified
(`providers.servers`); one that cannot be verified cannot be scraped, with the reason."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable

import httpx

from weir_operator.core.analysis import (
    PodSample,
    ScrapeError,
    TrackWindow,
    parse_scrape,
    windows_between,
)
from weir_operator.core.spec import ModelDeployment
from weir_operator.providers.base import (
    SCRAPE_TIMEOUT,
    PodTarget,
    ProviderError,
    RevisionTarget,
)
from weir_operator.providers.servers import ServerClients, TrustError

MAX_CONCURRENT_SCRAPES = 16
STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
MAX_SCRAPE_BYTES = 4 * 1024 * 1024  # a weir server's scrape is about 40 kB


class DirectProvider:
    """Scrapes `http(s)://<podIP>:<port>/metrics` of every pod of the canary and stable
    revisions (`servers`: how HTTPS pods are verified; default: plain HTTP only)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        servers: ServerClients | None = None,
        timeout: httpx.Timeout = SCRAPE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._servers = servers or ServerClients(client)
        self._timeout = timeout
        self._clock = clock
        self._previous: dict[tuple[str, str], dict[str, PodSample]] = {}
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_SCRAPES)

    async def measure(
        self, md: ModelDeployment, canary: RevisionTarget, stable: RevisionTarget | None
    ) -> dict[str, TrackWindow]:
        targets = [(t.revision, pod) for t in (canary, stable) if t for pod in t.pods]
        scraped = await asyncio.gather(*(self._scrape(rev, pod) for rev, pod in targets))
        samples = [s for s in scraped if isinstance(s, PodSample)]
        key = (md.namespace, md.name)
        windows = windows_between(self._previous.get(key, {}), samples)
        # Only the pods scraped now are remembered: gone or unreachable pods start afresh.
        self._previous[key] = {s.pod: s for s in samples}
        canary_failures = [
            failure
            for (revision, _), failure in zip(targets, scraped, strict=True)
            if revision == canary.revision and isinstance(failure, str)
        ]
        if canary_failures:
            raise ProviderError("; ".join(canary_failures))
        return windows

    async def scrape(self, targets: list[tuple[str, PodTarget]]) -> list[PodSample | str]:
        """One sample (or why not) per (revision, pod), scraped concurrently; remembers
        nothing (the autoscaler's load meter keeps its own previous samples)."""
        return list(await asyncio.gather(*(self._scrape(rev, pod) for rev, pod in targets)))

    async def open_window(
        self, md: ModelDeployment, canary: RevisionTarget, stable: RevisionTarget | None
    ) -> None:
        """Scrape now so that the next `measure` closes a whole window: called when the canary
        is verified (it gets traffic from now on), so the first analysis counts instead of
        only opening windows."""
        with contextlib.suppress(ProviderError):
            await self.measure(md, canary, stable)

    def forget(self, namespace: str, name: str) -> None:
        self._previous.pop((namespace, name), None)

    def remembered(self, namespace: str, name: str) -> frozenset[str]:
        """Names of the pods whose previous scrape is kept for a ModelDeployment."""
        return frozenset(self._previous.get((namespace, name), {}))

    async def _scrape(self, revision: str, pod: PodTarget) -> PodSample | str:
        """The pod's sample, or why it could not be had."""
        url = pod.url("/metrics")
        async with self._limit:
            text = await scrape_text(self._servers, pod, self._timeout)
        taken_at = self._clock()
        if isinstance(text, ScrapeFailed):
            return str(text)
        try:
            sample = parse_scrape(text, pod=pod.name, taken_at=taken_at)
        except ScrapeError as error:
            return str(error)
        if sample.revision and sample.revision != revision:
            return (
                f"pod {pod.name} ({url}) serves revision {sample.revision}, not {revision}: "
                "its address was reused"
            )
        if not sample.revision:  # a server started without WEIR_REVISION
            sample = dataclasses.replace(sample, revision=revision)
        return sample


class ScrapeFailed(str):
    """Why a pod's /metrics could not be had (a str, to be said as it is)."""


async def scrape_text(
    servers: ServerClients, pod: PodTarget, limits: httpx.Timeout = SCRAPE_TIMEOUT
) -> str | ScrapeFailed:
    """The text of a pod's /metrics, over HTTPS verified when it speaks it; or why not."""
    url = pod.url("/metrics")
    try:
        try:
            response = await servers.get(pod, "/metrics", timeout=limits)
        except STALE_CONNECTION:
            # A pooled keep-alive connection the server closed as it was reused (a scrape
            # interval equal to the server's keep-alive timeout races it): a GET is safe to
            # send again, on a new connection.
            response = await servers.get(pod, "/metrics", timeout=limits)
    except httpx.HTTPError as error:
        why = f"cannot scrape pod {pod.name} ({url}): {type(error).__name__} {error}"
        return ScrapeFailed(why.strip())
    except TrustError as error:
        return ScrapeFailed(f"cannot scrape pod {pod.name}: {error}")
    if response.status_code != 200:
        return ScrapeFailed(f"cannot scrape pod {pod.name} ({url}): HTTP {response.status_code}")
    if len(response.content) > MAX_SCRAPE_BYTES:
        return ScrapeFailed(f"cannot scrape pod {pod.name} ({url}): over {MAX_SCRAPE_BYTES} bytes")
    return response.text
