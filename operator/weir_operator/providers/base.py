"""The shapes every metric provider shares: what to measure (revisions and their pods), the
`MetricsProvider` protocol (canary analysis), the `DriftSource` protocol (model monitoring),
and the error that makes a window Inconclusive."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from weir_operator.core.analysis import TrackWindow
from weir_operator.core.drift import WindowCounts
from weir_operator.core.render import (
    SERVER_PORT,
    TLS_SECRET_ANNOTATION,
    TLS_SERVER_NAME_ANNOTATION,
)
from weir_operator.core.spec import ModelDeployment

SCRAPE_TIMEOUT = httpx.Timeout(2.0, connect=1.0)
QUERY_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class ProviderError(Exception):
    """The provider could not measure the window; the message says why, for the status."""


@dataclass(frozen=True, slots=True)
class PodTls:
    """A server pod that speaks HTTPS: the Secret (of the pod's namespace) whose ca.crt its
    certificate must chain to, and the name the certificate must carry (the pod is reached by
    IP, so the name is sent as SNI and checked instead of the address)."""

    namespace: str
    secret: str
    server_name: str


@dataclass(frozen=True, slots=True)
class PodTarget:
    """A server pod to measure: its name (the key of what is remembered about it), where its
    server listens, and how to verify it when it speaks HTTPS."""

    name: str
    ip: str
    port: int = SERVER_PORT
    tls: PodTls | None = None

    @property
    def address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}{path}"


def pod_tls(metadata: Mapping[str, Any]) -> PodTls | None:
    """How a pod's server is verified, from the annotations its template was rendered with
    (core.render: spec.server.tls of its revision); None for a plain-HTTP server."""
    annotations = metadata.get("annotations") or {}
    secret = annotations.get(TLS_SECRET_ANNOTATION)
    name = annotations.get(TLS_SERVER_NAME_ANNOTATION)
    if not secret or not name:
        return None
    return PodTls(str(metadata.get("namespace") or "default"), str(secret), str(name))


@dataclass(frozen=True, slots=True)
class RevisionTarget:
    """A revision and the pods that serve it now."""

    revision: str
    pods: tuple[PodTarget, ...] = ()


def pod_target(pod: Mapping[str, Any]) -> PodTarget | None:
    """Where a Pod object's server listens (its IP and the container port named `http`), if
    the pod is serving: None for a pod that is not Ready (still starting: it gets no traffic
    yet) or is being deleted (draining). A pod that stops being ready is the verdict's business
    (`analysis.pod_health`), not the provider's."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ip = status.get("podIP")
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    if not ip or not ready or metadata.get("deletionTimestamp"):
        return None
    port = SERVER_PORT
    for container in (pod.get("spec") or {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if declared.get("name") == "http" and declared.get("containerPort"):
                port = int(declared["containerPort"])
    return PodTarget(str(metadata.get("name", ip)), str(ip), port, pod_tls(metadata))


class MetricsProvider(Protocol):
    """Measures what each revision served in the window that ends now."""

    async def measure(
        self, md: ModelDeployment, canary: RevisionTarget, stable: RevisionTarget | None
    ) -> dict[str, TrackWindow]:
        """Track windows by revision; a revision without any measurement is left out. Call it
        once per analysis interval: each call closes the window the previous one opened.
        Raises ProviderError when the canary cannot be measured."""
        ...

    async def open_window(
        self, md: ModelDeployment, canary: RevisionTarget, stable: RevisionTarget | None
    ) -> None:
        """Begin the next window now (the canary is about to get traffic); never raises."""
        ...

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept about a ModelDeployment (deleted, or its rollout finished)."""
        ...


class DriftSource(Protocol):
    """What the stable revision's servers counted against the model's reference (the
    weir_drift_* series) in the window that ends now, summed over its pods."""

    async def drift_window(
        self, md: ModelDeployment, stable: RevisionTarget, window_seconds: float
    ) -> WindowCounts | None:
        """The counts of the last `window_seconds` (core.drift.window_from_samples makes them
        from samples); None when there is no window yet, only a baseline (the direct
        provider's first scrape of these pods). Raises ProviderError when the servers' counts
        cannot be had."""
        ...
