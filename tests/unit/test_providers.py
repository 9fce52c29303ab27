"""The pure parts of the metric providers: which pods are scraped and where, which provider a
ModelDeployment gets, and the PromQL the Prometheus provider sends."""

from __future__ import annotations

from typing import Any

import pytest

from weir_operator.core.spec import ModelDeployment, parse_model_deployment
from weir_operator.providers import (
    DirectProvider,
    PodTarget,
    PrometheusProvider,
    Providers,
    pod_target,
)
from weir_operator.providers.prometheus import promql_duration, queries_for


def deployment(analysis: dict[str, Any] | None = None, **model: str) -> ModelDeployment:
    return parse_model_deployment(
        {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml"},
            "spec": {
                "model": {"uri": "https://m.example.com/iris.onnx", **model},
                "rollout": {"analysis": analysis or {}},
            },
        }
    )


def pod(
    ip: str | None = "10.1.2.3",
    ready: str = "True",
    port: int | None = 8080,
    deleting: bool = False,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "iris-abc-x1"}
    if deleting:
        metadata["deletionTimestamp"] = "2026-03-01T12:00:00Z"
    ports = [{"name": "http", "containerPort": port}] if port else []
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": ready}]}
    if ip:
        status["podIP"] = ip
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": "server", "ports": ports}]},
        "status": status,
    }


class TestWhichPodsAreScraped:
    def test_a_ready_pod_at_its_ip_and_http_port(self) -> None:
        assert pod_target(pod()) == PodTarget("iris-abc-x1", "10.1.2.3", 8080)
        assert pod_target(pod(port=9000)) == PodTarget("iris-abc-x1", "10.1.2.3", 9000)

    def test_the_servers_port_when_the_pod_names_none(self) -> None:
        assert pod_target(pod(port=None)) == PodTarget("iris-abc-x1", "10.1.2.3", 8080)

    @pytest.mark.parametrize(
        "unready",
        [pod(ip=None), pod(ready="False"), pod(deleting=True)],
        ids=["no IP yet", "not ready", "being deleted"],
    )
    def test_not_a_pod_that_is_not_serving(self, unready: dict[str, Any]) -> None:
        assert pod_target(unready) is None

    def test_an_ipv6_address_is_bracketed(self) -> None:
        assert PodTarget("p", "fd00::5", 8080).address == "[fd00::5]:8080"
        assert PodTarget("p", "10.0.0.1", 8080).address == "10.0.0.1:8080"


async def test_each_deployment_gets_the_provider_its_spec_names() -> None:
    providers = Providers()
    try:
        assert isinstance(providers.for_deployment(deployment()), DirectProvider)
        prometheus = deployment(
            {"provider": {"prometheus": {"url": "http://p:9090", "scrapeInterval": "1s"}}}
        )
        assert isinstance(providers.for_deployment(prometheus), PrometheusProvider)
        # One direct provider for all: it is what remembers the previous scrapes.
        assert providers.for_deployment(deployment()) is providers.direct
    finally:
        await providers.aclose()


class TestPromQL:
    def test_the_default_queries_select_the_revision_by_namespace_model_and_revision(
        self,
    ) -> None:
        md = deployment(
            {"provider": {"prometheus": {"url": "http://p:9090", "scrapeInterval": "1s"}}}
        )
        selector = 'namespace="ml",model="iris",revision="abc123"'
        assert queries_for(md, "abc123") == {
            "requests": f"sum(increase(weir_inference_requests_total{{{selector}}}[10s]))",
            "errors": (
                f'sum(increase(weir_inference_requests_total{{{selector},code=~"5.."}}[10s]))'
            ),
            "p99": (
                "histogram_quantile(0.99, sum by (le) "
                f"(rate(weir_inference_request_duration_seconds_bucket{{{selector}}}[10s])))"
            ),
        }

    def test_the_served_model_name_is_used_when_the_spec_sets_one(self) -> None:
        md = deployment(
            {"provider": {"prometheus": {"url": "http://p:9090", "scrapeInterval": "1s"}}},
            name="flowers",
        )
        assert 'model="flowers"' in queries_for(md, "r")["requests"]

    def test_a_template_replaces_only_its_own_query_with_every_placeholder_filled(
        self,
    ) -> None:
        template = 'max(my_p99{ns="{{namespace}}",app="{{name}}",m="{{model}}",rev="{{revision}}"}[{{interval}}])'
        md = deployment(
            {
                "interval": "1m30s",
                "provider": {"prometheus": {"url": "http://p:9090", "queries": {"p99": template}}},
            }
        )
        queries = queries_for(md, "abc123")
        assert queries["p99"] == 'max(my_p99{ns="ml",app="iris",m="iris",rev="abc123"}[90s])'
        assert queries["requests"].endswith("[90s]))")
        assert "weir_inference_requests_total" in queries["requests"]

    @pytest.mark.parametrize(
        ("seconds", "text"), [(10, "10s"), (90, "90s"), (1.5, "1500ms"), (0.25, "250ms")]
    )
    def test_the_interval_is_a_promql_range(self, seconds: float, text: str) -> None:
        assert promql_duration(seconds) == text
