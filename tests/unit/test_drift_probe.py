"""The drift measurement's shells, with servers played by an httpx MockTransport: the direct
provider's drift source (a window is the difference of two scrapes of each stable pod, the
first one only a baseline) and the prober that decides when a window is due (once per
`monitoring.drift.window`, level-based on status.drift.at)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from weir_operator.core.spec import ModelDeployment, parse_model_deployment
from weir_operator.core.status import DriftStatus, ModelDeploymentStatus, RevisionRef, timestamp
from weir_operator.probes.drift import RETRY_SECONDS, DriftProber
from weir_operator.providers import PodTarget, ProviderError, Providers, RevisionTarget

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
REVISION = "a1b2c3d4e5f60718"
HTTP_PORT = {"name": "http", "containerPort": 8080}


class Servers:
    """What each pod's /metrics answers: `rows` rows spread evenly over input[0]'s two bins,
    plus `extra` rows in bin 1; HTTP 503 when the pod is `down`."""

    def __init__(self) -> None:
        self.rows: dict[str, float] = {}
        self.extra: dict[str, float] = {}
        self.revision: dict[str, str] = {}
        self.down: set[str] = set()
        self.scrapes = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.scrapes += 1
        ip = request.url.host
        if ip in self.down or ip not in self.rows:
            return httpx.Response(503)
        rows, extra = self.rows[ip], self.extra.get(ip, 0.0)
        labels = f'model="iris",version="",revision="{self.revision.get(ip, REVISION)}",track=""'
        text = "\n".join(
            [
                "# TYPE weir_drift_rows counter",
                f"weir_drift_rows_total{{{labels}}} {rows + extra}",
                "# TYPE weir_drift_feature_rows counter",
                f'weir_drift_feature_rows_total{{{labels},feature="input[0]",bin="0"}} {rows / 2}',
                f'weir_drift_feature_rows_total{{{labels},feature="input[0]",bin="1"}} '
                f"{rows / 2 + extra}",
                "# TYPE weir_drift_feature_reference_share gauge",
                f'weir_drift_feature_reference_share{{{labels},feature="input[0]",bin="0"}} 0.5',
                f'weir_drift_feature_reference_share{{{labels},feature="input[0]",bin="1"}} 0.5',
                "# TYPE weir_inference_requests counter",
                f'weir_inference_requests_total{{{labels},code="200"}} 3',
                "",
            ]
        )
        return httpx.Response(200, text=text)


@pytest.fixture
def servers() -> Servers:
    return Servers()


@pytest.fixture
async def providers(servers: Servers) -> AsyncIterator[Providers]:
    made = Providers(httpx.MockTransport(servers.handle))
    yield made
    await made.aclose()


def deployment(window: str = "10m", min_samples: int = 100) -> ModelDeployment:
    return parse_model_deployment(
        {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {
                "model": {"uri": "https://m.example.com/iris.onnx"},
                "monitoring": {
                    "reference": {"uri": "https://m.example.com/iris.reference.json"},
                    "drift": {"window": window, "minSamples": min_samples},
                },
            },
        }
    )


def stable(*ips: str) -> RevisionTarget:
    return RevisionTarget(REVISION, tuple(PodTarget(f"iris-{ip}", ip) for ip in ips))


def pod(ip: str, revision: str = REVISION) -> dict[str, Any]:
    return {
        "metadata": {"name": f"iris-{ip}", "labels": {"serving.weir.dev/revision": revision}},
        "spec": {"containers": [{"name": "server", "ports": [HTTP_PORT]}]},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


class TestTheDirectDriftSource:
    async def test_the_first_scrape_is_only_a_baseline(
        self, providers: Providers, servers: Servers
    ) -> None:
        servers.rows = {"10.0.0.1": 1000}
        assert (
            await providers.direct_drift.drift_window(deployment(), stable("10.0.0.1"), 600) is None
        )
        assert providers.direct_drift.remembered("ml", "iris") == {"iris-10.0.0.1"}

    async def test_a_window_is_what_every_pod_counted_since_the_last_scrape(
        self, providers: Providers, servers: Servers
    ) -> None:
        servers.rows = {"10.0.0.1": 1000, "10.0.0.2": 50}
        target = stable("10.0.0.1", "10.0.0.2")
        await providers.direct_drift.drift_window(deployment(), target, 600)
        servers.rows = {"10.0.0.1": 1100, "10.0.0.2": 150}
        servers.extra = {"10.0.0.2": 40}
        window = await providers.direct_drift.drift_window(deployment(), target, 600)
        assert window is not None
        assert window.rows == 240
        assert window.features["input[0]"].counts == (100.0, 140.0)
        assert window.features["input[0]"].expected == (0.5, 0.5)

    async def test_a_restarted_server_counts_from_zero(
        self, providers: Providers, servers: Servers
    ) -> None:
        servers.rows = {"10.0.0.1": 1000}
        await providers.direct_drift.drift_window(deployment(), stable("10.0.0.1"), 600)
        servers.rows = {"10.0.0.1": 30}
        window = await providers.direct_drift.drift_window(deployment(), stable("10.0.0.1"), 600)
        assert window is not None
        assert window.rows == 30

    async def test_a_pod_that_cannot_be_scraped_is_left_out_and_starts_afresh(
        self, providers: Providers, servers: Servers
    ) -> None:
        servers.rows = {"10.0.0.1": 100, "10.0.0.2": 100}
        target = stable("10.0.0.1", "10.0.0.2")
        await providers.direct_drift.drift_window(deployment(), target, 600)
        servers.rows = {"10.0.0.1": 300, "10.0.0.2": 300}
        servers.down = {"10.0.0.2"}
        window = await providers.direct_drift.drift_window(deployment(), target, 600)
        assert window is not None
        assert window.rows == 200
        servers.down = set()
        servers.rows = {"10.0.0.1": 400, "10.0.0.2": 900}
        window = await providers.direct_drift.drift_window(deployment(), target, 600)
        assert window is not None
        assert window.rows == 100, "pod 2's first scrape since it failed is only a baseline"

    async def test_no_pod_answering_is_a_failure_that_says_why(
        self, providers: Providers, servers: Servers
    ) -> None:
        with pytest.raises(ProviderError, match=r"cannot scrape pod iris-10\.0\.0\.9 .*HTTP 503"):
            await providers.direct_drift.drift_window(deployment(), stable("10.0.0.9"), 600)
        with pytest.raises(ProviderError, match="no server of the stable revision a1b2c3d4e5"):
            await providers.direct_drift.drift_window(deployment(), stable(), 600)

    async def test_a_pod_serving_another_revision_is_not_counted(
        self, providers: Providers, servers: Servers
    ) -> None:
        servers.rows = {"10.0.0.1": 100}
        servers.revision = {"10.0.0.1": "ffffffffffffffff"}
        with pytest.raises(ProviderError, match="its address was reused"):
            await providers.direct_drift.drift_window(deployment(), stable("10.0.0.1"), 600)


class TestWhenAWindowIsDue:
    async def test_without_a_reference_nothing_is_measured(
        self, providers: Providers, servers: Servers
    ) -> None:
        plain = parse_model_deployment(
            {
                "apiVersion": "serving.weir.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "iris", "namespace": "ml"},
                "spec": {"model": {"uri": "https://m.example.com/iris.onnx"}},
            }
        )
        prober = DriftProber(providers)
        assert await prober.probe(plain, serving(), [pod("10.0.0.1")], NOW) is None
        assert servers.scrapes == 0

    async def test_a_baseline_then_one_window_later_a_verdict(
        self, providers: Providers, servers: Servers
    ) -> None:
        md, prober = deployment(window="10m"), DriftProber(providers)
        servers.rows = {"10.0.0.1": 1000}
        assert await prober.probe(md, serving(), [pod("10.0.0.1")], NOW) is None
        servers.rows = {"10.0.0.1": 1500}
        early = NOW + timedelta(minutes=9, seconds=59)
        assert await prober.probe(md, serving(), [pod("10.0.0.1")], early) is None
        assert servers.scrapes == 1, "not due before a whole window"
        later = NOW + timedelta(minutes=10)
        result = await prober.probe(md, serving(), [pod("10.0.0.1")], later)
        assert result is not None
        assert (result.status, result.reason) == ("False", "NoDrift")
        assert result.drift is not None
        assert (result.drift.samples, result.drift.revision) == (500, REVISION)

    async def test_after_a_restart_the_status_says_when_the_next_window_is_due(
        self, providers: Providers, servers: Servers
    ) -> None:
        md, prober = deployment(window="10m"), DriftProber(providers)
        measured = serving(DriftStatus(at=timestamp(NOW), window="10m"))
        servers.rows = {"10.0.0.1": 1000}
        soon = NOW + timedelta(minutes=5)
        assert await prober.probe(md, measured, [pod("10.0.0.1")], soon) is None
        assert servers.scrapes == 0
        due = NOW + timedelta(minutes=10)
        assert await prober.probe(md, measured, [pod("10.0.0.1")], due) is None, "a baseline"
        assert servers.scrapes == 1

    async def test_a_failed_measurement_is_unknown_and_tried_again_soon(
        self, providers: Providers, servers: Servers
    ) -> None:
        md, prober = deployment(window="10m"), DriftProber(providers)
        result = await prober.probe(md, serving(), [pod("10.0.0.1")], NOW)
        assert result is not None
        assert (result.status, result.reason) == ("Unknown", "MeasurementFailed")
        assert result.message.startswith("cannot measure the stable's drift: cannot scrape pod")
        retry = NOW + timedelta(seconds=RETRY_SECONDS)
        assert not prober.due(md, serving(), retry - timedelta(seconds=1))
        assert prober.due(md, serving(), retry)

    async def test_only_the_stables_ready_pods_are_measured(
        self, providers: Providers, servers: Servers
    ) -> None:
        md, prober = deployment(window="1s", min_samples=10), DriftProber(providers)
        pods = [pod("10.0.0.1"), pod("10.0.0.2", revision="0123456789abcdef")]
        servers.rows = {"10.0.0.1": 10, "10.0.0.2": 10}
        await prober.probe(md, serving(), pods, NOW)
        servers.rows = {"10.0.0.1": 110, "10.0.0.2": 5000}
        result = await prober.probe(md, serving(), pods, NOW + timedelta(seconds=1))
        assert result is not None
        assert result.drift is not None
        assert result.drift.samples == 100

    async def test_forgetting_drops_the_baseline(
        self, providers: Providers, servers: Servers
    ) -> None:
        md, prober = deployment(window="1s"), DriftProber(providers)
        servers.rows = {"10.0.0.1": 10}
        await prober.probe(md, serving(), [pod("10.0.0.1")], NOW)
        prober.forget("ml", "iris")
        assert providers.direct_drift.remembered("ml", "iris") == frozenset()
        assert prober.due(md, serving(), NOW)


def serving(drift: DriftStatus | None = None) -> ModelDeploymentStatus:
    return ModelDeploymentStatus(
        phase="Healthy",
        stable=RevisionRef(revision=REVISION, uri="https://m.example.com/iris.onnx"),
        drift=drift,
    )
