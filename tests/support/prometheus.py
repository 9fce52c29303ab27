"""A real Prometheus (Debian's `prometheus` package) for the tests: started on 127.0.0.1 on a
free port with its storage in a temporary folder, scraping every second, stopped at the end.

What it scrapes is written by the test into file_sd target files (`Prometheus.set_targets`,
or `Prometheus.follow` for targets that come and go, such as the servers of `weir run`). Two
jobs mirror what the chart's monitors make of a cluster:

- `weir-servers` is the chart's PodMonitor: each target carries the `__meta_kubernetes_*`
  labels Kubernetes pod discovery would give it, and the same relabelling prometheus-operator
  writes for a PodMonitor turns them into `namespace`, `pod`, `container`, `endpoint` and `job`
  (the labels the default analysis queries and the dashboard select on).
- `weir-operator` is the chart's ServiceMonitor with honorLabels: the operator's own
  `namespace` label (the ModelDeployment's) is kept over the target's.

`query`/`query_range` are the HTTP API's instant and range queries (httpx); every wait is
bounded and every address is 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.support.processes import free_port, start_logged

T = TypeVar("T")

REQUIRE_ENV = "WEIR_REQUIRE_PROMETHEUS"
SCRAPE_INTERVAL = "1s"
SERVERS_JOB = "weir-servers"
OPERATOR_JOB = "weir-operator"
# What prometheus-operator names the jobs of the chart's monitors (<namespace>/<monitor> for a
# PodMonitor, the Service's name for a ServiceMonitor): the alerts select on these.
SERVERS_JOB_LABEL = "weir-system/weir-servers"
OPERATOR_JOB_LABEL = "weir-metrics"
OPERATOR_NAMESPACE = "weir-system"
START_TIMEOUT = 30.0
QUERY_TIMEOUT = httpx.Timeout(10.0, connect=2.0)

# prometheus-operator's relabelling for a PodMonitor endpoint (port `http`).
POD_MONITOR_RELABELING: list[dict[str, Any]] = [
    {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
    {"target_label": "job", "replacement": SERVERS_JOB_LABEL},
    {"target_label": "endpoint", "replacement": "http"},
]


def prometheus_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def binaries() -> tuple[str, str]:
    """(prometheus, promtool) on PATH. Missing: a skip with one line, or a failure where
    WEIR_REQUIRE_PROMETHEUS=1 (CI, whose .ci/run installs Debian's `prometheus`)."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if found[0] is None or found[1] is None:
        missing = " and ".join(
            n for n, p in zip(("prometheus", "promtool"), found, strict=True) if p is None
        )
        reason = (
            f"{missing} not on PATH: the real-Prometheus tier is skipped "
            "(apt-get install prometheus; .ci/run does)"
        )
        if prometheus_required():
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return found[0], found[1]


@dataclass(frozen=True)
class ServerTarget:
    """A `weir serve` process as pod discovery would see the pod it runs in."""

    port: int
    pod: str
    namespace: str = "default"

    def group(self) -> dict[str, Any]:
        return {
            "targets": [f"127.0.0.1:{self.port}"],
            "labels": {
                "__meta_kubernetes_namespace": self.namespace,
                "__meta_kubernetes_pod_name": self.pod,
                "__meta_kubernetes_pod_container_name": "server",
            },
        }


class PrometheusError(AssertionError):
    """Prometheus answered an error (the message has its answer)."""


@dataclass
class Prometheus:
    """One Prometheus process; `start()` it, `stop()` it (or use `running_prometheus`)."""

    workdir: Path
    rule_groups: Sequence[Mapping[str, Any]] = ()
    scrape_interval: str = SCRAPE_INTERVAL
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets_dir(self) -> Path:
        return self.workdir / "targets"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def config(self) -> dict[str, Any]:
        def job(name: str, honor_labels: bool, relabel: list[dict[str, Any]]) -> dict[str, Any]:
            return {
                "job_name": name,
                "honor_labels": honor_labels,
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "file_sd_configs": [
                    {"files": [str(self.targets_dir / f"{name}-*.json")], "refresh_interval": "1s"}
                ],
                "relabel_configs": relabel,
            }

        operator_relabel = [
            {"target_label": "job", "replacement": OPERATOR_JOB_LABEL},
            {"target_label": "namespace", "replacement": OPERATOR_NAMESPACE},
            {"target_label": "endpoint", "replacement": "metrics"},
        ]
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                job(SERVERS_JOB, False, POD_MONITOR_RELABELING),
                job(OPERATOR_JOB, True, operator_relabel),
            ],
        }
        if self.rule_groups:
            config["rule_files"] = [str(self.workdir / "rules.yaml")]
        return config

    def start(self) -> Prometheus:
        prometheus, _ = binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(exist_ok=True)
        if self.rule_groups:
            rules = {"groups": [dict(g) for g in self.rule_groups]}
            (self.workdir / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        command = [
            prometheus,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        self.process = start_logged(command, self.log_path)
        self.eventually(self._ready, START_TIMEOUT, "Prometheus answers /-/ready")
        return self

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            code = self.process.returncode if self.process else None
            raise AssertionError(f"prometheus exited with {code}:\n{self.log()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, within: float = 20.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    # --- what it scrapes ---------------------------------------------------------------------

    def set_targets(self, job: str, name: str, groups: Sequence[Mapping[str, Any]]) -> None:
        """Write (atomically: Prometheus watches the folder) the target file `name` of `job`;
        no groups removes it."""
        path = self.targets_dir / f"{job}-{name}.json"
        if not groups:
            path.unlink(missing_ok=True)
            return
        partial = self.targets_dir / f".{job}-{name}.partial"
        partial.write_text(json.dumps(list(groups), indent=1))
        partial.replace(path)

    @contextmanager
    def follow(
        self,
        job: str,
        name: str,
        source: Callable[[], Sequence[Mapping[str, Any]]],
        every: float = 0.3,
    ) -> Iterator[None]:
        """Keep the target file `name` equal to what `source()` says (polled every `every`
        s in a thread) for as long as the block runs, then remove it. A `source` that raises
        leaves the file as it was until the next poll."""
        stop = threading.Event()
        errors: list[BaseException] = []

        def poll() -> None:
            last: str | None = None
            while not stop.is_set():
                try:
                    groups = list(source())
                except Exception as error:  # the source is briefly unreachable
                    errors[:] = [error]
                else:
                    text = json.dumps(groups, sort_keys=True)
                    if text != last:
                        self.set_targets(job, name, groups)
                        last = text
                stop.wait(every)

        thread = threading.Thread(target=poll, name=f"follow-{job}-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)
            self.set_targets(job, name, [])

    def targets(self, job: str | None = None) -> list[dict[str, Any]]:
        """The active targets (the HTTP API's /api/v1/targets), of one job if named."""
        data = self._get("/api/v1/targets", {"state": "active"})
        active: list[dict[str, Any]] = data["activeTargets"]
        return [t for t in active if job is None or t["scrapePool"] == job]

    def wait_targets_up(self, job: str, count: int, within: float = 30.0) -> list[dict[str, Any]]:
        """Wait until `job` has exactly `count` targets, every one up."""

        def up() -> list[dict[str, Any]] | None:
            found = self.targets(job)
            ok = len(found) == count and all(t["health"] == "up" for t in found)
            return found if ok else None

        return self.eventually(up, within, f"{count} target(s) of {job} up ({self.targets(job)})")

    # --- queries -----------------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        try:
            response = httpx.get(f"{self.url}{path}", params=dict(params), timeout=QUERY_TIMEOUT)
        except httpx.HTTPError as error:
            raise PrometheusError(f"GET {path} {dict(params)}: {error!r}") from error
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(
                f"GET {path} {dict(params)}: HTTP {response.status_code}: "
                f"{body.get('error') or response.text[:500]}"
            )
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector (each item: `metric` labels, `value` [time, "text"]),
        evaluated at `at` (Unix seconds) or now."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} gave a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(
        self, expr: str, at: float | None = None
    ) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query as {sorted labels: value}."""
        return {
            tuple(sorted(item["metric"].items())): float(item["value"][1])
            for item in self.query(expr, at)
        }

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        """A range query's matrix (each item: `metric` labels, `values` [[time, "text"], ...])."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
        data = self._get("/api/v1/query_range", params)
        result: list[dict[str, Any]] = data["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        """The loaded rule groups (/api/v1/rules), with their health and last error."""
        groups: list[dict[str, Any]] = self._get("/api/v1/rules", {})["groups"]
        return groups

    def eventually(self, check: Callable[[], T | None], within: float, what: str) -> T:
        """`check()`'s first truthy answer, polled every 0.2 s for at most `within` s."""
        deadline = time.monotonic() + within
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not within {within} s: {what}\n--- prometheus log ---\n{self.log()[-3000:]}"
                )
            time.sleep(0.2)


@contextmanager
def running_prometheus(
    workdir: Path, rule_groups: Sequence[Mapping[str, Any]] = ()
) -> Iterator[Prometheus]:
    prometheus = Prometheus(workdir, rule_groups)
    try:
        yield prometheus.start()
    finally:
        prometheus.stop()


def promtool(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`promtool ARGS`, bounded; the completed process (check its returncode)."""
    _, binary = binaries()
    return subprocess.run(
        [binary, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
