"""Autoscaling in the real operator process, against the emulator (issue #8): with `metric: cpu`
an autoscaling/v2 HPA per serving revision owns the count, rendered and updated from the spec,
and the operator never writes `spec.replicas` of that Deployment; with `metric: rps` or
`concurrency` Weir's own autoscaler patches the Deployment's replicas from the pods' crafted
metrics: up at once, down only after a whole `scaleDownDelay` of lower load, and never on
missing data (a pod that stops answering, no pods at all). Across all of it, no replica write
of the operator ever lands on a Deployment that an HPA owns at that moment.

The test plays the Deployment controller (replicas become ready), the HPA controller (it writes
`spec.replicas` of an HPA-owned Deployment) and the kubelet: it creates the Pods of a revision,
Ready, each with its own loopback address, and serves each pod's `/metrics` on <address>:8080
from a small HTTP server whose counters advance at rates the test sets (requests/s for rps; the
latency histogram's sum, the seconds spent answering, for concurrency). Every check of the
emulator's request log reads the operator's own requests (not "kmock/..." User-Agents)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kubernetes_validate
import pytest

from tests.emulator.test_operator import DEPLOYMENTS, MD, manifest, revision, status_of
from tests.emulator.test_rollout import phase
from tests.support.emulator import EmulatorApi, WeirEmulator, eventually
from weir_operator.core.render import REVISION_LABEL, SERVER_PORT, instance_labels
from weir_operator.core.spec import parse_model_deployment

HPAS = "autoscaling/v2/horizontalpodautoscalers"
ROUTES = "gateway.networking.k8s.io/v1/httproutes"
PODS = "v1/pods"
# Pod addresses: a /24 of loopback that the control-plane tier's kubelet (127.0.0.N) never uses.
ADDRESSES = [f"127.0.71.{n}" for n in range(1, 255)]
WRITES = {"POST", "PATCH", "PUT"}
TEST_AGENT = "kmock/"  # EmulatorApi's requests; everything else is the operator's


class CraftedPod:
    """A serving pod's `/metrics` on <its loopback address>:8080, as a `weir serve` exports it,
    with counters that advance at the rates set: requests/s, and requests in flight (the
    latency histogram's sum grows by that many seconds per second). A rate set takes effect
    from the pod's last scrape, so the operator's next window reads exactly the new load."""

    def __init__(self, name: str, revision: str) -> None:
        self.name, self.revision = name, revision
        self._lock = threading.Lock()
        self._rates = (0.0, 0.0)  # requests/s, in flight
        self._base = (0.0, 0.0)  # requests, busy seconds at `_since`
        self._since = time.monotonic()
        self.scrapes: list[tuple[float, tuple[float, float]]] = []  # (when, counters)
        self._silent, self._closing = threading.Event(), threading.Event()
        pod = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if pod._silent.is_set():  # holds the connection, answers nothing
                    pod._closing.wait(60)
                    return
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                data = pod.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = _bind(Handler)
        self.ip = str(self.server.server_address[0])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _counters(self, now: float) -> tuple[float, float]:
        elapsed = now - self._since
        return (
            self._base[0] + self._rates[0] * elapsed,
            self._base[1] + self._rates[1] * elapsed,
        )

    def exposition(self) -> str:
        with self._lock:
            now = time.monotonic()
            requests, busy = self._counters(now)
            self.scrapes.append((now, (requests, busy)))
        labels = f'model="iris",version="7",revision="{self.revision}",track="stable"'
        histogram = "weir_inference_request_duration_seconds"
        return "\n".join(
            [
                "# HELP weir_inference_requests_total Inference requests answered.",
                "# TYPE weir_inference_requests_total counter",
                f'weir_inference_requests_total{{{labels},code="200"}} {requests}',
                f"# HELP {histogram} Time to answer an infer request.",
                f"# TYPE {histogram} histogram",
                f'{histogram}_bucket{{{labels},le="0.5"}} {requests}',
                f'{histogram}_bucket{{{labels},le="+Inf"}} {requests}',
                f"{histogram}_count{{{labels}}} {requests}",
                f"{histogram}_sum{{{labels}}} {busy}",
                "",
            ]
        )

    def set_load(self, rps: float = 0.0, in_flight: float = 0.0) -> None:
        with self._lock:
            if self.scrapes:  # what nobody has seen yet may start at the last scrape
                self._since, self._base = self.scrapes[-1]
            else:
                self._base, self._since = self._counters(time.monotonic()), time.monotonic()
            self._rates = (rps, in_flight)

    def stop_answering(self) -> None:
        """Scrapes from now on get no answer at all (the scraper's timeout ends them)."""
        self._silent.set()

    def stop(self) -> None:
        """Gone: the address refuses connections from now on."""
        self._closing.set()
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(5)
        self.server.server_close()


def _bind(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A server on the first free address of ADDRESSES, port 8080 (the pod's server port)."""
    for address in ADDRESSES:
        try:
            return ThreadingHTTPServer((address, SERVER_PORT), handler)
        except OSError:
            continue
    raise RuntimeError(f"no free loopback address for port {SERVER_PORT} in 127.0.71.0/24")


@pytest.fixture
def crafted() -> Iterator[Callable[[str, str], CraftedPod]]:
    """Makes CraftedPods; every server is stopped at the end of the test."""
    made: list[CraftedPod] = []

    def make(name: str, revision: str) -> CraftedPod:
        made.append(CraftedPod(name, revision))
        return made[-1]

    yield make
    for pod in made:
        pod.stop()


# --- the emulator's request log -------------------------------------------------------------


def _by_operator(request: Any) -> bool:
    agent = {k.lower(): v for k, v in request.headers.items()}.get("user-agent", "")
    return not agent.startswith(TEST_AGENT)


def _target(request: Any) -> str:
    body = request.data if isinstance(request.data, dict) else {}
    return str(request.name or (body.get("metadata") or {}).get("name", ""))


def deployment_writes(emulator: WeirEmulator, name: str) -> list[tuple[str, dict[str, Any]]]:
    """The operator's writes of Deployment `name` (not of its status), in order: (method, body)."""
    return [
        (str(r.method.value), r.data)
        for r in list(emulator)
        if _by_operator(r)
        and r.resource is not None
        and r.resource.plural == "deployments"
        and r.subresource is None
        and str(r.method.value) in WRITES
        and _target(r) == name
    ]


def replica_writes(emulator: WeirEmulator, name: str) -> list[int]:
    """The replica counts the operator wrote into Deployment `name`, in order."""
    writes = deployment_writes(emulator, name)
    return [body["spec"]["replicas"] for _, body in writes if "replicas" in body.get("spec", {})]


def assert_one_owner(emulator: WeirEmulator) -> int:
    """No replica write of the operator on a Deployment that an HPA targets at that moment
    (HPAs followed through every create and delete, anyone's); the number of replica writes."""
    owned: dict[str, str] = {}  # HPA name -> the Deployment it scales
    checked = 0
    for request in list(emulator):
        if request.resource is None or request.subresource is not None:
            continue
        method = str(request.method.value)
        if request.resource.plural == "horizontalpodautoscalers":
            if method == "POST":
                owned[_target(request)] = request.data["spec"]["scaleTargetRef"]["name"]
            elif method == "DELETE":
                owned.pop(_target(request), None)
        elif (
            request.resource.plural == "deployments"
            and method in WRITES
            and _by_operator(request)
            and "replicas" in ((request.data or {}).get("spec") or {})
        ):
            checked += 1
            target = _target(request)
            assert target not in owned.values(), (
                f"the operator wrote replicas={request.data['spec']['replicas']} into {target}, "
                f"which HPA {next(h for h, d in owned.items() if d == target)} owns"
            )
    return checked


# --- helpers --------------------------------------------------------------------------------


def validated(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` as the operator wrote it, validated against Kubernetes' own schema (1.30)."""
    served = {k: v for k, v in obj.items() if k != "status"}
    served["metadata"] = {
        k: v
        for k, v in obj["metadata"].items()
        if k in ("name", "namespace", "labels", "ownerReferences", "annotations")
    }
    kubernetes_validate.validate(served, "1.30.0", strict=True)
    return obj


async def replicas_of(api: EmulatorApi, name: str) -> int | None:
    deployment = await api.get(DEPLOYMENTS, "default", name)
    return None if deployment is None else deployment["spec"].get("replicas")


async def replicas_become(api: EmulatorApi, name: str, count: int, within: float) -> float:
    """Wait until Deployment `name` asks for `count` replicas; when it was seen (monotonic)."""
    await eventually(lambda: _has(api, name, count), within=within, interval=0.1)
    return time.monotonic()


async def _has(api: EmulatorApi, name: str, count: int) -> bool:
    return await replicas_of(api, name) == count


async def replicas_stay(api: EmulatorApi, name: str, count: int, seconds: float) -> None:
    """Deployment `name` asks for `count` replicas at every look for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await replicas_of(api, name) == count, f"{name} changed from {count} replicas"
        await asyncio.sleep(0.2)


async def create_pods(
    api: EmulatorApi,
    make: Callable[[str, str], CraftedPod],
    md: dict[str, Any],
    count: int,
    prefix: str = "pod",
) -> list[CraftedPod]:
    """`count` Ready Pods of `md`'s revision, each with its crafted /metrics server; labelled
    as the revision's pod template labels them (`observe.owner_key` puts them in the
    operator's index by these)."""
    rev = revision(md)
    labels = {**instance_labels(parse_model_deployment(md)), REVISION_LABEL: rev}
    pods = []
    for index in range(count):
        pod = make(f"iris-{rev[:10]}-{prefix}{index}", rev)
        await api.create(
            PODS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": "default", "labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "weir:0.1.0",
                            "ports": [{"name": "http", "containerPort": SERVER_PORT}],
                        }
                    ]
                },
                "status": {
                    "phase": "Running",
                    "podIP": pod.ip,
                    "podIPs": [{"ip": pod.ip}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            },
        )
        pods.append(pod)
    return pods


async def scrape_round(pods: list[CraftedPod], within: float = 30.0) -> float:
    """Wait for a scrape round of the operator's (it scrapes a revision's pods all at once,
    then not again for `LoadMeter`'s 2 s) that covered every one of `pods` and has just
    ended; the time of its last scrape."""
    start = time.monotonic()

    def between_rounds() -> float | None:
        if not all(pod.scrapes for pod in pods):
            return None
        last = [pod.scrapes[-1][0] for pod in pods]
        one_round = min(last) > start and max(last) - min(last) < 0.5
        return max(last) if one_round and time.monotonic() - max(last) > 0.1 else None

    found: float = await eventually(between_rounds, within=within, interval=0.02)
    return found


async def set_load(pods: list[CraftedPod], *, rps: float = 0.0, in_flight: float = 0.0) -> float:
    """Right after a scrape round, the pods' load becomes `rps` / `in_flight` in all (shared
    evenly), from that round on: the operator's next window reads exactly the new load. The
    time of that round, which the operator's decisions on the old load are not older than."""
    scraped = await scrape_round(pods)
    for pod in pods:
        pod.set_load(rps / len(pods), in_flight / len(pods))
    return scraped


async def decided(api: EmulatorApi, count: int) -> dict[str, Any]:
    """status.autoscaler once it says `count` replicas (the Deployment is patched first)."""

    async def says() -> dict[str, Any] | None:
        found = (await status_of(api)).get("autoscaler") or {}
        print("status.autoscaler:", found)  # the last one is shown if the test fails
        return found if found.get("desiredReplicas") == count else None

    found: dict[str, Any] = await eventually(says, within=15, interval=0.2)
    return found


def reason(autoscaler: dict[str, Any]) -> tuple[float, str, int, str, str]:
    """The numbers of the autoscaler's reason: (load, unit, servers, target, verdict)."""
    found = re.fullmatch(
        r"(\d+\.\d) (requests/s|in flight) on (\d+) servers, target (\S+): (.+)",
        autoscaler["reason"],
    )
    assert found, autoscaler
    return float(found[1]), found[2], int(found[3]), found[4], found[5]


# --- cpu: an HPA owns the count --------------------------------------------------------------


@pytest.mark.usefixtures("deployment_controller", "operator")
async def test_cpu_renders_and_updates_an_hpa_and_the_operator_never_writes_its_replicas(
    emulator: WeirEmulator, emulator_api: EmulatorApi
) -> None:
    api = emulator_api
    autoscaling = {
        "metric": "cpu",
        "minReplicas": 2,
        "maxReplicas": 5,
        "target": 60,
        "scaleDownDelay": "90s",
    }
    created = await api.create(MD, manifest(autoscaling=autoscaling))
    name = f"iris-{revision(created)[:10]}"

    hpa = validated(await eventually(lambda: api.get(HPAS, "default", name), within=30))
    (owner,) = hpa["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "ModelDeployment",
        "iris",
        created["metadata"]["uid"],
    )
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": 2,
        "maxReplicas": 5,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 60},
                },
            }
        ],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 90}},
    }
    deployment = await eventually(lambda: api.get(DEPLOYMENTS, "default", name), within=10)
    assert "replicas" not in deployment["spec"], "the HPA owns the count"
    await eventually(lambda: status_of(api), within=10)

    # The HPA controller scales the Deployment (through the scale subresource on a real
    # cluster; the emulator has none, so a patch of spec.replicas): to its minimum, then up.
    for count in (2, 4):
        await api.patch(DEPLOYMENTS, "default", name, {"spec": {"replicas": count}})

        async def reported(count: int = count) -> dict[str, Any] | None:
            status = await status_of(api)
            good = status.get("replicas") == count and status.get("readyReplicas") == count
            return status if good and status.get("phase") == "Healthy" else None

        status = await eventually(reported, within=20, interval=0.2)
        assert status["readyText"] == f"{count}/{count}"
        assert "autoscaler" not in status, "Weir's own autoscaler is not in charge"
    await replicas_stay(api, name, 4, seconds=4)  # several reconciles: nothing reverts the HPA

    # The spec's bounds and target change: the HPA follows, the Deployment's count stays.
    changed = {"minReplicas": 3, "maxReplicas": 7, "target": 75, "scaleDownDelay": "2m"}
    await api.patch(MD, "default", "iris", {"spec": {"autoscaling": changed}})

    async def updated() -> dict[str, Any] | None:
        found = await api.get(HPAS, "default", name)
        return found if found and found["spec"]["maxReplicas"] == 7 else None

    hpa = validated(await eventually(updated, within=20, interval=0.2))
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 7)
    target = hpa["spec"]["metrics"][0]["resource"]["target"]
    assert target == {"type": "Utilization", "averageUtilization": 75}
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    await replicas_stay(api, name, 4, seconds=3)

    writes = deployment_writes(emulator, name)
    assert writes, "the operator created the Deployment"
    assert writes[0][0] == "POST", writes
    for method, body in writes:
        assert "replicas" not in (body.get("spec") or {}), f"{method} wrote replicas: {body}"
    scale_writes = [r for r in list(emulator) if _by_operator(r) and r.subresource == "scale"]
    assert not scale_writes, "nor does it write the count through the scale subresource"
    assert assert_one_owner(emulator) == 0

    # From cpu to rps: the HPA goes before the operator writes a count (here the HPA's 4,
    # clamped to the new maximum 3), never both owners at once.
    rps = {"metric": "rps", "target": 10, "minReplicas": 1, "maxReplicas": 3}
    await api.patch(MD, "default", "iris", {"spec": {"autoscaling": rps}})
    await replicas_become(api, name, 3, within=20)
    assert await api.get(HPAS, "default", name) is None
    assert assert_one_owner(emulator) >= 1
    assert replica_writes(emulator, name) == [3]


# --- Weir's own autoscaler: rps and concurrency ----------------------------------------------


def rps_autoscaling(delay: float) -> dict[str, Any]:
    """rps, 10 per server, 1 to 6 servers, down after `delay` seconds."""
    return {
        "metric": "rps",
        "target": 10,
        "minReplicas": 1,
        "maxReplicas": 6,
        "scaleDownDelay": f"{delay:g}s",
    }


async def create_autoscaled(
    api: EmulatorApi, autoscaling: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """The iris ModelDeployment with `autoscaling`, and its first revision's Deployment name."""
    created = await api.create(MD, manifest(autoscaling=autoscaling))
    return created, f"iris-{revision(created)[:10]}"


@pytest.mark.usefixtures("deployment_controller", "operator")
async def test_rps_scales_up_at_once_and_down_only_after_the_scale_down_delay(
    emulator: WeirEmulator,
    emulator_api: EmulatorApi,
    crafted: Callable[[str, str], CraftedPod],
) -> None:
    api = emulator_api
    delay = 10.0
    created, name = await create_autoscaled(api, rps_autoscaling(delay))
    await replicas_become(api, name, 1, within=30)  # the minimum, before any load is known
    pods = await create_pods(api, crafted, created, 3)

    await set_load(pods, rps=45)  # 15 requests/s on each of 3 servers
    up = time.monotonic()
    await replicas_become(api, name, 5, within=30)
    print(f"scaled up {time.monotonic() - up:.1f} s after the load came")

    # The window is timed by the operator's clock, the counters by the pods': a little
    # scheduling jitter moves the reading, never out of (40, 50], which means 5 servers.
    status = await decided(api, 5)
    assert reason(status) == (pytest.approx(45, rel=0.1), "requests/s", 3, "10", "scaling up")
    assert status["load"] == pytest.approx(reason(status)[0], abs=0.051)

    last_high = await set_load(pods, rps=0)  # the last window at 45 requests/s ends here
    down = await replicas_become(api, name, 1, within=delay + 30)
    print(f"scaled down {down - last_high:.1f} s after the last high window (delay {delay:g} s)")
    assert down - last_high >= delay, "servers removed before scaleDownDelay had passed"
    assert down - last_high < delay + 10, "scaled down long after scaleDownDelay"
    status = await decided(api, 1)
    assert status["reason"] == "0.0 requests/s on 3 servers, target 10: scaling down", status
    assert status["load"] == 0

    # Up once, down once, nothing in between; no HPA was ever involved.
    assert replica_writes(emulator, name) == [1, 5, 1]
    assert await api.get(HPAS, "default", name) is None
    assert assert_one_owner(emulator) == 3


@pytest.mark.usefixtures("deployment_controller", "operator")
async def test_missing_data_never_changes_the_count(
    emulator: WeirEmulator,
    emulator_api: EmulatorApi,
    crafted: Callable[[str, str], CraftedPod],
) -> None:
    api = emulator_api
    delay = 5.0
    created, name = await create_autoscaled(api, rps_autoscaling(delay))
    await replicas_become(api, name, 1, within=30)
    pods = await create_pods(api, crafted, created, 3)
    await set_load(pods, rps=45)
    await replicas_become(api, name, 5, within=30)

    # One pod's metrics stop answering: the two others alone (30 requests/s) would make 3
    # servers look enough, but a load that misses a server is no reason to remove any.
    await scrape_round(pods)
    pods[2].stop_answering()
    await replicas_stay(api, name, 5, seconds=2 * delay)
    await scrape_round(pods[:2])  # the operator kept measuring all along

    # No pods at all: nothing to measure, nothing done.
    for pod in pods:
        await api.delete(PODS, "default", pod.name)
        await asyncio.to_thread(pod.stop)  # the emulator serves on this loop: never block it
    await replicas_stay(api, name, 5, seconds=2 * delay)

    # Servers that answer again, idle: now the count goes down, after a whole delay.
    back = await create_pods(api, crafted, created, 2, prefix="again")
    await scrape_round(back)
    await replicas_become(api, name, 1, within=delay + 30)
    assert replica_writes(emulator, name) == [1, 5, 1]
    assert assert_one_owner(emulator) == 3


@pytest.mark.usefixtures("deployment_controller", "operator")
async def test_concurrency_follows_in_flight_requests_within_the_bounds(
    emulator: WeirEmulator,
    emulator_api: EmulatorApi,
    crafted: Callable[[str, str], CraftedPod],
) -> None:
    api = emulator_api
    autoscaling = {"metric": "concurrency", "target": 2, "minReplicas": 1, "maxReplicas": 4}
    created, name = await create_autoscaled(api, autoscaling)
    await replicas_become(api, name, 1, within=30)
    pods = await create_pods(api, crafted, created, 2)

    await set_load(pods, rps=20, in_flight=5)  # 2.5 requests in flight on each server
    await replicas_become(api, name, 3, within=30)
    status = await decided(api, 3)  # (4, 6] in flight
    assert reason(status) == (pytest.approx(5, rel=0.15), "in flight", 2, "2", "scaling up")

    await set_load(pods, rps=100, in_flight=40)  # 20 servers' worth: the maximum, 4
    await replicas_become(api, name, 4, within=30)
    await replicas_stay(api, name, 4, seconds=3)
    assert replica_writes(emulator, name) == [1, 3, 4]
    assert await api.get(HPAS, "default", name) is None
    assert assert_one_owner(emulator) == 3


# --- during a rollout: one owner per count -----------------------------------------------------


@pytest.mark.usefixtures("deployment_controller", "operator")
async def test_with_gateway_api_each_track_scales_on_its_own_load_during_a_rollout(
    emulator: WeirEmulator,
    emulator_api: EmulatorApi,
    crafted: Callable[[str, str], CraftedPod],
) -> None:
    api = emulator_api
    delay = 8.0
    spec: dict[str, Any] = {
        "autoscaling": rps_autoscaling(delay),
        "traffic": {"router": "gateway-api", "gateway": {"parentRefs": [{"name": "public"}]}},
        "rollout": {
            "steps": [{"setWeight": 50}, {"pause": {}}],  # then held at 50% until promoted
            "allowSignatureChange": True,  # the crafted pods serve /metrics only
            "analysis": {"interval": "2s", "minRequests": 1, "maxP99LatencyMs": 2000},
        },
    }
    first = await api.create(MD, manifest(version="7", **spec))
    stable = f"iris-{revision(first)[:10]}"
    await replicas_become(api, stable, 1, within=30)
    stable_pods = await create_pods(api, crafted, first, 2, prefix="s")
    await eventually(lambda: phase(api, "Healthy"), within=20)

    second = manifest(version="8", **spec)
    await api.patch(MD, "default", "iris", {"spec": {"model": second["spec"]["model"]}})
    canary = f"iris-{revision(second)[:10]}"
    await replicas_become(api, canary, 1, within=30)
    canary_pods = await create_pods(api, crafted, second, 2, prefix="c")

    async def weighted() -> dict[str, Any] | None:
        status = await status_of(api)
        return status if (status.get("canary") or {}).get("weight") == 50 else None

    await eventually(weighted, within=30, interval=0.2)

    # A slow canary: its half of the traffic keeps it busier than the stable's half. The
    # whole load (40 requests/s) asks for 4 servers, of which a 50% share would be 2 and 2;
    # each track's own load asks for 4 (canary, 35/s) and 1 (stable, 5/s).
    await set_load(stable_pods, rps=5)
    await set_load(canary_pods, rps=35)
    await replicas_become(api, canary, 4, within=30)
    await replicas_stay(api, stable, 1, seconds=3)
    assert replica_writes(emulator, stable) == [1], "the stable ran what its own load asks for"
    tracks = await eventually(lambda: track_counts(api, {stable: 1, canary: 4}), within=15)
    loads = {t["revision"]: t["load"] for t in tracks}
    assert loads[revision(first)] == pytest.approx(5, rel=0.15)
    assert loads[revision(second)] == pytest.approx(35, rel=0.15)
    route = await api.get(ROUTES, "default", "iris")
    assert route is not None
    weights = [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]]
    assert sorted(weights) == [50, 50], "the weights are the router's, the counts the tracks'"

    # The stable gets busy: up at once on its own load. The canary's load falls: after the
    # delay it goes down, but not below its weight's share of the whole (50/s: 5, half: 3).
    await set_load(stable_pods, rps=45)
    await replicas_become(api, stable, 5, within=30)
    last_high = await set_load(canary_pods, rps=5)
    down = await replicas_become(api, canary, 3, within=delay + 30)
    # The analysis scrapes these pods too: the round `set_load` waited for may have been its,
    # up to one load-meter interval (2 s) after the meter's last window at the high load.
    assert down - last_high >= delay - 2.5, "canary servers removed before scaleDownDelay"
    await replicas_stay(api, canary, 3, seconds=3)
    await eventually(lambda: track_counts(api, {stable: 5, canary: 1}), within=15)

    # Up on their own loads (a window that straddles a change of load may read a count in
    # between), the canary down once, to its share.
    stable_writes, canary_writes = (
        replica_writes(emulator, stable),
        replica_writes(emulator, canary),
    )
    assert (stable_writes[0], stable_writes[-1]) == (1, 5), stable_writes
    assert stable_writes == sorted(stable_writes), stable_writes
    assert (canary_writes[0], canary_writes[-2:]) == (1, [4, 3]), canary_writes
    assert canary_writes[:-1] == sorted(canary_writes[:-1]), canary_writes
    assert await api.get(HPAS, "default", stable) is None
    assert assert_one_owner(emulator) >= 5


async def track_counts(api: EmulatorApi, wanted: dict[str, int]) -> list[dict[str, Any]] | None:
    """status.autoscaler.tracks once each Deployment (by name) has the count wanted."""
    tracks = ((await status_of(api)).get("autoscaler") or {}).get("tracks") or []
    print("status.autoscaler.tracks:", tracks)
    found = {f"iris-{t['revision'][:10]}": t["desiredReplicas"] for t in tracks}
    return tracks if found == wanted else None


# --- cpu autoscaling during a rollout ---------------------------------------------------------


@pytest.mark.usefixtures("deployment_controller", "operator")
async def test_a_rollout_under_cpu_autoscaling_steps_the_canary_beside_the_hpas_count_and_promotes(
    emulator: WeirEmulator, emulator_api: EmulatorApi
) -> None:
    """The question of issue 18: with `metric: cpu`, who owns the two counts during a rollout?
    The stable's HPA keeps the stable's; the rollout owns the canary's (no HPA of its own until
    it is promoted), so the weight a step asks for and the canary's full size before promotion
    are the rollout's, not whatever two HPAs would do."""
    from tests.emulator.test_rollout import PrometheusStandIn, rollout_md

    api = emulator_api
    stand_in = PrometheusStandIn()  # every window passes: the steps are what is tested
    autoscaling = {"metric": "cpu", "minReplicas": 2, "maxReplicas": 6, "target": 60}

    def version(label: str) -> dict[str, Any]:
        md = rollout_md(label, stand_in.url, [{"setWeight": 25}, {"setWeight": 50}])
        del md["spec"]["replicas"]
        md["spec"]["autoscaling"] = autoscaling
        return md

    try:
        first = await api.create(MD, version("7"))
        old = f"iris-{revision(first)[:10]}"
        await eventually(lambda: api.get(HPAS, "default", old), within=30)
        await eventually(lambda: api.get(DEPLOYMENTS, "default", old), within=10)
        await api.patch(DEPLOYMENTS, "default", old, {"spec": {"replicas": 4}})  # the HPA's count
        await eventually(lambda: phase(api, "Healthy"), within=20)

        second = version("8")
        await api.patch(MD, "default", "iris", {"spec": {"model": second["spec"]["model"]}})
        new = f"iris-{revision(second)[:10]}"
        counts: list[int] = []
        weights: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = await status_of(api)
            canary = status.get("canary")
            if canary is None and (status.get("stable") or {}).get("revision") == revision(second):
                break
            if canary is not None:
                weights.append(canary["weight"])
                count = await replicas_of(api, new)
                if count is not None:
                    counts.append(count)
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"not promoted within 60 s: {await status_of(api)}")
    finally:
        stand_in.close()
    # Beside the stable's 4 servers: setWeight 25 is 1 canary server (an honest 20%), setWeight
    # 50 is 4 (50%); before promotion the canary runs the stable's whole count, 4.
    assert 20 in weights
    assert 50 in weights
    assert 25 not in weights, "the weight says what the servers give"
    assert counts[0] == 1
    assert max(counts) == 4
    assert counts == sorted(counts), "the canary grows step by step"
    hpa = await eventually(lambda: api.get(HPAS, "default", new), within=20)
    assert hpa["spec"]["scaleTargetRef"]["name"] == new, "the promoted revision's HPA takes over"
    # It came with the promotion: the operator's first status write after creating it is the
    # one that makes the new revision stable (children are applied before the status).
    requests = list(emulator)
    created = next(
        i for i, r in enumerate(requests)
        if r.resource is not None and r.resource.plural == "horizontalpodautoscalers"
        and str(r.method.value) == "POST" and _target(r) == new
    )  # fmt: skip
    written = next(
        r for r in requests[created:]
        if _by_operator(r) and r.resource is not None and r.resource.plural == "modeldeployments"
        and r.subresource == "status" and str(r.method.value) == "PATCH"
    )  # fmt: skip
    stable = ((written.data or {}).get("status") or {}).get("stable") or {}
    assert stable.get("revision") == revision(second), "no HPA while it was a canary"
    await eventually(lambda: _gone(api, HPAS, old), within=20)
    assert replica_writes(emulator, old) == [], "never a count the stable's HPA owns"
    assert assert_one_owner(emulator) >= 1


async def _gone(api: EmulatorApi, resource: str, name: str) -> bool:
    return await api.get(resource, "default", name) is None
