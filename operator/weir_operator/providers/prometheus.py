"""The `prometheus` metrics provider: PromQL over a Prometheus server's HTTP API
(`GET <url>/api/v1/query`), for clusters that already scrape the servers.

Three instant queries per revision (requests, 5xx answers, p99 in seconds), from templates that
`spec.rollout.analysis.provider.prometheus.queries` may replace one by one; with
`analysis.agreement`, five more for what the stable mirrored to the canary (SHADOW_QUERIES).
The placeholders are filled with label values that cannot hold a quote (a revision is hex,
names are DNS labels or model names), so a template cannot be broken out of. Prometheus keeps
the history, so nothing is remembered here; any failure (unreachable, HTTP error, PromQL
error, a result that is not one number) is a ProviderError: Inconclusive, never a guess.

It is also a drift source (`drift_window`): the increase of each weir_drift_* counter over the
window, per bin, and the reference gauges, for the stable revision (DRIFT_QUERIES, the series
of docs/monitoring.md section 2), turned into core.drift's WindowCounts."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any, Final

import httpx

from weir_operator.core import drift
from weir_operator.core.analysis import (
    PREDICTION_SAMPLE,
    SHADOW_SAMPLES,
    ShadowCounts,
    TrackWindow,
)
from weir_operator.core.drift import Sample, WindowCounts, window_from_samples
from weir_operator.core.spec import ModelDeployment, duration_seconds
from weir_operator.providers.base import QUERY_TIMEOUT, ProviderError, RevisionTarget

_SELECTOR: Final = 'namespace="{{namespace}}",model="{{model}}",revision="{{revision}}"'
DEFAULT_QUERIES: Final = {
    "requests": f"sum(increase(weir_inference_requests_total{{{_SELECTOR}}}[{{{{interval}}}}]))",
    "errors": (
        f'sum(increase(weir_inference_requests_total{{{_SELECTOR},code=~"5.."}}[{{{{interval}}}}]))'
    ),
    "p99": (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(weir_inference_request_duration_seconds_bucket{{{_SELECTOR}}}[{{{{interval}}}}])))"
    ),
}
"""PromQL templates by measurement. The series carry the server's own `model` and `revision`
labels; `namespace` is the label Prometheus' usual Kubernetes pod discovery adds."""

SHADOW_QUERIES: Final = {
    field: (
        f'sum(increase({metric}{{{_SELECTOR},canary_revision="{{{{canary}}}}"}}[{{{{interval}}}}]))'
    )
    for metric, field in SHADOW_SAMPLES.items()
}
"""With `analysis.agreement`, what the stable's servers mirrored to the canary in the window
(weir_server.shadow's counters, by canary revision), one query per counter."""

PREDICTIONS_QUERY: Final = (
    f"sum by (output, class) (increase({PREDICTION_SAMPLE}{{{_SELECTOR}}}[{{{{interval}}}}]))"
)
"""With `analysis.maxPredictionDrift`, the rows a revision predicted in the window, by output
and class (weir_server.monitor's counters)."""


# (series, grouped by) for each weir_drift_* series: counters as their increase over the window,
# the reference's gauges as they are now (every pod of a revision has the same reference, so
# the largest is taken; of the model match, the least).
_DRIFT_SERIES: Final = (
    (drift.ROWS, ()),
    (drift.FEATURE_ROWS, ("feature", "bin")),
    (drift.FEATURE_SHARE, ("feature", "bin")),
    (drift.PREDICTION_ROWS, ("output", "class")),
    (drift.PREDICTION_SHARE, ("output", "class")),
    (drift.CONFIDENCE_ROWS, ("output", "bin")),
    (drift.CONFIDENCE_SHARE, ("output", "bin")),
    (drift.CONFIDENCE_SUM, ("output",)),
    (drift.CONFIDENCE_MEAN, ("output",)),
    (drift.MODEL_MATCH, ()),
)
_DRIFT_COUNTERS: Final = {
    drift.ROWS,
    drift.FEATURE_ROWS,
    drift.PREDICTION_ROWS,
    drift.CONFIDENCE_ROWS,
    drift.CONFIDENCE_SUM,
}


def _drift_query(metric: str, by: tuple[str, ...]) -> str:
    grouping = f"by ({', '.join(by)}) " if by else ""
    if metric in _DRIFT_COUNTERS:
        return f"sum {grouping}(increase({metric}{{{_SELECTOR}}}[{{{{window}}}}]))"
    if metric == drift.MODEL_MATCH:  # 0 on any pod: some count against another model's
        return f"min({metric}{{{_SELECTOR}}})"
    return f"max {grouping}({metric}{{{_SELECTOR}}})"


DRIFT_QUERIES: Final = {metric: _drift_query(metric, by) for metric, by in _DRIFT_SERIES}
"""PromQL templates by weir_drift_* series: {{window}} is the drift window as a PromQL range,
the other placeholders are render_query's."""


def promql_duration(seconds: float) -> str:
    """A PromQL range: whole seconds as `10s`, anything finer in milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def render_query(
    template: str, md: ModelDeployment, revision: str, canary: str = "", window: float = 0.0
) -> str:
    """A template with its placeholders filled for one revision of a ModelDeployment."""
    values = {
        "window": promql_duration(window),
        "revision": revision,
        "canary": canary,
        "namespace": md.namespace,
        "name": md.name,
        "model": md.model_name,
        "interval": promql_duration(duration_seconds(md.spec.rollout.analysis.interval)),
    }
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", value)
    return template


def queries_for(md: ModelDeployment, revision: str) -> dict[str, str]:
    """The three PromQL queries (requests, errors, p99) for one revision."""
    provider = md.spec.rollout.analysis.provider.prometheus
    custom = provider.queries if provider is not None else None
    templates = {
        name: (getattr(custom, name, None) if custom is not None else None) or default
        for name, default in DEFAULT_QUERIES.items()
    }
    return {name: render_query(template, md, revision) for name, template in templates.items()}


class PrometheusProvider:
    """Asks the Prometheus server named in the ModelDeployment's spec."""

    def __init__(
        self, client: httpx.AsyncClient, *, timeout: httpx.Timeout = QUERY_TIMEOUT
    ) -> None:
        self._client = client
        self._timeout = timeout

    async def measure(
        self, md: ModelDeployment, canary: RevisionTarget, stable: RevisionTarget | None
    ) -> dict[str, TrackWindow]:
        provider = md.spec.rollout.analysis.provider.prometheus
        if provider is None:
            raise ProviderError("the ModelDeployment does not name a Prometheus server")
        revisions = [canary.revision] + ([stable.revision] if stable else [])
        windows = await asyncio.gather(
            *(self._window(provider.url, md, revision) for revision in revisions)
        )
        found = {window.revision: window for window in windows}
        if md.spec.rollout.analysis.max_prediction_drift is not None:
            counted = await asyncio.gather(
                *(self._predictions(provider.url, md, revision) for revision in revisions)
            )
            for revision, predictions in zip(revisions, counted, strict=True):
                found[revision] = replace(found[revision], predictions=predictions)
        if stable is not None and md.spec.rollout.analysis.agreement is not None:
            shadow = await self._shadow(provider.url, md, stable.revision, canary.revision)
            if shadow is not None:
                found[stable.revision] = replace(
                    found[stable.revision], shadow={canary.revision: shadow}
                )
        return found

    async def _predictions(
        self, url: str, md: ModelDeployment, revision: str
    ) -> dict[tuple[str, str], float]:
        """The rows the revision predicted in the window, by (output, class)."""
        query = render_query(PREDICTIONS_QUERY, md, revision)
        found: dict[tuple[str, str], float] = {}
        for labels, value in await self._vector(url, query):
            if math.isnan(value) or value < 0:
                raise ProviderError(f"predictions query for revision {revision} gave {value}")
            found[(labels.get("output", ""), labels.get("class", ""))] = value
        return found

    async def _shadow(
        self, url: str, md: ModelDeployment, stable: str, canary: str
    ) -> ShadowCounts | None:
        """What the stable mirrored to the canary in the window; None if nothing."""
        names = list(SHADOW_QUERIES)
        values = await asyncio.gather(
            *(self._value(url, render_query(SHADOW_QUERIES[n], md, stable, canary)) for n in names)
        )
        counts = {}
        for name, value in zip(names, values, strict=True):
            if value is not None and (math.isnan(value) or value < 0):
                raise ProviderError(f"shadow {name} query for revision {stable} gave {value}")
            counts[name] = value or 0.0
        shadow = ShadowCounts(**counts)
        return shadow if shadow.mirrored > 0 else None

    async def open_window(
        self, md: ModelDeployment, canary: RevisionTarget, stable: RevisionTarget | None
    ) -> None:
        """Nothing to do: each query covers the interval that ends when it is asked."""

    def forget(self, namespace: str, name: str) -> None:
        """Nothing is kept: Prometheus holds the history."""

    async def drift_window(
        self, md: ModelDeployment, stable: RevisionTarget, window_seconds: float
    ) -> WindowCounts | None:
        """What the stable revision's servers counted in the last `window_seconds`, as
        Prometheus has it: never None (Prometheus keeps the history, so every window has a
        start). A revision whose series Prometheus does not have gives an empty window
        (NoReference: its servers export none, or are not scraped)."""
        provider = md.spec.rollout.analysis.provider.prometheus
        if provider is None:
            raise ProviderError("the ModelDeployment does not name a Prometheus server")
        if window_seconds <= 0:
            raise ProviderError(f"a drift window of {window_seconds} s is no window")
        metrics = list(DRIFT_QUERIES)
        results = await asyncio.gather(
            *(
                self._vector(
                    provider.url,
                    render_query(DRIFT_QUERIES[m], md, stable.revision, window=window_seconds),
                )
                for m in metrics
            )
        )
        samples: list[Sample] = [
            (metric, labels, value)
            for metric, series in zip(metrics, results, strict=True)
            for labels, value in series
        ]
        return window_from_samples(samples)

    async def _window(self, url: str, md: ModelDeployment, revision: str) -> TrackWindow:
        queries = queries_for(md, revision)
        requests, errors, p99 = await asyncio.gather(
            self._value(url, queries["requests"]),
            self._value(url, queries["errors"]),
            self._value(url, queries["p99"]),
        )
        for name, value in (("requests", requests), ("errors", errors)):
            if value is not None and (math.isnan(value) or value < 0):
                raise ProviderError(f"{name} query for revision {revision} gave {value}")
        p99_ok = p99 is not None and math.isfinite(p99) and p99 >= 0
        return TrackWindow(
            revision=revision,
            requests=requests or 0.0,
            errors=errors or 0.0,
            p99_ms=p99 * 1000.0 if p99 is not None and p99_ok else None,
            seconds=duration_seconds(md.spec.rollout.analysis.interval),
        )

    async def _value(self, url: str, query: str) -> float | None:
        """The one number an instant query returns; None for an empty result."""
        return _one_number(await self._query(url, query), query)

    async def _vector(self, url: str, query: str) -> list[tuple[dict[str, str], float]]:
        """Every series an instant query returns, as (labels, value)."""
        return _series(await self._query(url, query), query)

    async def _query(self, url: str, query: str) -> Any:
        """The `data` of a successful instant query."""
        endpoint = url.rstrip("/") + "/api/v1/query"
        try:
            response = await self._client.get(
                endpoint, params={"query": query}, timeout=self._timeout
            )
        except httpx.HTTPError as error:
            raise ProviderError(
                f"Prometheus at {url} unreachable: {type(error).__name__} {error}".strip()
            ) from None
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderError(
                f"Prometheus at {url} answered HTTP {response.status_code} without JSON"
            )
        if response.status_code != 200 or body.get("status") != "success":
            detail = body.get("error") or body.get("status") or "no error given"
            raise ProviderError(
                f"Prometheus at {url} answered HTTP {response.status_code}: {detail} "
                f"(query: {query})"
            )
        return body.get("data")


def _series(data: Any, query: str) -> list[tuple[dict[str, str], float]]:
    if isinstance(data, dict) and data.get("resultType") == "vector":
        result: Any = data.get("result")
        try:
            return [
                ({str(k): str(v) for k, v in item["metric"].items()}, float(item["value"][1]))
                for item in result
            ]
        except (TypeError, KeyError, IndexError, ValueError, AttributeError):
            pass
    raise ProviderError(f"query returned no vector of samples (query: {query})")


def _one_number(data: Any, query: str) -> float | None:
    if not isinstance(data, dict):
        raise ProviderError(f"Prometheus answer without data (query: {query})")
    kind: Any = data.get("resultType")
    result: Any = data.get("result")
    try:
        if kind == "scalar":
            return float(result[1])
        if kind == "vector" and isinstance(result, list):
            if not result:
                return None
            if len(result) == 1:
                return float(result[0]["value"][1])
            raise ProviderError(
                f"query returned {len(result)} series, it must return one (query: {query})"
            )
    except (TypeError, KeyError, IndexError, ValueError):
        pass
    raise ProviderError(f"query returned a {kind} that is not one number (query: {query})")
