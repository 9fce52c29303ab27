"""A test kubelet (test support, not product): it makes the pods of Weir's Deployments real.

The control plane has no scheduler and no kubelet. This one binds every Weir server pod to one
fake Node and runs its containers as local processes: the `fetch-model` init container, then
`weir serve`, each pod on its own loopback address (127.0.0.N, so every pod keeps port 8080).
It reports what a real kubelet would: `podIP`, the Ready condition from the server's real
readiness probe, init and container states with exit codes, termination messages (from the
log, as `FallbackToLogsOnError` says), restarts with a CrashLoopBackOff back-off. A pod being
deleted gets its preStop sleep and SIGTERM, then is removed. So the operator's pod scrapes and
the traffic a test sends reach real servers.

What a container image would hold is mapped onto this machine: the image's entry point `weir`
is `python -m weir_operator.cli`; emptyDir volumes are folders; the mount paths in a
container's arguments point into them; `--host` becomes the pod's address; env values from
Secrets and ConfigMaps (valueFrom, envFrom with a prefix) are read from the API."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import kubernetes
from kubernetes.client.rest import ApiException

from tests.support.processes import die_with_parent

NODE = "weir-test-node"
SELECTOR = "app.kubernetes.io/managed-by=weir"
CONTAINER_PORT = 8080
TERMINATION_MESSAGE_BYTES = 4096
BACKOFF_START, BACKOFF_MAX = 1.0, 10.0  # a real kubelet: 10 s doubling to 300 s
POLL_SECONDS = 0.25
CONFIG_MAP_SECONDS = 1.0
SERVICE_URL = re.compile(r"(https?)://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local(?::\d+)?")


def now_text() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class Container:
    """One container of a pod: its process, its state as a kubelet reports it."""

    spec: dict[str, Any]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: str | None = None
    ready: bool = False
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "PodInitializing"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    retry_at: float = 0.0
    succeeded: bool = False

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def status(self, init: bool) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.succeeded if init else self.ready,
            "restartCount": self.restarts,
            "started": self.process is not None and self.process.poll() is None,
            "state": self.state,
            "lastState": self.last_state,
        }

    def termination_message(self) -> str:
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        return data[-TERMINATION_MESSAGE_BYTES:].decode(errors="replace")


@dataclass
class Pod:
    """A pod being run: its address, folders and containers."""

    namespace: str
    name: str
    uid: str
    address: str
    root: Path
    spec: dict[str, Any]
    init: list[Container]
    main: list[Container]
    started_at: str = field(default_factory=now_text)
    terminating: threading.Thread | None = None
    terminated: bool = False
    reported: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    volumes_synced_at: float = 0.0

    def volume_dir(self, name: str) -> Path:
        folder = self.root / "volumes" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class LoopbackKubelet:
    """Runs Weir's server pods as local processes; `start()` / `stop()` from the test's side."""

    def __init__(self, kubeconfig: Path, root: Path) -> None:
        self.client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.root = root
        self.pods: dict[str, Pod] = {}
        self.free_addresses = [f"127.0.0.{n}" for n in range(2, 255)]
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-kubelet", daemon=True)
        self._http = httpx.Client(timeout=1.0)
        self._https = httpx.Client(timeout=1.0, verify=False)

    # --- life cycle --------------------------------------------------------------------------

    def start(self) -> LoopbackKubelet:
        self._register_node()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        for pod in list(self.pods.values()):
            self._kill(pod, grace=5.0)
        self._http.close()
        self._https.close()
        self.client.close()

    def pod_address(self, namespace: str, name: str) -> str | None:
        pod = next(
            (p for p in self.pods.values() if (p.namespace, p.name) == (namespace, name)), None
        )
        return pod.address if pod else None

    def crash(self, namespace: str, name: str, container: str) -> bool:
        """SIGKILL one container's process, as an out-of-memory kill would; False if not running."""
        for pod in self.pods.values():
            if (pod.namespace, pod.name) != (namespace, name):
                continue
            for running in pod.main:
                if running.name == container and running.process is not None:
                    os.killpg(running.process.pid, signal.SIGKILL)
                    return True
        return False

    def _register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        }
        try:
            self.core.create_node(node)
        except ApiException as error:
            if error.status != 409:
                raise
        conditions = [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test kubelet",
             "lastHeartbeatTime": now_text(), "lastTransitionTime": now_text()},
        ]  # fmt: skip
        status = {
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250"},
        }
        self.core.patch_node_status(NODE, {"status": status})

    # --- the loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as error:  # keep going; the test sees the errors
                self.errors.append(f"{type(error).__name__}: {error}")
                if len(self.errors) > 1000:
                    del self.errors[:500]
            self._stop.wait(POLL_SECONDS)

    def _sync(self) -> None:
        response = self.core.list_pod_for_all_namespaces(
            label_selector=SELECTOR, _preload_content=False
        )
        seen: set[str] = set()
        for item in json.loads(response.data)["items"]:
            meta, spec = item["metadata"], item["spec"]
            uid = meta["uid"]
            seen.add(uid)
            if not spec.get("nodeName"):
                if not meta.get("deletionTimestamp"):
                    self._bind(meta)
                continue
            if spec["nodeName"] != NODE:
                continue
            pod = self.pods.get(uid) or self._admit(item)
            if meta.get("deletionTimestamp"):
                self._terminate(pod, spec)
            else:
                self._step(pod)
            self._report(pod)
        for uid in set(self.pods) - seen:
            pod = self.pods.pop(uid)
            self._kill(pod, grace=5.0)
            self.free_addresses.append(pod.address)

    def _bind(self, meta: dict[str, Any]) -> None:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
        }
        try:
            self.core.create_namespaced_pod_binding(
                meta["name"], meta["namespace"], binding, _preload_content=False
            )
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    def _admit(self, item: dict[str, Any]) -> Pod:
        meta, spec = item["metadata"], item["spec"]
        root = self.root / f"{meta['namespace']}_{meta['name']}"
        root.mkdir(parents=True, exist_ok=True)

        def containers(key: str) -> list[Container]:
            return [Container(c, root / f"{c['name']}.log") for c in spec.get(key) or []]

        pod = Pod(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            address=self.free_addresses.pop(0),
            root=root,
            spec=spec,
            init=containers("initContainers"),
            main=containers("containers"),
            labels=dict(meta.get("labels") or {}),
        )
        self.pods[pod.uid] = pod
        return pod

    # --- running containers ------------------------------------------------------------------

    def _sync_config_maps(self, pod: Pod) -> None:
        """configMap and secret volumes hold the object's keys as files, refreshed every second
        (a real kubelet: within its sync period); an optional one that is absent is empty. A
        Service URL in them (`http://svc.ns.svc.cluster.local:80`) becomes the address of a
        ready pod the Service selects: there is no kube-proxy here."""
        if time.monotonic() - pod.volumes_synced_at < CONFIG_MAP_SECONDS:
            return
        pod.volumes_synced_at = time.monotonic()
        for volume in pod.spec.get("volumes") or []:
            if "secret" in volume:
                data = self._source_data("secret", pod.namespace, volume["secret"]["secretName"])
            elif "configMap" in volume:
                data = self._source_data("configmap", pod.namespace, volume["configMap"]["name"])
            else:
                continue
            folder = pod.volume_dir(volume["name"])
            wanted = {k: self._resolve_services(v, pod.namespace) for k, v in (data or {}).items()}
            for path in folder.iterdir():
                if path.name not in wanted:
                    path.unlink()
            for key, text in wanted.items():
                path = folder / key
                if not path.exists() or path.read_text() != text:
                    aside = folder / f".{key}.tmp"
                    aside.write_text(text)
                    aside.replace(path)

    def _resolve_services(self, text: str, namespace: str) -> str:
        def pod_of(match: re.Match[str]) -> str:
            scheme, service, service_namespace = match.group(1), match.group(2), match.group(3)
            try:
                found = self.core.read_namespaced_service(service, service_namespace)
            except ApiException:
                return match.group(0)
            selector = found.spec.selector or {}
            for pod in self.pods.values():
                labels = pod.labels
                ready = any(c.ready for c in pod.main)
                if ready and all(labels.get(k) == v for k, v in selector.items()):
                    return f"{scheme}://{pod.address}:{CONTAINER_PORT}"
            return match.group(0)

        return SERVICE_URL.sub(pod_of, text)

    def _step(self, pod: Pod) -> None:
        self._sync_config_maps(pod)
        for container in pod.init:
            if container.succeeded:
                continue
            self._drive(pod, container, init=True)
            if not container.succeeded:
                return  # init containers run one at a time, in order
        for container in pod.main:
            self._drive(pod, container, init=False)
            if container.process is not None and container.process.poll() is None:
                container.ready = self._probe(pod, container)

    def _drive(self, pod: Pod, container: Container, init: bool) -> None:
        process = container.process
        if process is None:
            if time.monotonic() >= container.retry_at:
                self._launch(pod, container)
            return
        code = process.poll()
        if code is None:
            return
        container.process = None
        container.ready = False
        if code < 0:  # killed by a signal: container runtimes report 128 + the signal
            code = 128 - code
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": now_text(),
        }
        policy = container.spec.get("terminationMessagePolicy", "File")
        if code != 0 and policy == "FallbackToLogsOnError":
            terminated["message"] = container.termination_message()
        if init and code == 0:
            container.succeeded = True
            container.state = {"terminated": terminated}
            return
        # Restart policy Always: back off, doubling, as CrashLoopBackOff.
        container.last_state = {"terminated": terminated}
        delay = min(BACKOFF_START * 2**container.restarts, BACKOFF_MAX)
        container.restarts += 1
        container.retry_at = time.monotonic() + delay
        container.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.0f}s restarting failed container={container.name}",
            }
        }

    def _launch(self, pod: Pod, container: Container) -> None:
        spec = container.spec
        mounts = {m["mountPath"]: pod.volume_dir(m["name"]) for m in spec.get("volumeMounts") or []}
        args = [_map_path(a, mounts) for a in [*(spec.get("command") or []), *spec.get("args", [])]]
        args = _with_host(args, pod.address)
        env = {**os.environ}
        for source in spec.get("envFrom") or []:
            env.update(self._env_from(pod.namespace, source))
        for variable in spec.get("env") or []:
            found = self._env_value(pod.namespace, variable)
            if found is not None:
                env[variable["name"]] = found
        if "/tmp" in mounts:
            env["TMPDIR"] = str(mounts["/tmp"])
        log = container.log_path.open("ab")
        container.process = subprocess.Popen(
            [sys.executable, "-m", "weir_operator.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=pod.root,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.close()
        container.started_at = now_text()
        container.state = {"running": {"startedAt": container.started_at}}

    def _source_data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's (decoded) or a ConfigMap's data; None when there is none."""
        try:
            if kind == "secret":
                found = self.core.read_namespaced_secret(name, namespace)
                return {k: base64.b64decode(v).decode() for k, v in (found.data or {}).items()}
            return dict(self.core.read_namespaced_config_map(name, namespace).data or {})
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _env_value(self, namespace: str, variable: dict[str, Any]) -> str | None:
        """A variable's value as a kubelet resolves it: `value`, or a key of a Secret or
        ConfigMap (None: an optional key that is absent)."""
        source = variable.get("valueFrom")
        if source is None:
            return str(variable.get("value", ""))
        for kind, field_name in (("secret", "secretKeyRef"), ("configmap", "configMapKeyRef")):
            ref = source.get(field_name)
            if ref is None:
                continue
            data = self._source_data(kind, namespace, ref["name"]) or {}
            if ref["key"] not in data and not ref.get("optional"):
                raise ApiException(
                    status=404, reason=f"{kind} {ref['name']} has no key {ref['key']}"
                )
            return data.get(ref["key"])
        return None  # fieldRef / resourceFieldRef: not needed by Weir's pods here

    def _env_from(self, namespace: str, source: dict[str, Any]) -> dict[str, str]:
        prefix = source.get("prefix", "")
        for kind, field_name in (("secret", "secretRef"), ("configmap", "configMapRef")):
            ref = source.get(field_name)
            if ref is not None:
                data = self._source_data(kind, namespace, ref["name"]) or {}
                return {prefix + k: v for k, v in data.items()}
        return {}

    def _probe(self, pod: Pod, container: Container) -> bool:
        probe = (container.spec.get("readinessProbe") or {}).get("httpGet")
        if probe is None:
            return True
        # HTTPS as a kubelet probes it: encrypted, the certificate not verified.
        scheme = "https" if probe.get("scheme") == "HTTPS" else "http"
        client = self._https if scheme == "https" else self._http
        try:
            response = client.get(f"{scheme}://{pod.address}:{CONTAINER_PORT}{probe['path']}")
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 400

    def _terminate(self, pod: Pod, spec: dict[str, Any]) -> None:
        """preStop, SIGTERM, wait up to the grace period, then remove the pod (in a thread, so
        other pods keep being served)."""
        if pod.terminated:
            self._delete(pod)
            return
        if pod.terminating is None:
            grace = float(spec.get("terminationGracePeriodSeconds", 30))
            pod.terminating = threading.Thread(
                target=self._shut_down, args=(pod, grace), name=f"terminate-{pod.name}", daemon=True
            )
            pod.terminating.start()

    def _shut_down(self, pod: Pod, grace: float) -> None:
        began = time.monotonic()
        for container in pod.main:
            pre_stop = ((container.spec.get("lifecycle") or {}).get("preStop") or {}).get("sleep")
            if pre_stop and container.process is not None:
                time.sleep(min(float(pre_stop["seconds"]), grace))
        self._kill(pod, grace=max(grace - (time.monotonic() - began), 1.0))
        pod.terminated = True

    def _kill(self, pod: Pod, grace: float) -> None:
        running = [c for c in pod.init + pod.main if c.process is not None]
        for container in running:
            if container.process is not None and container.process.poll() is None:
                container.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for container in running:
            process = container.process
            if process is None:
                continue
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
            container.ready = False

    def _delete(self, pod: Pod) -> None:
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": pod.uid}}
        try:
            self.core.delete_namespaced_pod(pod.name, pod.namespace, body=options)
        except ApiException as error:
            if error.status not in (404, 409):
                raise

    # --- status ------------------------------------------------------------------------------

    def _report(self, pod: Pod) -> None:
        status = self._status(pod)
        comparable = _without_times(status)
        if comparable == pod.reported:
            return
        try:
            self.core.patch_namespaced_pod_status(pod.name, pod.namespace, {"status": status})
        except ApiException as error:
            if error.status == 404:
                return
            raise
        pod.reported = comparable

    def _status(self, pod: Pod) -> dict[str, Any]:
        initialized = all(c.succeeded for c in pod.init)
        ready = initialized and all(c.ready for c in pod.main) and not pod.terminating
        running = initialized and all(c.process is not None for c in pod.main)

        def condition(kind: str, value: bool) -> dict[str, Any]:
            previous = next(
                (c for c in pod.reported.get("conditions", []) if c["type"] == kind), None
            )
            text = "True" if value else "False"
            changed = previous is None or previous["status"] != text
            return {
                "type": kind,
                "status": text,
                "lastProbeTime": None,
                "lastTransitionTime": now_text() if changed else previous.get("at", now_text()),
            }

        return {
            "phase": "Running" if running else "Pending",
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": pod.address,
            "podIPs": [{"ip": pod.address}],
            "startTime": pod.started_at,
            "conditions": [
                condition("PodScheduled", True),
                condition("Initialized", initialized),
                condition("ContainersReady", ready),
                condition("Ready", ready),
            ],
            "initContainerStatuses": [c.status(init=True) for c in pod.init],
            "containerStatuses": [c.status(init=False) for c in pod.main],
        }


def _map_path(argument: str, mounts: dict[str, Path]) -> str:
    for mount_path, folder in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if argument == mount_path or argument.startswith(mount_path.rstrip("/") + "/"):
            return str(folder) + argument[len(mount_path.rstrip("/")) :]
    return argument


def _with_host(args: list[str], address: str) -> list[str]:
    """`--host X` (or `--host=X`) becomes the pod's address."""
    out: list[str] = []
    skip = False
    for argument in args:
        if skip:
            out.append(address)
            skip = False
        elif argument == "--host":
            out.append(argument)
            skip = True
        elif argument.startswith("--host="):
            out.append(f"--host={address}")
        else:
            out.append(argument)
    return out


def _without_times(status: dict[str, Any]) -> dict[str, Any]:
    """The status minus timestamps, to patch only when something a reader cares about changed;
    conditions keep their transition times under "at" so they survive the next report."""
    conditions = [
        {"type": c["type"], "status": c["status"], "at": c["lastTransitionTime"]}
        for c in status["conditions"]
    ]
    rest = {k: v for k, v in status.items() if k != "conditions"}
    return {**rest, "conditions": conditions}
