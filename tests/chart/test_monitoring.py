"""The Grafana dashboard (charts/weir/dashboards/weir.json), the PrometheusRule and the PodMonitor.

The metric names the dashboard and the alerts may use are read from the running code, never
from a list kept here: a real `weir serve` is started on 127.0.0.1 and its /metrics scraped,
and the operator's and the local router's registries are read. Every query (panel targets,
annotations, template variables, alert expressions) is parsed as PromQL with a real parser
(promql-parser); each selector must name an exported series with labels it has, and each
phase/outcome/verdict value must be one the operator writes."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, get_args

import httpx
import kubernetes_validate
import promql_parser
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from tests.chart.test_chart import KUBE_VERSION, NAMESPACE, RELEASE, render
from tests.chart.test_chart import template_args as chart_template_args
from tests.support.helm import helm
from tests.support.processes import running_server
from weir_operator.cluster.metrics import OperatorMetrics
from weir_operator.core.render import SERVER_PORT, render_deployment
from weir_operator.core.spec import parse_model_deployment
from weir_operator.core.status import Outcome, Phase, Verdict
from weir_operator.local.proxy import RouterMetrics
from weir_server import sample_models

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "weir"
DASHBOARD_FILE = CHART / "dashboards" / "weir.json"
ALL_ON = (
    "dashboards.enabled=true",
    "prometheusRule.enabled=true",
    "metrics.podMonitor.enabled=true",
    "metrics.serviceMonitor.enabled=true",
    "metrics.serviceMonitor.honorLabels=true",
)
ALERTS = (  # in the order the chart's notes list them
    "WeirRollbackHappened",
    "WeirRolloutStuck",
    "WeirHighErrorRate",
    "WeirInputDrift",
    "WeirPredictionDrift",
    "WeirConfidenceDrop",
    "WeirOperatorDown",
    "WeirReconcileErrors",
)
# What the PrometheusRule records (the drift scores), which the alerts and the dashboard read.
RECORDED = {
    "weir:drift_rows:increase",
    "weir:drift_feature_psi",
    "weir:drift_prediction_psi",
    "weir:drift_confidence_psi",
    "weir:drift_confidence_mean",
}
MONITORING_DOC = ROOT / "docs" / "monitoring.md"
PANEL_TYPES = {"timeseries", "stat", "table"}
GRID_COLUMNS = 24

# Labels Prometheus adds to every series of a scraped target (prometheus-operator's Service and
# Pod monitors): the server's `namespace` comes from here, not from the server.
TARGET_LABELS = frozenset(
    {"namespace", "pod", "container", "instance", "job", "service", "endpoint"}
)
# Label values the operator writes, from its own types.
LABEL_VALUES: dict[str, frozenset[str]] = {
    "phase": frozenset(get_args(Phase)),
    "outcome": frozenset(get_args(Outcome)),
    "verdict": frozenset(get_args(Verdict)),
}
# Grafana's macros and variables, replaced by what Grafana would send to Prometheus.
GRAFANA_SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$namespace": ".*",
    "$model": ".*",
}

Series = dict[str, frozenset[str]]  # series name -> its label names


# --- what Weir exports --------------------------------------------------------------------------


def series_of(family: str, kind: str) -> list[str]:
    """The series names Prometheus stores for one metric family of the given type."""
    return {
        "counter": [f"{family}_total"],
        "gauge": [family],
        "histogram": [f"{family}_bucket", f"{family}_sum", f"{family}_count"],
        "summary": [family, f"{family}_sum", f"{family}_count"],
        "info": [f"{family}_info"],
    }.get(kind, [family])


def registry_series(registry: CollectorRegistry, owner: object) -> Series:
    """Series of every collector in `registry`, with the label names of the metric objects that
    `owner` (OperatorMetrics, RouterMetrics) holds."""
    label_names = {
        metric.describe()[0].name: frozenset(metric._labelnames)
        for metric in vars(owner).values()
        if isinstance(metric, MetricWrapperBase)
    }
    series: dict[str, frozenset[str]] = {}
    for family in registry.collect():
        labels = label_names[family.name]
        for name in series_of(family.name, family.type):
            series[name] = labels | {"le"} if name.endswith("_bucket") else labels
    return series


@pytest.fixture(scope="module")
def server_series(iris_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Series:
    """A real `weir serve` that monitors against a reference (its weir_drift_* series too),
    scraped after answering a good and a bad request."""
    built = sample_models.build_iris_reference(tmp_path_factory.mktemp("reference"), iris_model)
    env = {"WEIR_REVISION": "0123456789abcdef", "WEIR_TRACK": "canary"}
    args = ("--name", "iris", "--version", "1", "--reference", str(built["iris.reference"]))
    with running_server(iris_model, *args, env=env) as server:
        infer = f"{server.url}/v2/models/iris/infer"
        row = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
        assert httpx.post(infer, json={"inputs": [row]}).status_code == 200
        assert httpx.post(infer, json={"inputs": []}).status_code == 400
        text = httpx.get(f"{server.url}/metrics").text
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("weir_"):
            continue
        # Every family is exposed as its type says (so the derivation used for the operator's
        # registry, which has no samples before its first reconcile, holds for real scrapes).
        sample_names = {s.name for s in family.samples}
        assert sample_names == set(series_of(family.name, family.type)), family.name
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    assert "weir_inference_requests_total" in series, sorted(series)
    return {name: frozenset(labels) for name, labels in series.items()}


@pytest.fixture(scope="module")
def operator_series() -> Series:
    metrics = OperatorMetrics()
    return registry_series(metrics.registry, metrics)


@pytest.fixture(scope="module")
def exported(server_series: Series, operator_series: Series) -> Series:
    router = RouterMetrics()
    everything: dict[str, frozenset[str]] = {}
    for source, extra in (
        (server_series, TARGET_LABELS),  # servers are scraped as pods
        (operator_series, TARGET_LABELS),  # the operator through its Service
        (registry_series(router.registry, router), TARGET_LABELS),
        ({"up": frozenset()}, TARGET_LABELS),  # Prometheus' own, per scraped target
    ):
        for name, labels in source.items():
            everything[name] = labels | extra
    return everything | recorded_series()


def test_exported_series_are_read_from_the_code(
    server_series: Series, operator_series: Series
) -> None:
    """The sources above find what the issue's dashboard needs (so the checks below bite)."""
    assert {
        "weir_inference_requests_total",
        "weir_inference_request_duration_seconds_bucket",
        "weir_inference_request_duration_seconds_count",
    } <= server_series.keys()
    assert {"model", "version", "revision", "track", "code"} <= server_series[
        "weir_inference_requests_total"
    ]
    assert {
        "weir_rollout_phase",
        "weir_rollout_canary_weight",
        "weir_rollouts_total",
        "weir_rollout_analysis_total",
    } <= operator_series.keys()
    assert operator_series["weir_rollout_phase"] == {"namespace", "name", "phase"}
    assert {
        "weir_drift_rows_total",
        "weir_drift_feature_rows_total",
        "weir_drift_feature_reference_share",
        "weir_drift_prediction_rows_total",
        "weir_drift_confidence_reference_mean",
    } <= server_series.keys()
    assert {"feature", "bin", "revision"} <= server_series["weir_drift_feature_rows_total"]


# --- PromQL -------------------------------------------------------------------------------------


def grafana_to_promql(expr: str) -> str:
    for macro, value in sorted(GRAFANA_SUBSTITUTIONS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(macro, value)
    assert "$" not in re.sub(r'"[^"]*"', "", expr), f"unknown Grafana variable in {expr!r}"
    return expr


def _alternatives(matcher: Any) -> list[str]:
    if matcher.op == promql_parser.MatchOp.Equal:
        return [matcher.value]
    if matcher.op == promql_parser.MatchOp.Re and re.fullmatch(r"[A-Za-z|]+", matcher.value):
        return matcher.value.split("|")
    return []


def query_problems(expr: str, exported: Series) -> list[str]:
    """What is wrong with one PromQL query against the series Weir exports ([] if nothing)."""
    try:
        ast = promql_parser.parse(expr)
    except ValueError as e:
        return [f"does not parse: {e}"]
    problems: list[str] = []
    selectors: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(node)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            inner: list[str] = []
            promql_parser.walk(
                node.expr,
                lambda n: (
                    inner.append(n.name) if isinstance(n, promql_parser.VectorSelector) else None
                ),
            )
            available = frozenset().union(*(exported.get(name, frozenset()) for name in inner))
            for label in node.modifier.labels:
                if label not in available:
                    problems.append(f"`{node.op}` groups by {label!r}, which {inner} lack")

    promql_parser.walk(ast, visit)
    if not selectors:
        problems.append("names no metric")
    for selector in selectors:
        name = selector.name
        if name not in exported:
            problems.append(f"{name!r} is not a series Weir exports")
            continue
        for matcher in selector.matchers.matchers:
            if matcher.name not in exported[name]:
                problems.append(f"{name} has no label {matcher.name!r}")
            allowed = LABEL_VALUES.get(matcher.name)
            for value in _alternatives(matcher) if allowed else []:
                if value not in allowed:
                    problems.append(f"{name}{{{matcher.name}}}: Weir never writes {value!r}")
    return problems


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(weir_inference_request_total[1m])", "not a series Weir exports"),
        ("weir_inference_request_duration_seconds", "not a series Weir exports"),
        ('weir_rollouts_total{result="RolledBack"}', "has no label 'result'"),
        ('weir_rollouts_total{outcome="Rollback"}', "never writes 'Rollback'"),
        ('weir_rollout_phase{phase=~"Progressing|Stuck"}', "never writes 'Stuck'"),
        ("sum by (pipeline) (weir_rollout_canary_weight)", "groups by 'pipeline'"),
        ("sum(rate(weir_inference_requests_total[1m]", "does not parse"),
        ("vector(1)", "names no metric"),
    ],
)
def test_the_query_check_catches_mistakes(expr: str, problem: str, exported: Series) -> None:
    found = query_problems(expr, exported)
    assert any(problem in p for p in found), found


# --- the dashboard ------------------------------------------------------------------------------


@cache
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return data


def panel_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every query in the dashboard."""
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"]
    for annotation in dashboard()["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]


def variable_queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL selector) of each query variable: label_values(SELECTOR, LABEL)."""
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = (
            variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        )
        match = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_]\w*)\)", query)
        assert match, f"variable {variable['name']}: {query!r} is not label_values(SELECTOR, LABEL)"
        selector, label = match.groups()
        yield f"variable {variable['name']}", selector
        yield f"variable {variable['name']} label", f"sum by ({label}) ({selector})"


def test_dashboard_has_grafanas_shape() -> None:
    board = dashboard()
    assert board["title"] == "Weir"
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"])
    assert 36 <= board["schemaVersion"] <= 41
    assert isinstance(board["version"], int)
    assert board["time"] == {"from": "now-1h", "to": "now"}
    panels = board["panels"]
    assert len(panels) >= 8
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        where = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel["type"] in PANEL_TYPES, where
        assert panel["title"], where
        assert panel["description"], where
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        grid = panel["gridPos"]
        assert set(grid) == {"x", "y", "w", "h"}, where
        assert all(isinstance(v, int) and v >= 0 for v in grid.values()), where
        assert min(grid["w"], grid["h"]) > 0, where
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, where
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{where} overlaps another panel"
        cells |= area
        assert panel["targets"], where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target["datasource"] == panel["datasource"], where
        assert "defaults" in panel["fieldConfig"], where


def test_dashboard_variables_are_defined_and_used() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace", "model"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "model"):
        assert variables[name]["multi"], name
        assert variables[name]["includeAll"], name
        assert variables[name]["allValue"] == ".*", name
    used = {
        match
        for _, expr in [*panel_queries(), *variable_queries()]
        for match in re.findall(r"\$(\w+)", expr)
    }
    assert used - {"__rate_interval", "__range", "__interval"} <= set(variables)
    assert {"namespace", "model"} <= used


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    """Traffic by track/revision, p50/p99 latency from the histogram, 5xx share, canary weight,
    rollout phase and rollback history."""
    by_title = {
        p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard()["panels"]
    }
    text = "\n".join(f"{title}: {exprs}" for title, exprs in by_title.items())

    def panel_with(*needles: str) -> str:
        found = [t for t, e in by_title.items() if all(n in e for n in needles)]
        assert found, f"no panel has {needles}:\n{text}"
        return found[0]

    panel_with("rate(weir_inference_requests_total", "revision", "track")
    for quantile in ("0.5", "0.99"):
        panel_with(
            f"histogram_quantile({quantile},", "weir_inference_request_duration_seconds_bucket"
        )
    panel_with('code=~"5.."', "weir_inference_requests_total")
    panel_with("weir_rollout_canary_weight")
    panel_with("weir_rollout_phase", "phase")
    panel_with("weir_rollouts_total", "outcome")
    panel_with('weir_rollouts_total{namespace=~"$namespace", name=~"$model", outcome="RolledBack"}')
    # Model monitoring: drift scores over time per feature, prediction shares, confidence.
    panel_with("weir:drift_feature_psi")  # by feature: the recorded series keeps the label
    panel_with("weir:drift_prediction_psi")
    panel_with("rate(weir_drift_prediction_rows_total", "weir_drift_prediction_reference_share")
    panel_with("weir:drift_confidence_mean", "weir_drift_confidence_reference_mean")


def test_server_panels_find_their_modeldeployment_through_revision_info() -> None:
    """The `model` variable holds ModelDeployment names; a server's `model` label is the served
    model name (spec.model.name, which may differ), so server series are joined to their
    ModelDeployment by revision through the operator's weir_rollout_revision_info."""
    join = (
        "on (namespace, model, revision) group_left (name{extra}) max by (namespace, model, "
        'revision, name{extra}) (weir_rollout_revision_info{{namespace=~"$namespace", '
        'name=~"$model"}})'
    )
    for where, expr in panel_queries():
        if 'model=~"$model"' in expr:
            raise AssertionError(f"{where} matches ModelDeployment names against model: {expr}")
        server_series = re.findall(r"weir_(?:inference|drift)_\w+|weir:drift_\w+", expr)
        if server_series:
            joins = expr.count(join.format(extra="")) + expr.count(join.format(extra=", track"))
            selectors = len(
                re.findall(r"(?:weir_(?:inference|drift)_\w+|weir:drift_\w+)[{\[]", expr)
            )
            assert joins == selectors, f"{where}: {joins} joins for {selectors} server selectors"


def test_every_dashboard_query_names_metrics_weir_exports(exported: Series) -> None:
    problems = [
        f"{where}: {problem}\n    {expr}"
        for where, expr in [*panel_queries(), *variable_queries()]
        for problem in query_problems(grafana_to_promql(expr), exported)
    ]
    assert not problems, "\n".join(problems)


# --- the chart: ConfigMap, PrometheusRule, PodMonitor -------------------------------------------


def monitoring_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        o
        for o in objects
        if o["kind"] in {"PrometheusRule", "PodMonitor"}
        or (o["kind"] == "ConfigMap" and "weir.json" in o.get("data", {}))
    ]


def test_neither_dashboard_nor_rule_by_default() -> None:
    assert monitoring_objects(render()) == []
    for sets in (("dashboards.enabled=true",), ("prometheusRule.enabled=true",)):
        kinds = sorted(o["kind"] for o in monitoring_objects(render(None, *sets)))
        assert kinds == (["ConfigMap"] if "dashboards" in sets[0] else ["PrometheusRule"])


def test_helm_lint_strict_with_everything_on() -> None:
    args: list[str | Path] = ["lint", "--strict", CHART, "--namespace", NAMESPACE]
    for value in ALL_ON:
        args += ["--set", value]
    proc = helm(*args, "--kube-version", KUBE_VERSION, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout


def test_dashboard_configmap_carries_the_dashboard() -> None:
    [config_map] = [o for o in render(None, *ALL_ON) if o["kind"] == "ConfigMap"]
    metadata = config_map["metadata"]
    assert metadata["name"] == f"{RELEASE}-dashboards"
    assert metadata["namespace"] == NAMESPACE
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert list(config_map["data"]) == ["weir.json"]
    assert json.loads(config_map["data"]["weir.json"]) == dashboard()
    kubernetes_validate.validate(config_map, KUBE_VERSION, strict=True)

    [moved] = [
        o
        for o in render(
            None,
            "dashboards.enabled=true",
            "dashboards.namespace=monitoring",
            "dashboards.annotations.grafana_folder=Weir",
            "dashboards.labels.grafana_dashboard=weir",
        )
        if o["kind"] == "ConfigMap"
    ]
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["annotations"] == {"grafana_folder": "Weir"}
    assert moved["metadata"]["labels"]["grafana_dashboard"] == "weir"


@cache
def prometheus_rule(*sets: str) -> dict[str, Any]:
    [rule] = [
        o
        for o in render(None, "prometheusRule.enabled=true", *sets)
        if o["kind"] == "PrometheusRule"
    ]
    return rule


def rules_of(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The alerting rules by alert name."""
    return {
        r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r
    }


def records_of(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The recording rules by the series they record."""
    return {
        r["record"]: r for group in rule["spec"]["groups"] for r in group["rules"] if "record" in r
    }


def recorded_series() -> Series:
    """The series the PrometheusRule records, with the labels each keeps (its `by`)."""
    found: dict[str, frozenset[str]] = {}
    for name, item in records_of(prometheus_rule()).items():
        labels = output_labels(promql_parser.parse(item["expr"]))
        assert labels is not None, f"{name}: the result's labels are not fixed by `by (...)`"
        found[name] = labels
    return found


DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")


def test_prometheus_rule_is_structurally_valid() -> None:
    rule = prometheus_rule()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == NAMESPACE
    assert rule["metadata"]["labels"]["app.kubernetes.io/part-of"] == "weir"
    assert set(rule["spec"]) == {"groups"}
    groups = rule["spec"]["groups"]
    assert groups
    assert len({g["name"] for g in groups}) == len(groups)
    alerts = []
    records = []
    for group in groups:
        assert set(group) <= {"name", "interval", "rules", "limit", "partial_response_strategy"}
        assert group["name"], group
        assert group["rules"], group
        for item in group["rules"]:
            if "record" in item:
                assert set(item) == {"record", "expr"}, item
                assert re.fullmatch(r"weir:[a-z_]+(:[a-z_]+)?", item["record"]), item["record"]
                records.append(item["record"])
                continue
            assert set(item) == {"alert", "expr", "for", "labels", "annotations"}, item
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", item["alert"])
            assert DURATION.fullmatch(item["for"]), item["for"]
            assert item["labels"]["severity"] in {"warning", "critical"}
            assert all(isinstance(v, str) for v in item["labels"].values())
            assert set(item["annotations"]) == {"summary", "description", "runbook_url"}
            alerts.append(item["alert"])
    assert sorted(alerts) == sorted(ALERTS)
    assert sorted(records) == sorted(RECORDED)


def output_labels(node: Any, recorded: Series | None = None) -> frozenset[str] | None:
    """The labels every series of an expression's result has, when the expression fixes them
    (aggregations `by`, or a recorded series: `recorded` has their labels); None when it keeps
    its input's labels unknown."""
    if isinstance(node, promql_parser.VectorSelector) and recorded and node.name in recorded:
        return recorded[node.name]
    if isinstance(node, promql_parser.AggregateExpr):
        modifier = node.modifier
        if modifier is not None and modifier.type == promql_parser.AggModifierType.By:
            return frozenset(modifier.labels)
        return None
    if isinstance(node, promql_parser.ParenExpr):
        return output_labels(node.expr, recorded)
    if isinstance(node, promql_parser.BinaryExpr):
        left, right = output_labels(node.lhs, recorded), output_labels(node.rhs, recorded)
        if isinstance(node.rhs, promql_parser.NumberLiteral):
            return left
        if str(node.op).strip() == "or":
            return left & right if left is not None and right is not None else None
        return left
    return None


def test_alert_expressions_name_metrics_weir_exports(exported: Series) -> None:
    problems = []
    for name, item in records_of(prometheus_rule()).items():
        problems += [
            f"{name}: {p}\n    {item['expr']}" for p in query_problems(item["expr"], exported)
        ]
    for name, item in rules_of(prometheus_rule()).items():
        problems += [
            f"{name}: {p}\n    {item['expr']}" for p in query_problems(item["expr"], exported)
        ]
        # Every $labels.X the annotations print is a label of the alert's series.
        labels = output_labels(promql_parser.parse(item["expr"]), recorded_series())
        assert labels is not None, f"{name}: the result's labels are not fixed by `by (...)`"
        for text in item["annotations"].values():
            for label in re.findall(r"\{\{\s*\$labels\.(\w+)\s*\}\}", text):
                if label not in labels:
                    problems.append(
                        f"{name}: annotation uses $labels.{label}, not in {sorted(labels)}"
                    )
    assert not problems, "\n".join(problems)


def test_alerts_follow_the_values() -> None:
    rules = rules_of(
        prometheus_rule(
            "prometheusRule.rolloutStuckFor=45m",
            "prometheusRule.errorRateThreshold=0.02",
            "prometheusRule.errorRateWindow=10m",
            "prometheusRule.errorRateFor=2m",
            "prometheusRule.rollbackWindow=1h",
            "prometheusRule.alertLabels.team=ml",
            "prometheusRule.labels.release=kube-prometheus-stack",
        )
    )
    assert rules["WeirRolloutStuck"]["for"] == "45m"
    assert 'phase=~"Progressing|Paused"' in rules["WeirRolloutStuck"]["expr"]
    assert "45m" in rules["WeirRolloutStuck"]["annotations"]["summary"]
    high = rules["WeirHighErrorRate"]
    assert high["for"] == "2m"
    assert ") > 0.02" in high["expr"]
    assert "[10m]" in high["expr"]
    assert high["labels"] == {"severity": "critical", "team": "ml"}
    rollback = rules["WeirRollbackHappened"]
    assert "[1h]" in rollback["expr"]
    assert 'phase="RolledBack"' in rollback["expr"]
    assert rollback["labels"] == {"severity": "warning", "team": "ml"}
    rule = prometheus_rule("prometheusRule.labels.release=kube-prometheus-stack")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    drift = prometheus_rule(
        "prometheusRule.driftWindow=30m",
        "prometheusRule.driftThreshold=0.35",
        "prometheusRule.driftMinSamples=2000",
        "prometheusRule.driftFor=1h",
        "prometheusRule.confidenceDrop=0.05",
        "prometheusRule.operatorDownFor=2m",
        "prometheusRule.reconcileErrorsWindow=20m",
        "prometheusRule.reconcileErrorsThreshold=7",
        "prometheusRule.reconcileErrorsFor=30m",
    )
    records, rules = records_of(drift), rules_of(drift)
    for record in RECORDED:
        assert "[30m]" in records[record]["expr"], record
        assert "[10m]" not in records[record]["expr"], record
    for alert in ("WeirInputDrift", "WeirPredictionDrift", "WeirConfidenceDrop"):
        assert rules[alert]["for"] == "1h", alert
        assert "weir:drift_rows:increase >= 2000" in rules[alert]["expr"], alert
    assert "weir:drift_feature_psi > 0.35" in rules["WeirInputDrift"]["expr"]
    assert "weir:drift_prediction_psi > 0.35" in rules["WeirPredictionDrift"]["expr"]
    assert ") > 0.05" in rules["WeirConfidenceDrop"]["expr"]
    assert rules["WeirOperatorDown"]["for"] == "2m"
    errors = rules["WeirReconcileErrors"]
    assert (errors["for"], "[20m]" in errors["expr"], errors["expr"].endswith("> 7")) == (
        "30m",
        True,
        True,
    )


def test_operator_alerts_select_the_releases_own_metrics_service() -> None:
    """The ServiceMonitor's job is the metrics Service's name, in the release's namespace."""
    rules = rules_of(prometheus_rule())
    [service] = [o for o in render(None) if o["kind"] == "Service"]
    selector = f'job="{service["metadata"]["name"]}", namespace="{NAMESPACE}"'
    down = rules["WeirOperatorDown"]["expr"]
    assert down.count(f"up{{{selector}}}") == 2, down
    assert "absent(" in down, "no target at all is down too"
    assert selector in rules["WeirReconcileErrors"]["expr"]


def runbook_sections() -> dict[str, str]:
    """The sections (### NAME) of docs/monitoring.md's Runbooks, with their text."""
    text = MONITORING_DOC.read_text()
    runbooks = text.split("\n## Runbooks\n", 1)[1].split("\n## ", 1)[0]
    sections: dict[str, str] = {}
    for part in runbooks.split("\n### ")[1:]:
        title, _, body = part.partition("\n")
        sections[title.strip()] = body.strip()
    return sections


def test_every_alert_links_to_its_runbook() -> None:
    sections = runbook_sections()
    for base in ("https://weir.dev/docs/monitoring.md", "https://wiki.example.com/ml/weir.md"):
        rules = rules_of(prometheus_rule(f"prometheusRule.runbookUrl={base}"))
        for name, item in rules.items():
            assert item["annotations"]["runbook_url"] == f"{base}#{name.lower()}", name
    for name in ALERTS:
        assert name in sections, f"docs/monitoring.md has no runbook section ### {name}"
        body = sections[name]
        for part in ("**What it means.**", "**How to look.**", "**What to do.**"):
            assert part in body, f"runbook {name} lacks {part}"
    severity_override = rules_of(prometheus_rule("prometheusRule.alertLabels.severity=page"))
    assert {r["labels"]["severity"] for r in severity_override.values()} == {"page"}


def test_pod_monitor_selects_the_servers_the_operator_creates() -> None:
    md = parse_model_deployment(yaml.safe_load((ROOT / "examples" / "iris.yaml").read_text()))
    pod = render_deployment(md, "0123456789abcdef", "stable", 1)["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]}

    def monitor(*sets: str) -> dict[str, Any]:
        [found] = [
            o
            for o in render(None, "metrics.podMonitor.enabled=true", *sets)
            if o["kind"] == "PodMonitor"
        ]
        return found

    spec = monitor()["spec"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert spec["namespaceSelector"] == {"any": True}
    [endpoint] = spec["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == SERVER_PORT
    assert endpoint["path"] == pod["metadata"]["annotations"]["prometheus.io/path"]
    assert str(ports[endpoint["port"]]) == pod["metadata"]["annotations"]["prometheus.io/port"]
    narrowed = monitor("watchNamespaces={team-a,ml}")["spec"]["namespaceSelector"]
    assert narrowed == {"matchNames": ["team-a", "ml"]}


def test_service_monitor_honor_labels_is_opt_in() -> None:
    def endpoint(*sets: str) -> dict[str, Any]:
        [found] = [
            o
            for o in render(None, "metrics.serviceMonitor.enabled=true", *sets)
            if o["kind"] == "ServiceMonitor"
        ]
        result: dict[str, Any] = found["spec"]["endpoints"][0]
        return result

    assert "honorLabels" not in endpoint()
    assert endpoint("metrics.serviceMonitor.honorLabels=true")["honorLabels"] is True


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["prometheusRule.errorRateThreshold=2"], "errorRateThreshold"),
        (["prometheusRule.rolloutStuckFor=half an hour"], "rolloutStuckFor"),
        (["dashboards.enabled=yes"], "dashboards.enabled"),
        (["dashboards.folder=Weir"], "Additional property folder is not allowed"),
        (["metrics.podMonitor.interval=often"], "podMonitor.interval"),
        (["prometheusRule.driftThreshold=-1"], "driftThreshold"),
        (["prometheusRule.confidenceDrop=2"], "confidenceDrop"),
        (["prometheusRule.driftWindow=ten minutes"], "driftWindow"),
        (["prometheusRule.runbookUrl=docs/monitoring.md"], "runbookUrl"),
    ],
)
def test_bad_monitoring_values_are_rejected(sets: list[str], message: str) -> None:
    proc = helm(*chart_template_args(None, *sets), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def render_notes(tmp_path: Path, *sets: str) -> str:
    """NOTES.txt as `helm install` prints it, rendered through a copy of the chart into a
    ConfigMap named `notes` (`helm template` skips NOTES.txt; the dashboard is a ConfigMap too)."""
    chart = tmp_path / "weir"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_probe.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "\n{{- end }}\n"
    )
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "test.notes" . | quote }}\n'
    )
    objects = render(None, *sets, chart=chart)
    [probe] = [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "notes"]
    text: str = probe["data"]["notes"]
    return text


def test_notes_mention_dashboard_and_alerts(tmp_path: Path) -> None:
    off = render_notes(tmp_path / "off")
    assert "dashboards.enabled=true,prometheusRule.enabled=true" in off
    on = render_notes(tmp_path / "on", "dashboards.enabled=true", "prometheusRule.enabled=true")
    assert f"ConfigMap {RELEASE}-dashboards in namespace {NAMESPACE}" in on
    alerts = ", ".join(ALERTS)
    assert f"PrometheusRule {RELEASE} ({alerts}); runbooks at https://" in on
    assert "drift panels" not in on, "the rule records what the drift panels read"
    assert "metrics.serviceMonitor.honorLabels=true" in on
    honored = render_notes(
        tmp_path / "honored",
        "dashboards.enabled=true",
        "metrics.serviceMonitor.honorLabels=true",
        "metrics.podMonitor.enabled=true",
    )
    assert "honorLabels" not in honored
    assert f"PodMonitor {RELEASE}-servers" in honored
    assert "set prometheusRule.enabled=true to see them" in honored
    assert "WARNING" not in on + off + honored
