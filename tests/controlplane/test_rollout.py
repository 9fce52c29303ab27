"""Progressive delivery on a real control plane with real servers and real traffic: a good model
version is promoted through canary steps, and a bad one (it fails on requests the stable answers)
is rolled back by the operator alone, with the `direct` provider scraping the pods' /metrics.

The test plays kube-proxy for the `<md>` Service (the `replicas` router): a bounded loopback
client sends requests to every ready pod that Service selects, so the canary gets traffic only
once the operator gives it weight. Both versions share a signature (`indices` INT64 [batch] ->
`values` FP32 [batch]); the bad one has a shorter table, so indices >= 5 make it answer 500."""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.controlplane.conftest import Kubectl, eventually
from tests.controlplane.test_operator import md
from tests.support.operator_process import Operator
from weir_operator.core.render import revision_of
from weir_operator.core.spec import parse_model_deployment

pytestmark = pytest.mark.timeout(300)
REVISION = "serving.weir.dev/revision"
BODY = {"inputs": [{"name": "indices", "shape": [2], "datatype": "INT64", "data": [2, 7]}]}


def lookup_model(path: Path, size: int, table: np.ndarray | None = None) -> Path:
    """`values = table[indices]`; the table is 0, 1.5, 3, ... (`size` of them) unless given."""
    from onnx import TensorProto, helper, numpy_helper, save

    table = np.arange(size, dtype=np.float32) * 1.5 if table is None else table
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "indices"], ["values"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


@pytest.fixture(scope="module")
def lookups(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lookup-models")
    return {
        "1": lookup_model(folder / "lookup-1.onnx", 10),
        "2": lookup_model(folder / "lookup-2.onnx", 10),
        "3": lookup_model(folder / "lookup-3.onnx", 5),  # index 7 is out of range: HTTP 500
    }


def manifest(model: Path, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {
            "model": {
                "uri": f"file://{model}",
                "version": version,
                "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            },
            "replicas": 2,
            "rollout": {
                "steps": [{"setWeight": 50}, {"pause": {"duration": "2s"}}],
                "progressDeadline": "2m",
                "analysis": {
                    "interval": "2s",
                    "failureThreshold": 2,
                    "minRequests": 10,
                    # The pods share two CPUs with the API server, the kubelet, the operator and
                    # this test's traffic: a p99 of a few ms jumps by ten now and then (a good
                    # version was rolled back once for 8.8 ms vs 0.4 ms). The bad version fails
                    # by its errors, which is what this test is about.
                    "latencyToleranceMs": 100,
                    "provider": {"direct": {}},
                },
            },
        },
    }


def revision(document: dict[str, Any]) -> str:
    return revision_of(parse_model_deployment(document).spec)


class Traffic:
    """Plays kube-proxy for the `iris` Service: requests to every ready pod it selects."""

    def __init__(
        self,
        admin: Kubectl,
        namespace: str,
        limit_seconds: float = 200,
        client: httpx.Client | None = None,
    ) -> None:
        """`client`: how to reach the pods (default plain HTTP; an HTTPS one for TLS pods)."""
        self.admin, self.namespace = admin, namespace
        self.client = client
        self.scheme = "https" if client is not None else "http"
        self.answers: Counter[tuple[str, int]] = Counter()  # (revision, status) -> count
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _endpoints(self) -> list[tuple[str, str]]:
        service = self.admin.json("get", "service", "iris", "-n", self.namespace)
        selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
        listed = self.admin.json("get", "pods", "-n", self.namespace, "-l", selector)["items"]
        return [
            (p["status"]["podIP"], p["metadata"]["labels"][REVISION])
            for p in listed
            if not p["metadata"].get("deletionTimestamp")
            and {c["type"]: c["status"] for c in p["status"].get("conditions", [])}.get("Ready")
            == "True"
        ]

    def _run(self) -> None:
        with self.client or httpx.Client(timeout=5) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                endpoints = self._endpoints()
                until = time.monotonic() + 0.5
                for address, rev in itertools.cycle(endpoints or [("", "")]):
                    if time.monotonic() > until or self._stop.is_set():
                        break
                    if not address:
                        time.sleep(0.1)
                        continue
                    url = f"{self.scheme}://{address}:8080/v2/models/iris/infer"
                    try:
                        status = client.post(url, json=BODY).status_code
                    except httpx.HTTPError:
                        status = 0
                    self.answers[(rev, status)] += 1
                    time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def status_where(admin: Kubectl, namespace: str, **wanted: Any) -> dict[str, Any] | None:
    status: dict[str, Any] = md(admin, namespace).get("status") or {}
    if all(status.get(k) == v for k, v in wanted.items()):
        return status
    return None


def test_a_good_version_is_promoted_through_steps_and_a_bad_one_rolled_back_alone(
    admin: Kubectl,
    namespace: str,
    watched: Operator,
    lookups: dict[str, Path],
) -> None:
    first, good, bad = (manifest(lookups[v], v) for v in ("1", "2", "3"))
    admin.apply(first, namespace=namespace)
    eventually(
        lambda: status_where(admin, namespace, phase="Healthy", readyReplicas=2),
        within=90,
        what="v1 Healthy on 2 servers",
    )
    traffic = Traffic(admin, namespace)
    try:
        admin.apply(good, namespace=namespace)
        steps_seen: set[tuple[int, int]] = set()

        def promoted() -> dict[str, Any] | None:
            status: dict[str, Any] = md(admin, namespace).get("status") or {}
            if canary := status.get("canary"):
                steps_seen.add((canary["step"], canary["weight"]))
            stable = (status.get("stable") or {}).get("revision")
            return status if stable == revision(good) and status["phase"] == "Healthy" else None

        status = eventually(promoted, within=120, what="v2 promoted")
        assert (0, 50) in steps_seen, steps_seen
        assert status["history"][0]["reason"] == "all 2 steps completed"
        assert status["lastAnalysis"]["verdict"] == "Pass", status["lastAnalysis"]
        assert traffic.answers[(revision(good), 200)] > 0, traffic.answers

        admin.apply(bad, namespace=namespace)

        def weighted() -> dict[str, Any] | None:
            status: dict[str, Any] = md(admin, namespace).get("status") or {}
            canary = status.get("canary") or {}
            ok = canary.get("revision") == revision(bad) and canary.get("weight", 0) > 0
            return status if ok else None

        eventually(weighted, within=90, what="the bad canary gets traffic")
        seen_weight = time.monotonic()
        status = eventually(
            lambda: status_where(admin, namespace, phase="RolledBack"),
            within=60,
            what="the bad canary rolled back",
        )
        took = time.monotonic() - seen_weight
        print(f"bad canary: weight > 0 seen -> RolledBack seen in {took:.1f} s")
        assert status["stable"]["revision"] == revision(good)
        assert status["rolledBackRevision"] == revision(bad)
        entry = status["history"][0]
        assert entry["outcome"] == "RolledBack"
        assert "2 analyses in a row failed (failureThreshold 2)" in entry["reason"], entry
        assert status["lastAnalysis"]["verdict"] == "Fail"
        assert traffic.answers[(revision(bad), 500)] > 0, traffic.answers
        service = admin.json("get", "service", "iris", "-n", namespace)
        assert service["spec"]["selector"][REVISION] == revision(good), "traffic back on stable"
        assert took < 15, f"rolled back {took:.1f} s after it got traffic"
    finally:
        traffic.stop()
        print(dict(traffic.answers))
