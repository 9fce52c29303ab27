"""A ModelDeployment written for a cluster runs in `weir run` as it is: TLS, scheduling and
image fields are not used on one machine, and `weir run` says so once, in an event; its
lineage shows in `weir history`, as on a cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.local.test_cli import weir
from tests.support.local_run import LocalRun, manifest, write_manifests


def test_a_cluster_spec_serves_locally_and_the_ignored_fields_are_named(
    local_run: LocalRun, iris_versions: dict[str, Path]
) -> None:
    document = manifest("iris", iris_versions["iris"], "1")
    document["spec"]["server"] = {
        "tls": {"secretName": "iris-tls"},
        "nodeSelector": {"node.kubernetes.io/instance-type": "g5.xlarge"},
        "priorityClassName": "inference",
    }
    write_manifests(local_run.folder, document)
    local_run.wait_up()
    local_run.wait_healthy("iris", "1")
    events: list[dict[str, Any]] = local_run.control.get(
        "/api/v1/modeldeployments/iris/events"
    ).json()["items"]
    ignored = [e for e in events if e["reason"] == "IgnoredLocally"]
    assert len(ignored) == 1, events
    message = ignored[0]["message"]
    for field in ("spec.server.tls", "spec.server.nodeSelector", "spec.server.priorityClassName"):
        assert field in message


def test_lineage_is_in_the_history_table_and_in_full_in_its_json(
    local_run: LocalRun, iris_versions: dict[str, Path]
) -> None:
    lineage = {
        "trainingRun": "runs:/7f3c9a0e",
        "dataset": {"uri": "s3://datasets/iris.parquet"},
        "metrics": {"accuracy": 0.97},
        "labels": {"team": "flowers"},
    }
    document = manifest("iris", iris_versions["iris"], "1")
    document["spec"]["model"]["lineage"] = lineage
    write_manifests(local_run.folder, document)
    local_run.wait_up()
    local_run.wait_healthy("iris", "1")
    table = weir(local_run.control_url, "history", "iris")
    assert table.returncode == 0, table.stderr
    assert "runs:/7f3c9a0e" in table.stdout.splitlines()[1]
    listed = weir(local_run.control_url, "history", "iris", "-o", "json")
    assert json.loads(listed.stdout)[0]["lineage"] == lineage
