"""The Helm chart (charts/weir), checked with a real Helm 3.17.2.

Helm comes from hack/helm.py (a pinned, checksum-verified binary in .cache/helm/); if it cannot
be obtained the tests fail, they do not skip. Each values file in tests/chart/values/ is linted
and rendered, and every rendered object is validated against Kubernetes 1.30's OpenAPI schemas.
The rendered pod security, RBAC (against permissions.RULES), CRD copy and operator arguments
are checked against their sources, not against constants repeated here."""

from __future__ import annotations

import argparse
import copy
import itertools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.helm import HELM_TIMEOUT_S, helm, helm_path
from weir_operator.cluster.permissions import RULES

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "weir"
VALUES_DIR = Path(__file__).parent / "values"
VALUES_FILES = sorted(VALUES_DIR.glob("*.yaml"))
KUBE_VERSION = "1.30.0"
NAMESPACE = "weir-system"
RELEASE = "weir"

# The download in hack/helm.py is bounded by its own timeout; everything else takes seconds.
pytestmark = pytest.mark.timeout(420)

Triple = tuple[str, str, str]
Manifest = dict[str, Any]

# Resources that are not namespaced, so only a ClusterRole can grant them.
CLUSTER_SCOPED = {
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("kopf.dev", "clusterkopfpeerings"),
    ("", "namespaces"),
}
RULE_TRIPLES: set[Triple] = {(g, r, v) for g, r, verbs in RULES for v in verbs}
STANDARD_LABELS = (
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)


# --- Helm ---------------------------------------------------------------------------------------


def template_args(values: Path | None, *sets: str, chart: Path = CHART) -> list[str | Path]:
    args: list[str | Path] = [
        "template",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ]
    if values is not None:
        args += ["--values", values]
    for s in sets:
        args += ["--set", s]
    return args


def render(values: Path | None = None, *sets: str, chart: Path = CHART) -> list[Manifest]:
    out = helm(*template_args(values, *sets, chart=chart)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]


@cache
def rendered(values_name: str) -> tuple[Manifest, ...]:
    return tuple(render(VALUES_DIR / values_name))


def effective_values(values_name: str) -> dict[str, Any]:
    """The chart's values.yaml with the test values file merged over it, as Helm merges them."""

    def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(base)
        for k, v in override.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return merge(defaults, yaml.safe_load((VALUES_DIR / values_name).read_text()) or {})


def app_version() -> str:
    return str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])


def of_kind(objects: tuple[Manifest, ...] | list[Manifest], kind: str) -> list[Manifest]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: tuple[Manifest, ...] | list[Manifest], kind: str) -> Manifest:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def operator_container(objects: tuple[Manifest, ...] | list[Manifest]) -> Manifest:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


def triples(rules: list[Manifest]) -> Iterator[Triple]:
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule  # no resourceNames/URLs
        yield from itertools.product(rule["apiGroups"], rule["resources"], rule["verbs"])


VALUES_IDS = [p.name for p in VALUES_FILES]


def test_values_files_cover_the_modes() -> None:
    values = {p.name: effective_values(p.name) for p in VALUES_FILES}
    assert len(values) >= 3
    assert any(not v["watchNamespaces"] for v in values.values())
    assert any(len(v["watchNamespaces"]) >= 2 for v in values.values())
    assert any(
        v["metrics"]["serviceMonitor"]["enabled"] and v["replicaCount"] >= 2 and v["serverImage"]
        for v in values.values()
    )


# --- lint and render ----------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=VALUES_IDS)
def test_helm_lint_strict(values: Path) -> None:
    proc = helm(
        "lint", "--strict", CHART, "--values", values, "--namespace", NAMESPACE,
        "--kube-version", KUBE_VERSION, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout
    assert "[ERROR]" not in proc.stdout


@pytest.mark.parametrize("values", VALUES_FILES, ids=VALUES_IDS)
def test_rendered_objects_validate_against_kubernetes_schemas(values: Path) -> None:
    objects = rendered(values.name)
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "ServiceAccount", "Service", "ClusterRole", "ClusterRoleBinding"} <= kinds
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "duplicate objects"
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert all(label in labels for label in STANDARD_LABELS), (obj["kind"], labels)
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] == "ServiceMonitor":
            continue  # a prometheus-operator CRD: its shape is checked below
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {e}")


@pytest.mark.parametrize("values", VALUES_FILES, ids=VALUES_IDS)
def test_service_monitor_scrapes_the_metrics_service(values: Path) -> None:
    objects = rendered(values.name)
    expected = effective_values(values.name)["metrics"]["serviceMonitor"]
    monitors = of_kind(objects, "ServiceMonitor")
    if not expected["enabled"]:
        assert monitors == []
        return
    [monitor] = monitors
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert expected["labels"].items() <= monitor["metadata"]["labels"].items()
    spec = monitor["spec"]
    assert set(spec) == {"selector", "namespaceSelector", "endpoints"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = spec["endpoints"]
    assert endpoint == {
        "port": "metrics",
        "path": "/metrics",
        "scheme": "http",
        "interval": expected["interval"],
        "scrapeTimeout": expected["scrapeTimeout"],
    }
    # The selector picks exactly the metrics Service, and its port is the one named there.
    matching = [
        s
        for s in of_kind(objects, "Service")
        if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert len(matching) == 1
    assert "metrics" in {p["name"] for p in matching[0]["spec"]["ports"]}


@pytest.mark.parametrize("values", VALUES_FILES, ids=VALUES_IDS)
def test_metrics_service_and_probes_reach_the_operator_ports(values: Path) -> None:
    objects = rendered(values.name)
    expected = effective_values(values.name)
    pod = one(objects, "Deployment")["spec"]["template"]
    container = operator_container(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "metrics": expected["metrics"]["port"],
        "liveness": expected["liveness"]["port"],
    }

    [service] = of_kind(objects, "Service")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [service_port] = service["spec"]["ports"]
    assert service_port["port"] == expected["metrics"]["port"]
    assert service_port["targetPort"] == "metrics"

    for probe in ("startupProbe", "livenessProbe"):
        http = container[probe]["httpGet"]
        assert http["path"] == "/healthz"
        assert ports[http["port"]] == expected["liveness"]["port"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == expected["replicaCount"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    assert container["resources"] == expected["resources"]
    assert container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]


# --- pod security -------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=VALUES_IDS)
def test_pod_security_is_restricted(values: Path) -> None:
    """The Pod Security Standard "restricted" (v1.30), plus the image's numeric user."""
    pod = one(rendered(values.name), "Deployment")["spec"]["template"]["spec"]
    pod_sc = pod.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        assert not pod.get(key), key
    for volume in pod.get("volumes", []):
        assert set(volume) - {"name"} <= {
            "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
            "persistentVolumeClaim", "projected", "secret",
        }, volume  # fmt: skip
    containers = pod["containers"] + pod.get("initContainers", [])
    for c in containers:
        sc = c.get("securityContext", {})

        def effective(key: str, sc: dict[str, Any] = sc) -> Any:
            return sc.get(key, pod_sc.get(key))

        assert effective("runAsNonRoot") is True
        assert effective("runAsUser") == 10001
        assert effective("runAsGroup") == 10001
        assert effective("seccompProfile") == {"type": "RuntimeDefault"}
        assert sc.get("allowPrivilegeEscalation") is False
        assert sc.get("privileged", False) is False
        assert sc.get("readOnlyRootFilesystem") is True
        assert "ALL" in sc["capabilities"]["drop"]
        assert not sc["capabilities"].get("add")
        assert all("hostPort" not in p for p in c.get("ports", []))
    # The read-only root filesystem still leaves a writable, bounded /tmp.
    [tmp] = [m for m in containers[0]["volumeMounts"] if m["mountPath"] == "/tmp"]
    [volume] = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert volume["emptyDir"]["sizeLimit"]


def test_security_context_keys_can_be_overridden() -> None:
    objects = render(
        None, "securityContext.readOnlyRootFilesystem=false", "podSecurityContext.fsGroup=2000"
    )
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 2000
    assert pod["securityContext"]["runAsNonRoot"] is True  # other defaults stay
    sc = operator_container(objects)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}


# --- RBAC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=VALUES_IDS)
def test_rbac_grants_exactly_the_operator_permissions(values: Path) -> None:
    objects = operator_rbac(rendered(values.name))
    watched = effective_values(values.name)["watchNamespaces"]
    [cluster_role] = of_kind(objects, "ClusterRole")
    roles = of_kind(objects, "Role")
    cluster_triples = set(triples(cluster_role["rules"]))
    role_triples = {r["metadata"]["namespace"]: set(triples(r["rules"])) for r in roles}

    assert cluster_triples | set().union(*role_triples.values()) == RULE_TRIPLES
    granted = cluster_triples.union(*role_triples.values())
    assert all("*" not in t for t in granted)
    if watched:
        assert sorted(role_triples) == sorted(watched)
        assert {(g, r) for g, r, _ in cluster_triples} == CLUSTER_SCOPED
        assert cluster_triples == {t for t in RULE_TRIPLES if t[:2] in CLUSTER_SCOPED}
        for namespace, granted_there in role_triples.items():
            assert granted_there == {t for t in RULE_TRIPLES if t[:2] not in CLUSTER_SCOPED}, (
                namespace
            )
    else:
        assert roles == []
        assert cluster_triples == RULE_TRIPLES

    # Every role is bound, only to the operator's ServiceAccount, and nothing else is bound.
    service_account = one(objects, "ServiceAccount")
    subject = {
        "kind": "ServiceAccount",
        "name": service_account["metadata"]["name"],
        "namespace": NAMESPACE,
    }
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == subject["name"]
    bindings = of_kind(objects, "ClusterRoleBinding") + of_kind(objects, "RoleBinding")
    bound = set()
    for binding in bindings:
        assert binding["subjects"] == [subject]
        ref = binding["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        assert ref["name"] not in {"cluster-admin", "admin", "edit"}
        bound.add((ref["kind"], binding["metadata"].get("namespace"), ref["name"]))
    declared = {
        (r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"])
        for r in [cluster_role, *roles]
    }
    assert bound == declared


def operator_rbac(objects: tuple[Manifest, ...]) -> list[Manifest]:
    """The chart's objects without the roles for people (templates/user-roles.yaml)."""
    return [o for o in objects if "serving.weir.dev/user-role" not in o["metadata"]["labels"]]


class TestUserRoles:
    def test_view_edit_and_rollouts_aggregate_into_kubernetes_own_roles(self) -> None:
        roles = {
            r["metadata"]["name"]: r
            for r in of_kind(rendered("defaults.yaml"), "ClusterRole")
            if "serving.weir.dev/user-role" in r["metadata"]["labels"]
        }
        assert set(roles) == {"weir-view", "weir-edit", "weir-rollouts"}

        def aggregated(name: str) -> set[str]:
            labels = roles[name]["metadata"]["labels"]
            prefix = "rbac.authorization.k8s.io/aggregate-to-"
            return {k.removeprefix(prefix) for k, v in labels.items() if k.startswith(prefix)}

        assert aggregated("weir-view") == {"view", "edit", "admin"}
        assert aggregated("weir-edit") == aggregated("weir-rollouts") == {"edit", "admin"}
        view = set(triples(roles["weir-view"]["rules"]))
        assert {v for _, _, v in view} == {"get", "list", "watch"}, "view only reads"
        steer = set(triples(roles["weir-rollouts"]["rules"]))
        assert ("serving.weir.dev", "modeldeployments", "patch") in steer
        assert ("authentication.k8s.io", "selfsubjectreviews", "create") in steer
        assert not any(
            v in {"create", "delete", "update"} for g, _, v in steer if g != "authentication.k8s.io"
        )
        for role in roles.values():
            kubernetes_validate.validate(role, KUBE_VERSION, strict=True)
        bindings = of_kind(rendered("defaults.yaml"), "ClusterRoleBinding")
        assert not any(b["roleRef"]["name"] in roles for b in bindings), "bound by you, not us"

    def test_can_be_left_out(self) -> None:
        objects = render(None, "userRoles.create=false")
        assert not any("user-role" in str(o["metadata"]["labels"]) for o in objects)


class TestNetworkPolicies:
    def test_are_off_by_default(self) -> None:
        assert of_kind(rendered("defaults.yaml"), "NetworkPolicy") == []

    def test_servers_take_only_the_operator_other_servers_and_the_allowed_peers(self) -> None:
        objects = render(
            VALUES_DIR / "namespaced.yaml",
            "networkPolicy.enabled=true",
            "networkPolicy.servers.ingressFrom[0].namespaceSelector.matchLabels.team=fraud",
            "networkPolicy.operator.apiServerCIDRs[0]=10.0.0.1/32",
        )
        policies = of_kind(objects, "NetworkPolicy")
        for policy in policies:
            kubernetes_validate.validate(policy, KUBE_VERSION, strict=True)
        servers = {
            p["metadata"]["namespace"]: p
            for p in policies
            if p["metadata"]["name"].endswith("-servers")
        }
        assert sorted(servers) == ["ml-serving", "team-a"], "one per watched namespace"
        spec = servers["team-a"]["spec"]
        assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "weir-server"
        assert spec["policyTypes"] == ["Ingress"], (
            "egress stays open: fetch-model reaches the store"
        )
        (rule,) = spec["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]
        peers = rule["from"]
        operator_peer = peers[0]
        assert operator_peer["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": NAMESPACE
        }
        assert (
            operator_peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
        )
        assert peers[1] == {"podSelector": {"matchLabels": {
            "app.kubernetes.io/name": "weir-server", "app.kubernetes.io/managed-by": "weir"}}}, "shadow mirroring"  # fmt: skip
        assert peers[2] == {"namespaceSelector": {"matchLabels": {"team": "fraud"}}}
        (operator,) = [p for p in policies if p["metadata"]["name"].endswith("-operator")]
        assert operator["metadata"]["namespace"] == NAMESPACE
        egress = operator["spec"]["egress"]
        assert {"protocol": "UDP", "port": 53} in egress[0]["ports"], "DNS"
        assert egress[1]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
        assert egress[2]["ports"] == [{"protocol": "TCP", "port": 8080}]
        assert len(egress) == 3, "nothing else"

    def test_watching_every_namespace_protects_the_ones_named(self) -> None:
        objects = render(
            None, "networkPolicy.enabled=true", "networkPolicy.serverNamespaces[0]=prod"
        )
        names = {(p["metadata"]["namespace"], p["metadata"]["name"].rsplit("-", 1)[-1])
                 for p in of_kind(objects, "NetworkPolicy")}  # fmt: skip
        assert names == {("prod", "servers"), (NAMESPACE, "operator")}


def test_rbac_can_be_left_to_the_user() -> None:
    objects = operator_rbac(
        tuple(
            render(
                None, "rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=ops"
            )
        )
    )
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"} & {
        o["kind"] for o in objects
    }
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"


# --- CRD ----------------------------------------------------------------------------------------


def test_chart_crd_is_byte_identical_to_the_generated_one() -> None:
    chart_crds = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart_crds == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    for name in chart_crds:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/weir/crds/{name} differs from crds/{name}: run `make generate`"
        )


def test_helm_installs_the_crd() -> None:
    out = helm(*template_args(None), "--include-crds").stdout
    [crd] = [o for o in yaml.safe_load_all(out) if o and o["kind"] == "CustomResourceDefinition"]
    assert crd == yaml.safe_load((ROOT / "crds" / "modeldeployment.yaml").read_text())
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)


# --- operator arguments -------------------------------------------------------------------------


def operator_cli_contract() -> argparse.ArgumentParser:
    """`weir operator`'s flags as the operator issue fixes them."""
    parser = argparse.ArgumentParser(prog="weir operator", allow_abbrev=False, exit_on_error=False)
    parser.add_argument("--namespace", action="append", default=[])
    parser.add_argument("--server-image")
    parser.add_argument("--metrics-port", type=int, default=9090)
    parser.add_argument("--liveness-port", type=int, default=8081)
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default="info"
    )
    return parser


@pytest.mark.parametrize("values", VALUES_FILES, ids=VALUES_IDS)
def test_operator_args_carry_the_values(values: Path) -> None:
    expected = effective_values(values.name)
    container = operator_container(rendered(values.name))
    image = expected["image"]
    operator_image = f"{image['repository']}:{image['tag'] or app_version()}"
    assert container["image"] == operator_image
    assert container["imagePullPolicy"] == image["pullPolicy"]
    assert "command" not in container  # the image's entry point, `weir`

    command, *flags = container["args"]
    assert command == "operator"
    args = operator_cli_contract().parse_args(flags)  # unknown flags raise
    assert args.namespace == expected["watchNamespaces"]
    assert args.server_image == (expected["serverImage"] or operator_image)
    assert args.log_level == expected["logLevel"]
    assert args.metrics_port == expected["metrics"]["port"]
    assert args.liveness_port == expected["liveness"]["port"]


def test_operator_args_follow_set_values() -> None:
    container = operator_container(
        render(None, "watchNamespaces={b,a}", "image.digest=sha256:" + "ab" * 32, "logLevel=error")
    )
    args = operator_cli_contract().parse_args(container["args"][1:])
    digest_image = "weir@sha256:" + "ab" * 32
    assert container["image"] == digest_image
    assert (args.namespace, args.server_image, args.log_level) == (
        ["b", "a"],
        digest_image,
        "error",
    )


def test_operator_args_are_accepted_by_the_weir_cli() -> None:
    from weir_operator import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "operator" not in commands.choices:
        pytest.skip("`weir operator` is not registered in weir_operator.cli yet")
    for values in VALUES_FILES:
        args = operator_container(rendered(values.name))["args"]
        try:
            parser.parse_args(args)
        except SystemExit as e:  # argparse reports bad arguments by exiting
            pytest.fail(f"{values.name}: `weir {' '.join(args)}` rejected (exit {e.code})")


# --- values validation and NOTES ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["logLevel=verbose"], "logLevel must be one of the following"),
        (["watchNamespaces={Team_A}"], "watchNamespaces.0: Does not match pattern"),
        (["watchNamespace={a}"], "Additional property watchNamespace is not allowed"),
        (["image.pullPolicy=Sometimes"], "image.pullPolicy must be one of the following"),
        (["metrics.port=8081"], "metrics.port and liveness.port must differ"),
        (["serviceAccount.create=false"], "serviceAccount.name is required"),
    ],
)
def test_bad_values_are_rejected(sets: list[str], message: str) -> None:
    proc = helm(*template_args(None, *sets), check=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def render_notes(tmp_path: Path, *sets: str) -> str:
    """NOTES.txt as `helm install` would print it: `helm template` skips NOTES.txt, so a copy of
    the chart renders it into a ConfigMap."""
    chart = tmp_path / "weir"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_probe.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "\n{{- end }}\n"
    )
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "test.notes" . | quote }}\n'
    )
    [probe] = [o for o in render(None, *sets, chart=chart) if o["kind"] == "ConfigMap"]
    text: str = probe["data"]["notes"]
    return text


def test_notes_tell_how_to_apply_and_watch(tmp_path: Path) -> None:
    text = render_notes(tmp_path)
    assert "kubectl apply -n default -f examples/iris.yaml" in text
    assert "kubectl get md -n default -w" in text
    assert "all namespaces" in text
    assert f"http://{RELEASE}-metrics.{NAMESPACE}.svc:9090/metrics" in text
    assert f"weir:{app_version()}" in text
    assert "WARNING" not in text


def test_notes_follow_watched_namespaces_and_warn_about_replicas(tmp_path: Path) -> None:
    text = render_notes(tmp_path, "watchNamespaces={ml,team-b}", "replicaCount=2")
    assert "these namespaces: ml, team-b" in text
    assert "kubectl get md -n ml -w" in text
    assert "WARNING: replicaCount is 2" in text


def test_helm_script_prints_the_verified_binary() -> None:
    helm_binary = helm_path()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "helm.py")],
        capture_output=True,
        text=True,
        timeout=HELM_TIMEOUT_S,
        check=True,
    )
    assert Path(proc.stdout.strip()) == helm_binary
    assert helm("version", "--short").stdout.startswith("v3.17.2+")
