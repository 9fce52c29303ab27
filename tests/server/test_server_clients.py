"""How the operator talks to a TLS server pod (`providers.servers.ServerClients`), against a real
`weir serve --tls-cert` on 127.0.0.1: verified with the CA its `TrustSource` gives for the
pod's Secret and the server name as SNI, or not at all. A wrong CA, a wrong name or no CA at
all is a `TrustError` that names the Secret, and no request ever reaches the server unverified
(its access log proves it); what the source answered is kept (a CA `TRUST_TTL`, a failure
`FAILURE_TTL`, a CA that does not verify the server is asked again after `FAILURE_TTL`), on the
injected clock. What goes through it: the direct provider's scrapes (the analysis), the
autoscaler's load meter, and the pre-traffic gates of the prober, with a `TLSNotVerified`
event when the canary cannot be trusted."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.server.conftest import TLS_NAME as NAME
from tests.support.certs import Authority, ServerCert
from tests.support.processes import ServerProcess
from tests.support.tls import running_tls_server
from weir_operator.core.render import (
    REVISION_LABEL,
    TLS_SECRET_ANNOTATION,
    TLS_SERVER_NAME_ANNOTATION,
)
from weir_operator.core.spec import ModelDeployment, parse_model_deployment
from weir_operator.core.status import CanaryStatus, ModelDeploymentStatus, RevisionRef
from weir_operator.probes.loadmeter import LoadMeter
from weir_operator.probes.rollout import RolloutProber
from weir_operator.providers import (
    PodTarget,
    ProviderError,
    Providers,
    RevisionTarget,
    ServerClients,
    TrustError,
    pod_target,
)
from weir_operator.providers.base import PodTls
from weir_operator.providers.servers import FAILURE_TTL, TRUST_TTL

NAMESPACE, SECRET = "tests", "iris-tls"
CANARY, STABLE = "c0ffee0000000001", "5ab1e00000000002"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip


class Source:
    """A TrustSource whose answer the test sets (PEM bytes or a TrustError); counts its calls."""

    def __init__(self, answer: bytes | TrustError) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str]] = []

    async def ca_bundle(self, namespace: str, secret: str) -> str:
        self.calls.append((namespace, secret))
        if isinstance(self.answer, TrustError):
            raise self.answer
        return self.answer.decode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def server(
    iris_model: Path, issued: ServerCert, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("tls")
    env = {"WEIR_REVISION": CANARY, "WEIR_TRACK": "canary"}
    with running_tls_server(iris_model, issued, folder, NAME, "--name", "iris", env=env) as found:
        yield found


@pytest_asyncio.fixture
async def plain() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def target(server: ServerProcess, name: str = NAME, secret: str = SECRET) -> PodTarget:
    return PodTarget("iris-0", "127.0.0.1", server.port, PodTls(NAMESPACE, secret, name))


async def logged_paths(server: ServerProcess) -> list[str]:
    """The paths in the server's access log (written every 50 ms)."""
    await asyncio.sleep(0.3)
    paths = []
    for line in server.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "path" in entry:
            paths.append(str(entry["path"]))
    return paths


class TestVerifies:
    async def test_with_the_ca_of_the_secret_and_the_server_name(
        self, server: ServerProcess, issued: ServerCert, plain: httpx.AsyncClient
    ) -> None:
        source = Source(issued.ca)
        clients = ServerClients(plain, source)
        try:
            ready = await clients.get(target(server), "/v2/health/ready")
            assert ready.status_code == 200
            answer = await clients.post(target(server), "/v2/models/iris/infer", json=ROW)
            assert answer.status_code == 200, answer.text
            assert source.calls == [(NAMESPACE, SECRET)], "one read of the Secret for both"
        finally:
            await clients.aclose()

    async def test_another_ca_is_a_trust_error_naming_the_secret_and_nothing_is_sent(
        self, server: ServerProcess, issued: ServerCert, plain: httpx.AsyncClient
    ) -> None:
        clients = ServerClients(plain, Source(Authority("someone-else").pem))
        try:
            with pytest.raises(TrustError) as raised:
                await clients.get(target(server), "/v2/models/iris/versions/unverified-ca")
        finally:
            await clients.aclose()
        message = str(raised.value)
        assert f"Secret {NAMESPACE}/{SECRET}" in message
        assert "does not verify" in message
        assert f"as {NAME}" in message
        assert "\n" not in message
        await self._never_reached(server, issued, "/v2/models/iris/versions/unverified-ca")

    async def test_another_server_name_is_a_trust_error(
        self, server: ServerProcess, issued: ServerCert, plain: httpx.AsyncClient
    ) -> None:
        clients = ServerClients(plain, Source(issued.ca))
        wrong = "somebody.else.svc"
        try:
            with pytest.raises(TrustError) as raised:
                await clients.get(target(server, wrong), "/v2/models/iris/versions/wrong-name")
        finally:
            await clients.aclose()
        message = str(raised.value)
        assert f"as {wrong}" in message
        assert "somebody.else.svc" in message
        assert f"Secret {NAMESPACE}/{SECRET}" in message
        await self._never_reached(server, issued, "/v2/models/iris/versions/wrong-name")

    async def test_without_a_trust_source_a_tls_pod_is_never_reached(
        self, server: ServerProcess, issued: ServerCert, plain: httpx.AsyncClient
    ) -> None:
        clients = ServerClients(plain)
        try:
            with pytest.raises(TrustError, match=f"Secret {NAMESPACE}/{SECRET}: no CA source"):
                await clients.get(target(server), "/v2/models/iris/versions/no-source")
        finally:
            await clients.aclose()
        await self._never_reached(server, issued, "/v2/models/iris/versions/no-source")

    async def test_a_ca_crt_that_is_no_certificate_is_said_so(
        self, server: ServerProcess, plain: httpx.AsyncClient
    ) -> None:
        clients = ServerClients(plain, Source(b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n"))
        try:
            with pytest.raises(TrustError, match=r"ca\.crt is not a PEM CA certificate"):
                await clients.get(target(server), "/v2/health/ready")
        finally:
            await clients.aclose()

    async def _never_reached(self, server: ServerProcess, issued: ServerCert, path: str) -> None:
        """`path` is not in the access log, though a verified request after it is."""
        clients = ServerClients(httpx.AsyncClient(), Source(issued.ca))
        marker = f"/v2/models/iris/versions/after-{time.monotonic_ns()}"
        try:
            await clients.get(target(server), marker)
        finally:
            await clients.aclose()
            await clients.plain.aclose()
        paths = await logged_paths(server)
        assert marker in paths, "the access log is on"
        assert path not in paths, f"{path} reached the server unverified"


class TestRemembers:
    async def test_a_failure_of_the_source_is_kept_failure_ttl_seconds(
        self, server: ServerProcess, issued: ServerCert, plain: httpx.AsyncClient
    ) -> None:
        clock = Clock()
        source = Source(TrustError(f"Secret {NAMESPACE}/{SECRET} does not exist"))
        clients = ServerClients(plain, source, clock=clock)
        try:
            for _ in range(3):
                with pytest.raises(TrustError, match="does not exist"):
                    await clients.get(target(server), "/v2/health/ready")
            clock.now += FAILURE_TTL - 0.1
            with pytest.raises(TrustError, match="does not exist"):
                await clients.get(target(server), "/v2/health/ready")
            assert len(source.calls) == 1, "no API call per request"

            source.answer = issued.ca  # the Secret is created
            clock.now += 0.2
            assert (await clients.get(target(server), "/v2/health/ready")).status_code == 200
            assert len(source.calls) == 2
        finally:
            await clients.aclose()

    async def test_a_ca_is_kept_trust_ttl_seconds(
        self, server: ServerProcess, issued: ServerCert, plain: httpx.AsyncClient
    ) -> None:
        clock = Clock()
        source = Source(issued.ca)
        clients = ServerClients(plain, source, clock=clock)
        try:
            for _ in range(3):
                assert (await clients.get(target(server), "/v2/health/ready")).status_code == 200
            clock.now += TRUST_TTL - 0.1
            await clients.get(target(server), "/v2/health/ready")
            assert len(source.calls) == 1
            clock.now += 0.2
            await clients.get(target(server), "/v2/health/ready")
            assert len(source.calls) == 2, "a rotated CA is picked up"
        finally:
            await clients.aclose()

    async def test_a_ca_that_does_not_verify_is_read_again_after_failure_ttl_not_per_request(
        self, server: ServerProcess, issued: ServerCert, plain: httpx.AsyncClient
    ) -> None:
        clock = Clock()
        source = Source(Authority("before-rotation").pem)
        clients = ServerClients(plain, source, clock=clock)
        try:
            for _ in range(3):
                with pytest.raises(TrustError, match="does not verify"):
                    await clients.get(target(server), "/v2/health/ready")
            assert len(source.calls) == 1
            source.answer = issued.ca  # the Secret's ca.crt is rotated
            clock.now += FAILURE_TTL + 0.1
            assert (await clients.get(target(server), "/v2/health/ready")).status_code == 200
            assert len(source.calls) == 2
        finally:
            await clients.aclose()

    async def test_concurrent_requests_read_the_secret_once(
        self, server: ServerProcess, issued: ServerCert, plain: httpx.AsyncClient
    ) -> None:
        source = Source(issued.ca)
        clients = ServerClients(plain, source)
        try:
            answers = await asyncio.gather(
                *(clients.get(target(server), "/v2/health/ready") for _ in range(8))
            )
            assert {a.status_code for a in answers} == {200}
            assert len(source.calls) == 1
        finally:
            await clients.aclose()


def deployment(name: str = "iris") -> ModelDeployment:
    return parse_model_deployment(
        {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "model": {"uri": "file:///models/iris.onnx", "name": "iris"},
                "server": {"tls": {"secretName": SECRET, "serverName": NAME}, "sampleInput": ROW},
                "rollout": {"allowSignatureChange": True},
            },
        }
    )


def pod(server: ServerProcess, revision: str, name: str = "iris-c-0") -> dict[str, Any]:
    """A ready server pod as the operator's watch sees it, rendered with spec.server.tls."""
    return {
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {REVISION_LABEL: revision},
            "annotations": {TLS_SECRET_ANNOTATION: SECRET, TLS_SERVER_NAME_ANNOTATION: NAME},
        },
        "spec": {
            "containers": [
                {"name": "server", "ports": [{"name": "http", "containerPort": server.port}]}
            ]
        },
        "status": {"podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
    }


async def infer(server: ServerProcess, issued: ServerCert, times: int) -> None:
    clients = ServerClients(httpx.AsyncClient(), Source(issued.ca))
    try:
        for _ in range(times):
            answer = await clients.post(target(server), "/v2/models/iris/infer", json=ROW)
            assert answer.status_code == 200
    finally:
        await clients.aclose()
        await clients.plain.aclose()


class TestWhatGoesThroughIt:
    def test_a_pod_rendered_with_tls_is_a_tls_target(self, server: ServerProcess) -> None:
        found = pod_target(pod(server, CANARY))
        assert found is not None
        assert found.tls == PodTls(NAMESPACE, SECRET, NAME)
        assert found.url("/metrics") == f"https://127.0.0.1:{server.port}/metrics"

    async def test_the_direct_provider_scrapes_a_tls_server_and_counts_its_answers(
        self, server: ServerProcess, issued: ServerCert
    ) -> None:
        md = deployment("scraped")
        canary = RevisionTarget(CANARY, (target(server),))
        providers = Providers(trust=Source(issued.ca))
        try:
            provider = providers.for_deployment(md)
            await provider.measure(md, canary, None)  # opens the window
            await infer(server, issued, 12)
            windows = await provider.measure(md, canary, None)
            assert windows[CANARY].requests == 12
            assert windows[CANARY].errors == 0
        finally:
            await providers.aclose()

    async def test_a_canary_that_cannot_be_verified_is_a_provider_error_with_the_reason(
        self, server: ServerProcess
    ) -> None:
        md = deployment("untrusted")
        canary = RevisionTarget(CANARY, (target(server),))
        providers = Providers(trust=Source(Authority("someone-else").pem))
        try:
            with pytest.raises(ProviderError) as raised:
                await providers.for_deployment(md).measure(md, canary, None)
        finally:
            await providers.aclose()
        message = str(raised.value)
        assert message.startswith("cannot scrape pod iris-0: ")
        assert f"Secret {NAMESPACE}/{SECRET}" in message

    async def test_the_autoscalers_load_meter_scrapes_a_tls_server(
        self, server: ServerProcess, issued: ServerCert
    ) -> None:
        providers = Providers(trust=Source(issued.ca))
        meter = LoadMeter(providers.direct, min_seconds=0)
        key = (NAMESPACE, "metered")
        try:
            await meter.measure(key, "rps", [(CANARY, target(server))])
            await infer(server, issued, 5)
            measured = await meter.measure(key, "rps", [(CANARY, target(server))])
            assert measured.total is not None
            assert measured.total.pods == 1
            assert measured.total.unmeasured == 0
            assert measured.total.value > 0
        finally:
            await providers.aclose()

    async def test_the_prober_runs_the_sample_inference_over_verified_tls(
        self, server: ServerProcess, issued: ServerCert
    ) -> None:
        md = deployment()
        prober = RolloutProber(trust=Source(issued.ca))
        try:
            measured, events = await prober.probe(
                md, _rolling_out(), [pod(server, CANARY)], None, NOW
            )
        finally:
            await prober.aclose()
        gate = measured.gates[CANARY]["sampleInput"]
        assert gate is not None
        assert gate.passed, gate
        assert events == []

    async def test_a_canary_the_prober_cannot_trust_is_not_known_yet_and_said_once(
        self, server: ServerProcess, issued: ServerCert
    ) -> None:
        md = deployment()
        prober = RolloutProber(trust=Source(Authority("someone-else").pem))
        try:
            said = []
            for _ in range(3):
                measured, events = await prober.probe(
                    md, _rolling_out(), [pod(server, CANARY)], None, NOW
                )
                assert measured.gates[CANARY]["sampleInput"] is None, "not a failed check"
                said += events
        finally:
            await prober.aclose()
        assert [(e.type, e.reason) for e in said] == [("Warning", "TLSNotVerified")]
        assert "pre-traffic check sampleInput cannot trust a server" in said[0].message
        assert f"Secret {NAMESPACE}/{SECRET}" in said[0].message


def _rolling_out() -> ModelDeploymentStatus:
    return ModelDeploymentStatus(
        stable=RevisionRef(revision=STABLE, uri="file:///models/iris-7.onnx"),
        canary=CanaryStatus(revision=CANARY, uri="file:///models/iris-8.onnx"),
    )
