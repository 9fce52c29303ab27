"""The direct metrics provider against real `weir serve` processes on 127.0.0.1, with real
traffic: what the servers answered is what the analysis counts, windows open at the first
scrape, a restarted server counts from zero, and what cannot be scraped never becomes a guess."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ServerProcess, free_port, running_server
from weir_operator.core.spec import ModelDeployment, parse_model_deployment
from weir_operator.core.verdict import judge
from weir_operator.providers import (
    DirectProvider,
    PodTarget,
    ProviderError,
    Providers,
    RevisionTarget,
    analyse,
)

CANARY, STABLE = "c0ffee0000000001", "5ab1e00000000002"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
GOOD = {"inputs": [{"name": "indices", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}
FAILS = {"inputs": [{"name": "indices", "shape": [1], "datatype": "INT64", "data": [30]}]}  # 500
BAD_INPUT = {"inputs": []}  # 400: the client's fault, not the model's


def deployment(name: str) -> ModelDeployment:
    return parse_model_deployment(
        {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "tests"},
            "spec": {"model": {"uri": "file:///models/gather.onnx", "name": "gather"}},
        }
    )


def serve(model: Path, revision: str, *args: str) -> AbstractContextManager[ServerProcess]:
    env = {"WEIR_REVISION": revision, "WEIR_TRACK": ""}
    return running_server(model, "--name", "gather", "--no-access-log", *args, env=env)


@pytest.fixture(scope="module")
def canary_server(gather_model: Path) -> Iterator[ServerProcess]:
    # Two worker processes: the counters the provider reads are the server's sums.
    with serve(gather_model, CANARY, "--workers", "2") as server:
        yield server


@pytest.fixture(scope="module")
def stable_server(gather_model: Path) -> Iterator[ServerProcess]:
    with serve(gather_model, STABLE) as server:
        yield server


def target(name: str, server: ServerProcess) -> PodTarget:
    return PodTarget(name, "127.0.0.1", server.port)


async def send(server: ServerProcess, body: dict[str, object], times: int) -> list[float]:
    """`times` infer requests, one after the other; each one's seconds as the client saw it."""
    seconds = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for _ in range(times):
            started = time.perf_counter()
            await client.post("/v2/models/gather/infer", json=body)
            seconds.append(time.perf_counter() - started)
    return seconds


async def test_the_first_scrape_opens_the_window_and_the_next_counts_what_was_answered(
    canary_server: ServerProcess, stable_server: ServerProcess
) -> None:
    md = deployment("counted")
    canary = RevisionTarget(CANARY, (target("canary-0", canary_server),))
    stable = RevisionTarget(STABLE, (target("stable-0", stable_server),))
    providers = Providers()
    try:
        provider = providers.for_deployment(md)
        first = await analyse(provider, md, canary, stable, None, NOW)
        assert first.verdict == "Inconclusive"
        assert first.reason == "first scrape of 1 canary pod: their window starts now"

        latencies = await send(canary_server, GOOD, 30)
        latencies += await send(canary_server, FAILS, 3)
        latencies += await send(canary_server, BAD_INPUT, 2)
        await send(stable_server, GOOD, 40)

        windows = await provider.measure(md, canary, stable)
        got = windows[CANARY]
        assert (got.requests, got.errors, got.pods, got.new_pods, got.restarted_pods) == (
            35,
            3,
            1,
            0,
            0,
        )
        assert (windows[STABLE].requests, windows[STABLE].errors) == (40, 0)
        # The server's own latencies are shorter than the client's; the interpolated p99 lies
        # in the bucket of the true one, at most one bucket (9.6%) above it.
        assert got.p99_ms is not None
        assert 0 < got.p99_ms <= max(max(latencies) * 1000 * 1.1, 0.1)
        result = judge(md.spec.rollout.analysis, got, windows[STABLE], None, NOW)
        assert result.verdict == "Fail"
        assert result.reason.startswith("error rate 8.6% > 1.0%")
    finally:
        await providers.aclose()


async def test_a_good_canary_passes_against_stable(
    canary_server: ServerProcess, stable_server: ServerProcess
) -> None:
    md = deployment("good")
    canary = RevisionTarget(CANARY, (target("canary-0", canary_server),))
    stable = RevisionTarget(STABLE, (target("stable-0", stable_server),))
    providers = Providers()
    try:
        provider = providers.for_deployment(md)
        await provider.measure(md, canary, stable)
        await send(canary_server, GOOD, 25)
        await send(canary_server, BAD_INPUT, 5)  # 4xx are not errors
        await send(stable_server, GOOD, 25)
        result = await analyse(provider, md, canary, stable, None, NOW)
        assert result.verdict == "Pass", result.reason
        assert result.canary is not None
        assert (result.canary.requests, result.canary.error_rate) == (30, 0)
    finally:
        await providers.aclose()


async def test_a_restarted_server_counts_from_zero_and_fails_the_canary(
    gather_model: Path, stable_server: ServerProcess
) -> None:
    md = deployment("restarted")
    async with httpx.AsyncClient() as client:
        provider = DirectProvider(client)
        stable = RevisionTarget(STABLE, (target("stable-0", stable_server),))
        with serve(gather_model, CANARY) as server:
            canary = RevisionTarget(CANARY, (target("canary-0", server),))
            await provider.measure(md, canary, stable)
            await send(server, GOOD, 12)
            assert (await provider.measure(md, canary, stable))[CANARY].requests == 12
        # The same pod, its container restarted (here: a new process on another port).
        with serve(gather_model, CANARY) as server:
            canary = RevisionTarget(CANARY, (target("canary-0", server),))
            await send(server, GOOD, 5)
            windows = await provider.measure(md, canary, stable)
        got = windows[CANARY]
        assert (got.requests, got.restarted_pods) == (5, 1)
        result = judge(md.spec.rollout.analysis, got, windows[STABLE], None, NOW)
        assert (result.verdict, result.reason) == (
            "Fail",
            "1 canary pod restarted within the window",
        )


async def test_pods_that_are_gone_are_forgotten_and_start_afresh_if_seen_again(
    canary_server: ServerProcess, stable_server: ServerProcess
) -> None:
    md = deployment("forgetful")
    async with httpx.AsyncClient() as client:
        provider = DirectProvider(client)
        both = RevisionTarget(
            STABLE, (target("stable-0", stable_server), target("stable-1", canary_server))
        )
        canary = RevisionTarget(CANARY, ())
        # stable-1 is really the canary server: refused below; here only stable-0 is measured.
        one = RevisionTarget(STABLE, (target("stable-0", stable_server),))
        await provider.measure(md, canary, one)
        assert provider.remembered("tests", "forgetful") == {"stable-0"}
        await provider.measure(md, canary, both)  # stable-1 answers for another revision
        assert provider.remembered("tests", "forgetful") == {"stable-0"}
        windows = await provider.measure(md, canary, RevisionTarget(STABLE, ()))
        assert provider.remembered("tests", "forgetful") == frozenset()
        assert windows == {}
        again = await provider.measure(md, canary, one)
        assert (again[STABLE].pods, again[STABLE].new_pods) == (0, 1)
        provider.forget("tests", "forgetful")
        assert provider.remembered("tests", "forgetful") == frozenset()


async def test_an_unreachable_canary_pod_makes_the_window_a_provider_error(
    canary_server: ServerProcess, stable_server: ServerProcess
) -> None:
    md = deployment("unreachable")
    nobody = PodTarget("canary-1", "127.0.0.1", free_port())
    canary = RevisionTarget(CANARY, (target("canary-0", canary_server), nobody))
    stable = RevisionTarget(STABLE, (target("stable-0", stable_server),))
    async with httpx.AsyncClient() as client:
        provider = DirectProvider(client)
        with pytest.raises(ProviderError, match=r"cannot scrape pod canary-1 \(http://127"):
            await provider.measure(md, canary, stable)
        # The pods that answered are remembered all the same.
        assert provider.remembered("tests", "unreachable") == {"canary-0", "stable-0"}
        result = await analyse(provider, md, canary, stable, None, NOW)
        assert result.verdict == "Inconclusive"
        assert result.reason.startswith("no metrics: cannot scrape pod canary-1")
        # A pod problem still fails the canary.
        problem = "canary pod canary-1 restarted once"
        assert (await analyse(provider, md, canary, stable, problem, NOW)).verdict == "Fail"


async def test_an_unreachable_stable_pod_is_left_out_of_stables_window(
    canary_server: ServerProcess, stable_server: ServerProcess
) -> None:
    md = deployment("partial-stable")
    nobody = PodTarget("stable-1", "127.0.0.1", free_port())
    canary = RevisionTarget(CANARY, (target("canary-0", canary_server),))
    stable = RevisionTarget(STABLE, (target("stable-0", stable_server), nobody))
    async with httpx.AsyncClient() as client:
        provider = DirectProvider(client)
        await provider.measure(md, canary, stable)
        await send(stable_server, GOOD, 3)
        windows = await provider.measure(md, canary, stable)
        assert (windows[STABLE].requests, windows[STABLE].pods) == (3, 1)


async def test_a_pod_answering_for_another_revision_is_refused(
    canary_server: ServerProcess,
) -> None:
    # An address reused by another revision's pod: its numbers are not the canary's.
    md = deployment("reused")
    canary = RevisionTarget(STABLE, (target("canary-0", canary_server),))
    async with httpx.AsyncClient() as client:
        with pytest.raises(ProviderError, match=f"serves revision {CANARY}, not {STABLE}"):
            await DirectProvider(client).measure(md, canary, None)


async def test_something_that_is_not_a_weir_server_is_refused() -> None:
    md = deployment("stranger")

    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, text="# just some exporter\nup 1\n")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        canary = RevisionTarget(CANARY, (PodTarget("canary-0", "10.0.0.1"),))
        with pytest.raises(ProviderError, match="not a weir server"):
            await DirectProvider(client).measure(md, canary, None)
    assert asked == ["http://10.0.0.1:8080/metrics"]
