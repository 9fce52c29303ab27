"""A rollout with `traffic.router: gateway-api` on a real API server: the operator's HTTPRoute
carries the exact step weights, a good version is promoted and a bad one rolled back with the
route's canary weight back at 0, while the test plays the gateway (it reads the HTTPRoute and
splits real requests between the pods of `<md>-stable` and `<md>-canary` by its weights)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.controlplane.conftest import Kubectl, eventually
from tests.controlplane.test_operator import md
from tests.controlplane.test_rollout import BODY, REVISION, lookups, manifest, revision
from tests.support.operator_process import Operator

__all__ = ["lookups"]  # the session fixture, shared with test_rollout


def gateway_manifest(model: Path, version: str) -> dict[str, Any]:
    document = manifest(model, version)
    document["spec"]["traffic"] = {
        "router": "gateway-api",
        "gateway": {"parentRefs": [{"name": "edge"}], "hostnames": ["iris.example.com"]},
    }
    document["spec"]["rollout"]["steps"] = [{"setWeight": 30}, {"pause": {"duration": "2s"}}]
    return document


class GatewayStandIn:
    """Plays the gateway: reads HTTPRoute `iris`, and for each request picks a backend Service
    by the route's weights (smooth weighted round robin), then a ready pod it selects."""

    def __init__(self, admin: Kubectl, namespace: str, limit_seconds: float = 200) -> None:
        self.admin, self.namespace = admin, namespace
        self.answers: Counter[tuple[str, int]] = Counter()  # (revision, status) -> count
        self.weights_seen: set[tuple[int, int]] = set()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _backends(self) -> list[tuple[int, list[tuple[str, str]]]]:
        route = self.admin.json("get", "httproute", "iris", "-n", self.namespace)
        refs = route["spec"]["rules"][0]["backendRefs"]
        self.weights_seen.add(tuple(int(r.get("weight", 1)) for r in refs))  # type: ignore[arg-type]
        backends = []
        for ref in refs:
            service = self.admin.json("get", "service", ref["name"], "-n", self.namespace)
            selector = ",".join(f"{k}={v}" for k, v in service["spec"]["selector"].items())
            pods = self.admin.json("get", "pods", "-n", self.namespace, "-l", selector)["items"]
            ready = [
                (p["status"]["podIP"], p["metadata"]["labels"][REVISION])
                for p in pods
                if not p["metadata"].get("deletionTimestamp")
                and {c["type"]: c["status"] for c in p["status"].get("conditions", [])}.get("Ready")
                == "True"
            ]
            backends.append((int(ref.get("weight", 1)), ready))
        return backends

    def _run(self) -> None:
        credit = [0, 0]
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    backends = self._backends()
                except AssertionError:  # the route is not there yet
                    time.sleep(0.2)
                    continue
                until = time.monotonic() + 1.5  # kubectl is slow: reread the route less
                turn = 0
                while time.monotonic() < until and not self._stop.is_set():
                    total = sum(w for w, _ in backends) or 1
                    for index, (weight, _) in enumerate(backends):
                        credit[index] += weight
                    chosen = max(range(len(backends)), key=lambda i: credit[i])
                    credit[chosen] -= total
                    pods = backends[chosen][1]
                    if not pods:
                        time.sleep(0.05)
                        continue
                    address, rev = pods[turn % len(pods)]
                    turn += 1
                    try:
                        code = client.post(
                            f"http://{address}:8080/v2/models/iris/infer", json=BODY
                        ).status_code
                    except httpx.HTTPError:
                        code = 0
                    self.answers[(rev, code)] += 1
                    time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_gateway_api_weights_exactly_promotes_a_good_version_and_rolls_back_a_bad_one(
    admin: Kubectl, namespace: str, watched: Operator, lookups: dict[str, Path]
) -> None:
    first, good, bad = (gateway_manifest(lookups[v], v) for v in ("1", "2", "3"))
    admin.apply(first, namespace=namespace)

    def healthy(version_revision: str) -> dict[str, Any] | None:
        status: dict[str, Any] = md(admin, namespace).get("status") or {}
        stable = (status.get("stable") or {}).get("revision")
        ok = stable == version_revision and status.get("phase") == "Healthy"
        return status if ok and not status.get("canary") else None

    eventually(lambda: healthy(revision(first)), within=90, what="v1 Healthy")
    gateway = GatewayStandIn(admin, namespace)
    try:
        admin.apply(good, namespace=namespace)
        status = eventually(lambda: healthy(revision(good)), within=120, what="v2 promoted")
        assert (70, 30) in gateway.weights_seen, gateway.weights_seen
        assert all(w in ((100, 0), (70, 30)) for w in gateway.weights_seen), gateway.weights_seen
        assert status["history"][0]["outcome"] == "Promoted"
        assert gateway.answers[(revision(good), 200)] > 0, gateway.answers

        admin.apply(bad, namespace=namespace)
        status = eventually(
            lambda: (
                (s := md(admin, namespace).get("status") or {}).get("phase") == "RolledBack" and s
            ),
            within=120,
            what="v3 rolled back",
        )
        assert status["history"][0]["outcome"] == "RolledBack"
        assert gateway.answers[(revision(bad), 500)] > 0, gateway.answers
        route = admin.json("get", "httproute", "iris", "-n", namespace)
        weights = {r["name"]: r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]}
        assert weights == {"iris-stable": 100, "iris-canary": 0}
        stable = admin.json("get", "service", "iris-stable", "-n", namespace)
        assert stable["spec"]["selector"][REVISION] == revision(good)
    finally:
        gateway.stop()
        print(dict(gateway.answers), sorted(gateway.weights_seen))
