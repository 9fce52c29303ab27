"""The Prometheus metrics provider against a stand-in for Prometheus' HTTP API on 127.0.0.1:
the queries it sends are the templates filled in, the answers become track windows, and every
way Prometheus can fail becomes a provider error (Inconclusive), never a number."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.support.processes import free_port
from weir_operator.core.analysis import SHADOW_SAMPLES, ShadowCounts
from weir_operator.core.spec import Agreement, ModelDeployment, parse_model_deployment
from weir_operator.providers import (
    PrometheusProvider,
    ProviderError,
    Providers,
    RevisionTarget,
    analyse,
)
from weir_operator.providers.prometheus import queries_for

CANARY, STABLE = "c0ffee0000000001", "5ab1e00000000002"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Series:
    """What one revision served in the queried range, as Prometheus would compute it."""

    requests: float | None = 0.0  # None: no series at all (an empty vector)
    errors: float | None = 0.0
    p99_seconds: float | None = None  # None: NaN, as histogram_quantile without requests


@dataclass
class PrometheusStandIn:
    """`GET /api/v1/query` answered from crafted series per revision: the query's kind (5xx
    filter -> errors, histogram_quantile -> p99, else requests) and its `revision="…"` pick the
    value. Every query is recorded; `reply` can replace the answer (errors, odd results)."""

    series: dict[str, Series] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    reply: Callable[[str], web.Response] | None = None
    delay: float = 0.0

    def value(self, query: str) -> float | None:
        match = re.search(r'revision="([^"]*)"', query)
        series = self.series.get(match.group(1) if match else "", Series(None, None, None))
        if "histogram_quantile" in query:
            return float("nan") if series.p99_seconds is None else series.p99_seconds
        return series.errors if 'code=~"5.."' in query else series.requests

    async def handle(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        self.queries.append(query)
        self.paths.append(request.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.reply is not None:
            return self.reply(query)
        value = self.value(query)
        result = [] if value is None else [{"metric": {}, "value": [1772366400.0, repr(value)]}]
        return vector(result)


def vector(result: list[dict[str, Any]], kind: str = "vector") -> web.Response:
    return web.json_response({"status": "success", "data": {"resultType": kind, "result": result}})


@pytest.fixture
async def prometheus() -> AsyncIterator[tuple[PrometheusStandIn, str]]:
    stand_in = PrometheusStandIn()
    app = web.Application()
    app.router.add_get("/api/v1/query", stand_in.handle)
    app.router.add_get("/prefix/api/v1/query", stand_in.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield stand_in, f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def deployment(url: str, queries: dict[str, str] | None = None) -> ModelDeployment:
    prometheus: dict[str, Any] = {"url": url, "scrapeInterval": "5s"}
    if queries:
        prometheus["queries"] = queries
    return parse_model_deployment(
        {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {
                "model": {"uri": "https://m.example.com/iris.onnx"},
                "rollout": {
                    "analysis": {"interval": "10s", "provider": {"prometheus": prometheus}}
                },
            },
        }
    )


CANARY_TARGET = RevisionTarget(CANARY)
STABLE_TARGET = RevisionTarget(STABLE)


async def measure(md: ModelDeployment, query_seconds: float = 5.0) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        provider = PrometheusProvider(client, timeout=httpx.Timeout(query_seconds))
        return await provider.measure(md, CANARY_TARGET, STABLE_TARGET)


async def test_it_sends_the_filled_templates_and_reads_the_answers(
    prometheus: tuple[PrometheusStandIn, str],
) -> None:
    stand_in, url = prometheus
    stand_in.series = {
        CANARY: Series(requests=200, errors=8, p99_seconds=0.8124),
        STABLE: Series(requests=1800, errors=2, p99_seconds=0.1),
    }
    md = deployment(url)
    windows = await measure(md)
    expected = [*queries_for(md, CANARY).values(), *queries_for(md, STABLE).values()]
    assert sorted(stand_in.queries) == sorted(expected)
    assert len(stand_in.queries) == 6
    canary, stable = windows[CANARY], windows[STABLE]
    assert (canary.requests, canary.errors, canary.p99_ms) == (200, 8, pytest.approx(812.4))
    assert (stable.requests, stable.errors, stable.p99_ms) == (1800, 2, pytest.approx(100))
    assert canary.pods is None  # Prometheus sums the pods: it does not say how many

    providers = Providers()
    try:
        result = await analyse(
            providers.for_deployment(md), md, CANARY_TARGET, STABLE_TARGET, None, NOW
        )
    finally:
        await providers.aclose()
    assert result.verdict == "Fail"
    assert result.reason.startswith("error rate 4.0% > 1.0%; canary p99 812 ms > 500 ms")


async def test_custom_templates_are_sent_instead_of_the_defaults(
    prometheus: tuple[PrometheusStandIn, str],
) -> None:
    stand_in, url = prometheus
    stand_in.series = {CANARY: Series(requests=50, errors=0, p99_seconds=0.02)}
    custom = 'sum(my_requests{rev="{{revision}}",revision="{{revision}}"}[{{interval}}])'
    md = deployment(url, {"requests": custom})
    windows = await measure(md)
    requests_queries = [q for q in stand_in.queries if "histogram" not in q and "5.." not in q]
    assert sorted(requests_queries) == sorted(
        f'sum(my_requests{{rev="{revision}",revision="{revision}"}}[10s])'
        for revision in (CANARY, STABLE)
    )
    assert windows[CANARY].requests == 50


async def test_a_base_url_with_a_path_keeps_it(prometheus: tuple[PrometheusStandIn, str]) -> None:
    stand_in, url = prometheus
    await measure(deployment(url + "/prefix/"))
    assert set(stand_in.paths) == {"/prefix/api/v1/query"}


async def test_no_series_is_no_request_and_a_nan_p99_is_no_latency(
    prometheus: tuple[PrometheusStandIn, str],
) -> None:
    stand_in, url = prometheus
    stand_in.series = {CANARY: Series(requests=None, errors=None, p99_seconds=None)}
    md = deployment(url)
    windows = await measure(md)
    assert (windows[CANARY].requests, windows[CANARY].errors, windows[CANARY].p99_ms) == (
        0,
        0,
        None,
    )
    async with httpx.AsyncClient() as client:
        result = await analyse(
            PrometheusProvider(client), md, CANARY_TARGET, STABLE_TARGET, None, NOW
        )
    assert result.verdict == "Inconclusive"
    assert result.reason == "canary served 0 requests, fewer than minRequests 20"


def error_reply(status: int, body: dict[str, Any] | str) -> Callable[[str], web.Response]:
    def reply(query: str) -> web.Response:
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    return reply


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        (
            error_reply(
                400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}
            ),
            r"answered HTTP 400: parse error at char 5 \(query: ",
        ),
        (
            error_reply(
                422, {"status": "error", "errorType": "execution", "error": "too many samples"}
            ),
            "answered HTTP 422: too many samples",
        ),
        (error_reply(503, "Service Unavailable"), "answered HTTP 503 without JSON"),
        (error_reply(200, {"status": "error"}), "answered HTTP 200: error"),
        (
            lambda q: vector(
                [
                    {"metric": {"pod": "a"}, "value": [0, "1"]},
                    {"metric": {"pod": "b"}, "value": [0, "2"]},
                ]
            ),
            "query returned 2 series, it must return one",
        ),
        (
            lambda q: vector([{"metric": {}, "values": [[0, "1"]]}], "matrix"),
            "a matrix that is not one number",
        ),
        (lambda q: vector([{"metric": {}, "value": [0, "NaN"]}]), "gave nan"),
        (lambda q: vector([{"metric": {}, "value": [0, "-3"]}]), "gave -3"),
    ],
    ids=[
        "bad query",
        "execution error",
        "not JSON",
        "status error",
        "two series",
        "matrix",
        "NaN count",
        "negative count",
    ],
)
async def test_whatever_prometheus_gets_wrong_is_a_provider_error(
    prometheus: tuple[PrometheusStandIn, str],
    reply: Callable[[str], web.Response],
    complaint: str,
) -> None:
    stand_in, url = prometheus
    stand_in.reply = reply
    with pytest.raises(ProviderError, match=complaint):
        await measure(deployment(url))


async def test_a_scalar_answer_is_one_number(prometheus: tuple[PrometheusStandIn, str]) -> None:
    stand_in, url = prometheus
    stand_in.reply = lambda q: web.json_response(
        {"status": "success", "data": {"resultType": "scalar", "result": [0, "42"]}}
    )
    assert (await measure(deployment(url)))[CANARY].requests == 42


async def test_a_slow_prometheus_times_out_into_a_provider_error(
    prometheus: tuple[PrometheusStandIn, str],
) -> None:
    stand_in, url = prometheus
    stand_in.delay = 1.0
    with pytest.raises(ProviderError, match="unreachable: ReadTimeout"):
        await measure(deployment(url), query_seconds=0.2)


async def test_an_unreachable_prometheus_is_inconclusive() -> None:
    md = deployment(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    async with httpx.AsyncClient() as client:
        result = await analyse(
            PrometheusProvider(client), md, CANARY_TARGET, STABLE_TARGET, None, NOW
        )
    assert result.verdict == "Inconclusive"
    assert result.reason.startswith("no metrics: Prometheus at http://127.0.0.1:")
    assert "unreachable: ConnectError" in result.reason


class TestShadowCounts:
    """With analysis.agreement, what the stable's servers mirrored to the canary."""

    @staticmethod
    def agreeing(url: str) -> ModelDeployment:
        md = deployment(url)
        analysis = md.spec.rollout.analysis.model_copy(
            update={"agreement": Agreement(minSamples=10)}
        )
        rollout = md.spec.rollout.model_copy(update={"analysis": analysis})
        return md.model_copy(update={"spec": md.spec.model_copy(update={"rollout": rollout})})

    async def test_are_read_for_the_stable_by_canary_revision(
        self, prometheus: tuple[PrometheusStandIn, str]
    ) -> None:
        stand_in, url = prometheus
        shadow = {"mirrored": 120.0, "dropped": 2.0, "canary_errors": 1.0,
                  "compared": 119.0, "agreed": 50.0}  # fmt: skip
        metric_of = {v: k for k, v in SHADOW_SAMPLES.items()}

        def reply(query: str) -> web.Response:
            for name, value in shadow.items():
                if metric_of[name] in query:
                    assert f'canary_revision="{CANARY}"' in query
                    assert f'revision="{STABLE}"' in query
                    return vector([{"metric": {}, "value": [1.0, repr(value)]}])
            value = stand_in.value(query)
            return vector([] if value is None else [{"metric": {}, "value": [1.0, repr(value)]}])

        stand_in.series = {CANARY: Series(requests=120), STABLE: Series(requests=900)}
        stand_in.reply = reply
        windows = await measure(self.agreeing(url))
        assert windows[STABLE].shadow[CANARY] == ShadowCounts(**shadow)
        assert windows[CANARY].shadow == {}
        assert len(stand_in.queries) == 6 + 5

    async def test_nothing_mirrored_is_no_shadow_window(
        self, prometheus: tuple[PrometheusStandIn, str]
    ) -> None:
        stand_in, url = prometheus
        stand_in.series = {CANARY: Series(requests=120), STABLE: Series(requests=900)}

        def reply(query: str) -> web.Response:
            value = None if "weir_shadow_" in query else stand_in.value(query)
            return vector([] if value is None else [{"metric": {}, "value": [1.0, repr(value)]}])

        stand_in.reply = reply
        windows = await measure(self.agreeing(url))
        assert windows[STABLE].shadow == {}, "empty results: nothing was mirrored"

    async def test_without_agreement_nothing_more_is_asked(
        self, prometheus: tuple[PrometheusStandIn, str]
    ) -> None:
        stand_in, url = prometheus
        await measure(deployment(url))
        assert not any("weir_shadow_" in q for q in stand_in.queries)
