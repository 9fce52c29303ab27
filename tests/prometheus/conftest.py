"""The real-Prometheus tier: Debian's `prometheus` (and its `promtool`) against real Weir.

One Prometheus per session (tests/support/prometheus.py), on 127.0.0.1, scraping every second,
with the chart's own rules loaded (its PrometheusRule rendered by `helm template`, with a short
drift window). One story per session, told once by the `story` fixture and read by every test
module: a `weir run` whose rollouts are analysed by the `prometheus` provider against that
Prometheus, with real `weir serve` processes counting against a reference, steady
in-distribution traffic, a good version promoted and a bad one rolled back, and the operator's
own metrics registry exported from what weir run's statuses say.

Without `prometheus` or `promtool` on PATH the tier is skipped with one line, unless
`WEIR_REQUIRE_PROMETHEUS=1` (set by CI) makes that a failure."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import start_http_server

from tests.support.helm import template
from tests.support.local_run import DriftingTraffic, LocalRun, write_manifests
from tests.support.processes import free_port
from tests.support.prometheus import (
    OPERATOR_JOB,
    SERVERS_JOB,
    Prometheus,
    ServerTarget,
    binaries,
    running_prometheus,
)
from weir_operator.cluster.metrics import OperatorMetrics
from weir_operator.core.status import ModelDeploymentStatus
from weir_server import sample_models
from weir_server.profile import Table, profile
from weir_server.reference import write_reference

RELEASE = "weir"
RELEASE_NAMESPACE = "weir-system"
NAME = "iris"  # the ModelDeployment
SERVED_MODEL = "flowers"  # spec.model.name: not the ModelDeployment's name (the dashboard join)
NAMESPACE = "default"  # where weir run's ModelDeployments are
SCRAPE_INTERVAL = "1s"
ANALYSIS_INTERVAL = "3s"  # at least two scrapes (the interval trap)
DRIFT_WINDOW = "30s"  # the rules' driftWindow in this tier (the chart's default is 10m)
DRIFT_MIN_SAMPLES = 100
STEPS = [{"setWeight": 50}, {"pause": {"duration": "4s"}}]
# The live rules: the chart's, with windows this short session can fill.
LIVE_RULE_VALUES = (
    "prometheusRule.enabled=true",
    f"prometheusRule.driftWindow={DRIFT_WINDOW}",
    f"prometheusRule.driftMinSamples={DRIFT_MIN_SAMPLES}",
)


@pytest.fixture(scope="session", autouse=True)
def prometheus_binaries() -> tuple[str, str]:
    """(prometheus, promtool): a one-line skip without them (a failure when required)."""
    return binaries()


def render_rule(*sets: str) -> dict[str, Any]:
    args: list[str | Path] = []
    for value in ("prometheusRule.enabled=true", *sets):
        args += ["--set", value]
    [rule] = [
        o for o in template(RELEASE, RELEASE_NAMESPACE, *args) if o["kind"] == "PrometheusRule"
    ]
    return rule


@pytest.fixture(scope="session")
def chart_rule() -> dict[str, Any]:
    """The chart's PrometheusRule with its default values."""
    return render_rule()


@pytest.fixture(scope="session")
def live_rule() -> dict[str, Any]:
    """The PrometheusRule the session's Prometheus evaluates (LIVE_RULE_VALUES)."""
    return render_rule(*LIVE_RULE_VALUES)


@pytest.fixture(scope="session")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, live_rule: dict[str, Any]
) -> Iterator[Prometheus]:
    with running_prometheus(
        tmp_path_factory.mktemp("prometheus"), live_rule["spec"]["groups"]
    ) as server:
        yield server


# --- the models and their references ------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """A model file and its reference (`weir profile` on its training data)."""

    label: str
    model: Path
    reference: Path

    def spec_model(self) -> dict[str, Any]:
        return {"uri": self.model.as_uri(), "name": SERVED_MODEL, "version": self.label}

    def monitoring(self) -> dict[str, Any]:
        sha256 = hashlib.sha256(self.reference.read_bytes()).hexdigest()
        return {
            "reference": {"uri": self.reference.as_uri(), "sha256": sha256},
            "drift": {"window": DRIFT_WINDOW, "minSamples": DRIFT_MIN_SAMPLES},
        }


def profiled(folder: Path, label: str, builder: str, data: np.ndarray) -> Version:
    folder.mkdir(parents=True, exist_ok=True)
    model = sample_models.BUILDERS[builder](folder / f"{builder}.onnx")
    reference = folder / f"{builder}.reference.json"
    write_reference(profile(model, Table.from_array(data, f"{builder} training data")), reference)
    return Version(label, model, reference)


@pytest.fixture(scope="session")
def versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Version]:
    """v1 (iris), a good v2 (iris_v2) and a bad v3 (iris_erroring: a 500 for every request with
    a sepal length of 7.0 or more). Each is profiled on iris_training_data; the bad one on
    the same data with sepal lengths below 7.0 (it cannot answer the others)."""
    folder = tmp_path_factory.mktemp("versions")
    data = sample_models.iris_training_data(2000)
    below = data.copy()
    below[:, 0] = np.minimum(below[:, 0], 6.99)
    return {
        "1": profiled(folder / "v1", "1", "iris", data),
        "2": profiled(folder / "v2", "2", "iris_v2", data),
        "3": profiled(folder / "v3", "3", "iris_erroring", below),
    }


def deployment(version: Version, prometheus_url: str) -> dict[str, Any]:
    analysis = {
        "interval": ANALYSIS_INTERVAL,
        "failureThreshold": 2,
        "minRequests": 10,
        "maxPredictionDrift": 0.2,  # the canary's predicted classes by PromQL, too
        "provider": {"prometheus": {"url": prometheus_url, "scrapeInterval": SCRAPE_INTERVAL}},
    }
    return {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model": version.spec_model(),
            "replicas": 2,
            "rollout": {"steps": STEPS, "analysis": analysis},
            "monitoring": version.monitoring(),
        },
    }


# --- the operator's metrics ---------------------------------------------------------------------


class OperatorExporter:
    """The operator's own metrics (cluster.metrics.OperatorMetrics, the registry `weir operator`
    serves on --metrics-port), fed as the controller feeds it: every status weir run writes is
    recorded (`record(namespace, name, old, new)`) and the time it took observed as a
    reconcile's. weir run has no API server to conflict with, so one reconcile error is counted
    as the controller counts an API conflict (reason api409). Served on 127.0.0.1."""

    def __init__(self, run: LocalRun, name: str) -> None:
        self.run, self.name = run, name
        self.metrics = OperatorMetrics()
        self.port = free_port()
        self._server, self._thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.metrics.registry
        )
        self.metrics.reconcile_errors.labels("api409").inc()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="operator-metrics", daemon=True)
        self.statuses: list[tuple[float, dict[str, Any]]] = []  # (time.monotonic(), status)
        self.last: ModelDeploymentStatus = ModelDeploymentStatus()

    def start(self) -> OperatorExporter:
        self._poller.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                raw = self.run.status(self.name)
            except Exception:  # weir run restarting or stopping: the next poll tells
                raw = None
            if raw is not None:
                new = ModelDeploymentStatus.model_validate(raw)
                self.metrics.record(NAMESPACE, self.name, self.last, new)
                self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
                self.last = new
                if not self.statuses or self.statuses[-1][1] != raw:
                    self.statuses.append((time.monotonic(), raw))
            self._stop.wait(0.2)

    def targets(self) -> list[dict[str, Any]]:
        return [{"targets": [f"127.0.0.1:{self.port}"], "labels": {}}]

    def stop(self) -> None:
        self._stop.set()
        self._poller.join(timeout=10)
        self._server.shutdown()
        self._server.server_close()


# --- the story ----------------------------------------------------------------------------------


@dataclass
class Story:
    """What the session's weir run did, for the tests to read."""

    run: LocalRun
    prometheus: Prometheus
    exporter: OperatorExporter
    traffic: DriftingTraffic
    versions: dict[str, Version]
    started: float  # Unix time before the first server started
    revisions: dict[str, str] = field(default_factory=dict)  # version label -> revision
    promoted: dict[str, Any] = field(default_factory=dict)  # the status once v2 was stable
    rolled_back: dict[str, Any] = field(default_factory=dict)  # the status once v3 was rolled back
    marks: dict[str, float] = field(default_factory=dict)  # what happened when (monotonic)

    @property
    def stable_revision(self) -> str:
        return str(self.run.status(NAME)["stable"]["revision"])


def server_targets(run: LocalRun) -> list[dict[str, Any]]:
    """weir run's servers as pod discovery would list them (running ones only)."""
    return [
        ServerTarget(server["port"], server["name"], NAMESPACE).group()
        for server in run.servers(NAME)
        if server.get("state") == "running"
    ]


def wait_phase(run: LocalRun, phase: str, version: str, within: float) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = run.status(NAME)
        spec_version = (status.get("stable") or {}).get("version")
        if phase == "Healthy":
            ok = status.get("phase") == "Healthy" and spec_version == version
            return status if ok and not status.get("canary") else None
        history = status.get("history") or []
        done = history and history[0].get("version") == version
        return status if status.get("phase") == phase and done else None

    return run.eventually(reached, within, f"{NAME} {phase} with version {version}")


@pytest.fixture(scope="session")
def story(
    tmp_path_factory: pytest.TempPathFactory,
    prometheus: Prometheus,
    versions: dict[str, Version],
) -> Iterator[Story]:
    """v1 serving under steady traffic, v2 rolled out and promoted, v3 rolled out and rolled
    back, each analysed by the `prometheus` provider against the session's Prometheus; then
    v2 keeps serving (and counting rows against its reference) until the session ends."""
    folder = tmp_path_factory.mktemp("story")
    manifests = folder / "manifests"
    write_manifests(manifests, deployment(versions["1"], prometheus.url))
    started = time.time()
    run = LocalRun(manifests, folder / "state")
    exporter: OperatorExporter | None = None
    traffic: DriftingTraffic | None = None
    try:
        run.wait_up()
        exporter = OperatorExporter(run, NAME).start()
        prometheus.set_targets(OPERATOR_JOB, "operator", exporter.targets())
        with prometheus.follow(SERVERS_JOB, "weir-run", lambda: server_targets(run)):
            first = wait_phase(run, "Healthy", "1", within=60)
            traffic = DriftingTraffic(
                run.router_url, model=SERVED_MODEL, limit_seconds=300, max_requests=100_000
            ).start()
            told = Story(run, prometheus, exporter, traffic, versions, started)
            told.revisions["1"] = first["stable"]["revision"]
            time.sleep(2)  # two scrapes of v1 with traffic before the first rollout

            told.marks["v2 applied"] = time.monotonic()
            write_manifests(manifests, deployment(versions["2"], prometheus.url))
            told.promoted = wait_phase(run, "Healthy", "2", within=90)
            told.marks["v2 promoted"] = time.monotonic()
            told.revisions["2"] = told.promoted["stable"]["revision"]

            told.marks["v3 applied"] = time.monotonic()
            write_manifests(manifests, deployment(versions["3"], prometheus.url))
            told.rolled_back = wait_phase(run, "RolledBack", "3", within=90)
            told.marks["v3 rolled back"] = time.monotonic()
            told.revisions["3"] = told.rolled_back["history"][0]["revision"]
            yield told
    finally:
        if traffic is not None:
            traffic.stop()
        if exporter is not None:
            exporter.stop()
        prometheus.set_targets(OPERATOR_JOB, "operator", [])
        code = run.stop()
        orphans = run.orphans()
        assert not orphans, f"server processes outlived weir run: {orphans}"
        assert code == 0, f"weir run exited with {code}:\n{run.log()}"
