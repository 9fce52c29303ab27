"""Every query of the Grafana dashboard (charts/weir/dashboards/weir.json) answers series on a
real Prometheus that scrapes real servers with traffic (counting against a reference) and the
operator's metrics, with the chart's recording rules loaded: each panel target, annotation and
template variable is run as Grafana runs it (a range query over the session, its variables
and macros filled in) and must return at least one series. The `model` variable is a
ModelDeployment name (iris) while the servers serve `flowers` (spec.model.name): the server
panels find them through weir_rollout_revision_info."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.prometheus.conftest import NAME, NAMESPACE, Story

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "weir" / "dashboards" / "weir.json"
STEP_SECONDS = 1.0


def queries() -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target, annotation and template variable."""
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    for panel in board["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, query
        selector, label = match.groups()
        yield f"variable {variable['name']}", f"count by ({label}) ({selector})"


def as_grafana_sends(expr: str, span_seconds: float) -> str:
    """The query with the dashboard's variables set to this story's ModelDeployment and
    Grafana's macros to what it computes for a 1s scrape interval and a 1s step."""
    values = {
        "$__rate_interval": "4s",  # max(4 x scrape interval, step + scrape interval)
        "$__interval": f"{STEP_SECONDS:g}s",
        "$__range": f"{int(span_seconds)}s",
        "$namespace": NAMESPACE,
        "$model": NAME,
    }
    for macro, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(macro, value)
    assert "$" not in expr, expr
    return expr


QUERIES = list(queries())


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_answers_series(where: str, expr: str, story: Story) -> None:
    def answered() -> list[dict[str, Any]] | None:
        end = time.time()
        query = as_grafana_sends(expr, end - story.started)
        found = story.prometheus.query_range(query, story.started, end, STEP_SECONDS)
        return found or None

    # The drift panels read recorded series: allow a few rule evaluations to have happened.
    found = story.prometheus.eventually(answered, 20, f"{where} answers series: {expr}")
    # What a panel shows by ModelDeployment is ours (the only one), found by its name.
    names = {item["metric"]["name"] for item in found if "name" in item["metric"]}
    assert names <= {NAME}, names
