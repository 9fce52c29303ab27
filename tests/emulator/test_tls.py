"""TLS server pods and the operator (`spec.server.tls`), against the emulator: the CA that
verifies them is the `ca.crt` of their Secret, read through the API (`cluster/trust.py`), and
why it cannot be had is said in words (no such Secret, no ca.crt, not PEM, forbidden, an API
that does not answer: bounded). End to end, the real operator process runs a canary's sample
inference over HTTPS on a crafted TLS pod: with the wrong CA in the Secret the canary is held
with a `TLSNotVerified` event and the pod gets no request; once the Secret's ca.crt is right,
the check passes, verified and with the expected server name as SNI, and the canary is
promoted.

The test plays the Deployment controller (`deployment_controller`) and the kubelet: it creates
the canary's Pod as the operator rendered its template (labels, TLS annotations), Ready, at the
address of a small HTTPS server on a loopback address."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kmock
import kubernetes
import pytest

from tests.emulator.test_operator import DEPLOYMENTS, MD, manifest, revision, status_of
from tests.support.certs import Authority, ServerCert
from tests.support.emulator import EmulatorApi, WeirEmulator, eventually
from tests.support.operator_process import Operator
from weir_operator.cluster.kube import Kube
from weir_operator.cluster.trust import SecretTrust
from weir_operator.core.render import SERVER_PORT
from weir_operator.providers import TrustError

SECRETS = "v1/secrets"
PODS = "v1/pods"
# Pod addresses (the operator reaches a pod at its podIP, port 8080): a /24 of loopback that
# neither the control-plane tier's kubelet (127.0.0.N) nor test_autoscaling (127.0.71.N) uses.
ADDRESSES = [f"127.0.72.{n}" for n in range(1, 255)]
SECRET = "iris-tls"
SERVER_NAME = "iris.default.svc"  # spec.server.tls.serverName's default for iris in default
ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip


class TlsPod:
    """A server pod's HTTPS on <its loopback address>:8080: answers the V2 metadata, a sample inference and
    /metrics; records every request it got and the server name each client asked for."""

    def __init__(self, cert: ServerCert, folder: Path) -> None:
        cert_file, key_file, _ = cert.write(folder)
        self.requests: list[tuple[str, str]] = []
        self.server_names: list[str | None] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        pod = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                pod.requests.append(("GET", self.path))
                if self.path == "/v2/models/iris":
                    self.answer(
                        200, {"name": "iris", "versions": ["8"], "inputs": [], "outputs": []}
                    )
                else:
                    self.answer(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                pod.requests.append(("POST", self.path))
                if self.path == "/v2/models/iris/infer":
                    outputs = [{"name": "label", "shape": [1], "datatype": "INT64", "data": [0]}]
                    self.answer(200, {"model_name": "iris", "outputs": outputs})
                else:
                    self.answer(404, {"error": "not found"})

            def log_message(self, *_: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                # The handshake in the handler's thread: a client that refuses the certificate
                # must not hold up the accept loop.
                sock, address = self.socket.accept()
                return context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                ), address

            def finish_request(self, request: Any, client_address: Any) -> None:
                request.do_handshake()
                super().finish_request(request, client_address)

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # refused handshakes: what the test expects of a wrong CA

        for address in ADDRESSES:
            try:
                self.server = Server((address, SERVER_PORT), Handler)
                break
            except OSError:
                continue
        else:
            raise RuntimeError(f"no free loopback address for port {SERVER_PORT} in 127.0.72.0/24")
        self.ip = str(self.server.server_address[0])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join(5)
        self.server.server_close()


def secret(name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


@pytest.fixture
def authority() -> Authority:
    return Authority()


@pytest.fixture
def issued(authority: Authority) -> ServerCert:
    return authority.issue(SERVER_NAME)


@pytest.fixture
def tls_pod(issued: ServerCert, tmp_path: Path) -> Iterator[TlsPod]:
    pod = TlsPod(issued, tmp_path / "tls")
    yield pod
    pod.stop()


@pytest.fixture
def trust(k8s_client: kubernetes.client.ApiClient) -> SecretTrust:
    return SecretTrust(Kube(k8s_client))


class TestSecretTrust:
    async def test_the_ca_is_the_ca_crt_of_the_secret(
        self, emulator_api: EmulatorApi, trust: SecretTrust, issued: ServerCert
    ) -> None:
        await emulator_api.create(SECRETS, issued.secret(SECRET))
        assert await trust.ca_bundle("default", SECRET) == issued.ca.decode()

    async def test_why_there_is_no_ca_is_said(
        self, emulator_api: EmulatorApi, trust: SecretTrust, issued: ServerCert
    ) -> None:
        await emulator_api.create(SECRETS, secret("no-ca", {"tls.crt": issued.cert, "tls.key": issued.key}))  # fmt: skip
        await emulator_api.create(SECRETS, secret("not-pem", {"ca.crt": b"hello"}))
        not_ascii = secret("binary", {})
        not_ascii["data"]["ca.crt"] = base64.b64encode(b"\xff\xfe").decode()
        await emulator_api.create(SECRETS, not_ascii)
        cases = {
            "nope": "Secret default/nope does not exist (spec.server.tls.secretName)",
            "no-ca": "Secret default/no-ca has no ca.crt key (its keys: tls.crt, tls.key)",
            "not-pem": "Secret default/not-pem: ca.crt holds no PEM certificate",
            "binary": "Secret default/binary: ca.crt is not PEM text",
        }
        for name, expected in cases.items():
            with pytest.raises(TrustError) as raised:
                await trust.ca_bundle("default", name)
            assert expected in str(raised.value), name
            assert "\n" not in str(raised.value)
            assert "Traceback" not in str(raised.value)

    async def test_a_forbidden_read_names_the_missing_right(
        self, emulator: WeirEmulator, trust: SecretTrust
    ) -> None:
        message = (
            'secrets "iris-tls" is forbidden: User "system:serviceaccount:weir:weir" cannot get '
            'resource "secrets" in API group "" in the namespace "default"'
        )
        emulator["get", kmock.resource(SECRETS)] << kmock.KubernetesError(403, "Forbidden", message)
        with pytest.raises(TrustError) as raised:
            await trust.ca_bundle("default", SECRET)
        text = str(raised.value)
        assert text.startswith(
            "Secret default/iris-tls cannot be read: the operator is not allowed"
        )
        assert "403 Forbidden" in text
        assert 'cannot get resource "secrets"' in text

    async def test_an_api_that_does_not_answer_is_a_trust_error_in_bounded_time(self) -> None:
        with socket.socket() as silent:  # accepts connections (the backlog), never answers
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            configuration = kubernetes.client.Configuration()
            configuration.host = f"http://127.0.0.1:{silent.getsockname()[1]}"
            client = kubernetes.client.ApiClient(configuration)
            try:
                started = time.monotonic()
                with pytest.raises(TrustError, match="cannot be read: the API did not answer"):
                    await SecretTrust(Kube(client), timeout=0.5).ca_bundle("default", SECRET)
                assert time.monotonic() - started < 3
            finally:
                await asyncio.to_thread(client.close)


def tls_md(version: str) -> dict[str, Any]:
    return manifest(
        version=version,
        server={"tls": {"secretName": SECRET}, "sampleInput": ROW},
        # The canary is promoted once its pre-traffic checks pass (the sample inference; no
        # stable server here to compare signatures with).
        rollout={"steps": [], "allowSignatureChange": True},
    )


async def create_canary_pod(api: EmulatorApi, deployment: str, ip: str) -> None:
    """The Deployment's pod, as a kubelet runs it: its template's labels and annotations, Ready
    at `ip`."""
    found = await api.get(DEPLOYMENTS, "default", deployment)
    assert found is not None
    template = found["spec"]["template"]["metadata"]
    await api.create(
        PODS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{deployment}-0",
                "namespace": "default",
                "labels": template["labels"],
                "annotations": template["annotations"],
            },
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
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        },
    )


async def warnings(api: EmulatorApi, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in await api.list("v1/events", "default")
        if e.get("reason") == reason and e.get("involvedObject", {}).get("name") == "iris"
    ]


@pytest.mark.usefixtures("deployment_controller")
async def test_the_operator_verifies_a_tls_canary_with_the_ca_of_its_secret(
    emulator: WeirEmulator,
    emulator_api: EmulatorApi,
    operator: Operator,
    issued: ServerCert,
    tls_pod: TlsPod,
) -> None:
    api = emulator_api
    wrong = Authority("not-the-issuer").pem
    await api.create(SECRETS, secret(SECRET, {"tls.crt": issued.cert, "tls.key": issued.key, "ca.crt": wrong}))  # fmt: skip
    first = await api.create(MD, tls_md("7"))

    async def healthy_at(rev: str) -> dict[str, Any] | None:
        status = await status_of(api)
        stable = (status.get("stable") or {}).get("revision")
        return status if stable == rev and status.get("phase") == "Healthy" else None

    await eventually(lambda: healthy_at(revision(first)), within=30)
    second = tls_md("8")
    await api.patch(MD, "default", "iris", {"spec": {"model": second["spec"]["model"]}})
    new = revision(second)
    canary_deployment = f"iris-{new[:10]}"
    await eventually(lambda: api.get(DEPLOYMENTS, "default", canary_deployment), within=20)
    await create_canary_pod(api, canary_deployment, tls_pod.ip)

    # The wrong CA: the check cannot be run, which is said once, and the canary waits.
    [event] = await eventually(lambda: warnings(api, "TLSNotVerified"), within=30)
    assert event["type"] == "Warning"
    assert "pre-traffic check sampleInput cannot trust a server" in event["message"]
    assert f"Secret default/{SECRET}" in event["message"]
    assert SERVER_NAME in event["message"]
    await asyncio.sleep(2)
    status = await status_of(api)
    assert (status.get("canary") or {}).get("revision") == new
    assert status["stable"]["revision"] == revision(first), "not promoted unverified"
    assert tls_pod.requests == [], "no request reached the pod over an unverified connection"
    assert SERVER_NAME in tls_pod.server_names, "the operator did knock, with the server name"

    # The Secret's ca.crt is made right (as a rotation would): picked up, verified, promoted.
    ca = base64.b64encode(issued.ca).decode()
    await api.patch(SECRETS, "default", SECRET, {"data": {"ca.crt": ca}})
    await eventually(lambda: healthy_at(new), within=40)
    assert ("POST", "/v2/models/iris/infer") in tls_pod.requests
    assert set(tls_pod.server_names) == {SERVER_NAME}
    reads = [
        r
        for r in list(emulator)
        if r.method.value == "GET"
        and r.url.path == f"/api/v1/namespaces/default/secrets/{SECRET}"
        and not {k.lower(): v for k, v in r.headers.items()}.get("user-agent", "").startswith(
            "kmock/"
        )
    ]
    assert 2 <= len(reads) <= 12, f"read when needed, not per request: {len(reads)} reads"
