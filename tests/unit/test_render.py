"""Rendering a ModelDeployment's children: pure, labelled as DESIGN.md says, owned by the
ModelDeployment, restricted pod security, and valid for Kubernetes' own OpenAPI schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.crdschema import validate_custom_resource
from tests.support.gateway_api import httproute_crd
from weir_operator.cluster.kube import merged, removed_keys
from weir_operator.core.render import (
    REVISION_LABEL,
    TRACK_LABEL,
    is_role_patch,
    render_children,
    render_deployment,
    revision_of,
    selector_labels,
)
from weir_operator.core.routers import router_named
from weir_operator.core.spec import ModelDeployment, parse_model_deployment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def with_identity(
    document: dict[str, Any], uid: str = "0b5c8e2a-6a43-4a43-9d1b-3a1d2f3c4b5e"
) -> dict[str, Any]:
    return {**document, "metadata": {"namespace": "default", **document["metadata"], "uid": uid}}


def assert_valid(manifest: dict[str, Any]) -> None:
    if manifest["kind"] == "HTTPRoute":
        crd = httproute_crd()
        if crd is None:
            pytest.skip("no `go` to fetch the Gateway API CRD with")
        problems = validate_custom_resource(manifest, crd)
        assert problems == [], problems
        return
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def assert_valid_or_role_patch(manifest: dict[str, Any]) -> None:
    """A full child is valid for Kubernetes; a role patch only names labels and replicas."""
    if not is_role_patch(manifest):
        assert_valid(manifest)
        return
    assert set(manifest) <= {"apiVersion", "kind", "metadata", "spec"}
    assert set(manifest.get("spec", {})) <= {"replicas"}


def example(name: str) -> ModelDeployment:
    return parse_model_deployment(
        with_identity(yaml.safe_load((ROOT / "examples" / name).read_text()))
    )


class TestRevision:
    def test_the_revision_changes_with_the_model_and_the_server_only(self) -> None:
        md = example("iris.yaml")
        base = revision_of(md.spec)
        assert len(base) == 16
        for change in (
            {"model": {**md.spec.model.to_manifest(), "version": "8"}},
            {"server": {"workers": 3}},
        ):
            changed = parse_model_deployment(
                with_identity(
                    {
                        **yaml.safe_load((ROOT / "examples/iris.yaml").read_text()),
                        "spec": {**md.spec.to_manifest(), **change},
                    }
                )
            )
            assert revision_of(changed.spec) != base
        scaled = parse_model_deployment(
            with_identity(
                {
                    **yaml.safe_load((ROOT / "examples/iris.yaml").read_text()),
                    "spec": {
                        **md.spec.to_manifest(),
                        "replicas": 7,
                        "rollout": {"steps": [{"setWeight": 30}]},
                    },
                }
            )
        )
        assert revision_of(scaled.spec) == base


class TestDeployment:
    def test_labels_selector_and_owner(self) -> None:
        md = example("iris.yaml")
        deployment = render_deployment(md, "abcdef0123456789", "canary", 2)
        assert deployment["metadata"]["name"] == "iris-abcdef0123"
        assert deployment["metadata"]["labels"][TRACK_LABEL] == "canary"
        template_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert template_labels == {
            "app.kubernetes.io/name": "weir-server",
            "app.kubernetes.io/instance": "iris",
            "app.kubernetes.io/managed-by": "weir",
            REVISION_LABEL: "abcdef0123456789",
        }
        assert TRACK_LABEL not in template_labels, "a role change must never restart pods"
        assert deployment["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
        (owner,) = deployment["metadata"]["ownerReferences"]
        assert owner["kind"] == "ModelDeployment"
        assert owner["uid"] == md.metadata.uid
        assert owner["controller"] is True

    def test_changing_the_role_leaves_the_pod_template_alone(self) -> None:
        md = example("iris.yaml")
        as_canary = render_deployment(md, "abcdef0123456789", "canary", 2)
        as_stable = render_deployment(md, "abcdef0123456789", "stable", 2)
        assert as_canary["spec"]["template"] == as_stable["spec"]["template"]

    def test_restricted_pod_security(self) -> None:
        pod = render_deployment(example("iris.yaml"), "r" * 16, "stable", 1)["spec"]["template"][
            "spec"
        ]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"] + pod["initContainers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}

    def test_the_init_container_fetches_and_checks_the_model(self) -> None:
        md = example("iris.yaml")
        pod = render_deployment(md, "r" * 16, "stable", 1)["spec"]["template"]["spec"]
        (init,) = pod["initContainers"]
        assert init["args"][:3] == ["fetch-model", "--uri", md.spec.model.uri]
        assert init["args"][init["args"].index("--sha256") + 1] == md.spec.model.sha256
        assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"  # errors reach status
        (server,) = pod["containers"]
        assert server["args"][:2] == ["serve", "/models/model.onnx"]
        assert {"name": "WEIR_REVISION", "value": "r" * 16} in server["env"]
        assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert server["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
        assert pod["terminationGracePeriodSeconds"] > 5 + 30

    def test_a_pvc_model_is_mounted_read_only_and_read_as_a_file(self) -> None:
        pod = render_deployment(example("iris-autoscaling.yaml"), "r" * 16, "stable", None)["spec"][
            "template"
        ]["spec"]
        assert {
            "name": "model-source",
            "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
        } in pod["volumes"]
        assert pod["initContainers"][0]["args"][2] == "file:///source/iris/iris-7.onnx"


class TestChildren:
    def test_cpu_autoscaling_gives_the_stables_count_to_its_hpa_and_the_canarys_to_the_rollout(
        self,
    ) -> None:
        """One owner per count: two HPAs would make the weight a step asks for, and the canary's
        full size before promotion, whatever two separate HPAs happen to do."""
        md = example("iris-autoscaling.yaml")
        children = render_children(md, "s" * 16, None, canary="c" * 16, canary_replicas=2)
        hpas = [c for c in children if c["kind"] == "HorizontalPodAutoscaler"]
        assert [h["spec"]["scaleTargetRef"]["name"] for h in hpas] == ["iris-autoscaled-ssssssssss"]
        deployments = {c["metadata"]["name"]: c for c in children if c["kind"] == "Deployment"}
        assert "replicas" not in deployments["iris-autoscaled-ssssssssss"].get("spec", {})
        assert deployments["iris-autoscaled-cccccccccc"]["spec"]["replicas"] == 2
        assert hpas[0]["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70

    def test_gateway_api_routes_by_weight_and_services_select_one_revision_each(self) -> None:
        md = example("iris-gateway.yaml")
        children = render_children(
            md, "s" * 16, 3, canary="c" * 16, canary_replicas=1, canary_weight=25
        )
        children += router_named("gateway-api").children(md, 25)
        (route,) = [c for c in children if c["kind"] == "HTTPRoute"]
        assert route["spec"]["rules"][0]["backendRefs"] == [
            {"name": "fraud-stable", "port": 80, "weight": 75},
            {"name": "fraud-canary", "port": 80, "weight": 25},
        ]
        services = {
            c["metadata"]["name"]: c["spec"]["selector"] for c in children if c["kind"] == "Service"
        }
        assert REVISION_LABEL not in services["fraud"]
        assert services["fraud-stable"][REVISION_LABEL] == "s" * 16
        assert services["fraud-canary"][REVISION_LABEL] == "c" * 16

    @pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
    def test_every_child_of_every_example_is_valid_for_kubernetes(self, path: Path) -> None:
        md = parse_model_deployment(with_identity(yaml.safe_load(path.read_text())))
        desired = revision_of(md.spec)
        for stable, canary in ((desired, None), ("s" * 16, desired)):
            router = router_named(md.spec.traffic.router)
            for child in [
                *render_children(md, stable, 2, canary=canary, canary_replicas=1, canary_weight=10),
                *router.children(md, 10),
            ]:
                assert_valid_or_role_patch(child)
                assert child["metadata"]["ownerReferences"][0]["name"] == md.name

    def test_only_the_desired_revision_gets_a_pod_template(self) -> None:
        md = example("iris.yaml")
        desired = revision_of(md.spec)
        children = render_children(md, "s" * 16, 3, canary=desired, canary_replicas=1)
        stable = next(c for c in children if c["metadata"]["name"] == "iris-ssssssssss")
        assert is_role_patch(stable)
        assert stable["spec"] == {"replicas": 3}
        assert stable["metadata"]["labels"][TRACK_LABEL] == "stable"
        assert stable["metadata"]["labels"][REVISION_LABEL] == "s" * 16
        canary = next(c for c in children if c["metadata"]["name"] == f"iris-{desired[:10]}")
        assert not is_role_patch(canary)
        assert canary["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] == desired

    def test_the_serving_service_selects_canary_pods_only_while_the_canary_has_weight(
        self,
    ) -> None:
        md = example("iris.yaml")
        desired = revision_of(md.spec)

        def serving(weight: int) -> dict[str, str]:
            children = render_children(
                md, "s" * 16, 1, canary=desired, canary_replicas=1, canary_weight=weight
            )
            service = next(c for c in children if c["metadata"]["name"] == "iris")
            selector: dict[str, str] = service["spec"]["selector"]
            return selector

        assert serving(0)[REVISION_LABEL] == "s" * 16
        assert REVISION_LABEL not in serving(50)


uris = st.sampled_from(
    [
        "https://models.example.com/a/b.onnx",
        "http://10.0.0.1:8000/m.onnx",
        "s3://bucket-1/path/m.onnx",
        "pvc://claim-a/dir/m.onnx",
        "file:///models/m.onnx",
    ]
)
steps = st.lists(st.integers(0, 100), max_size=5).map(
    lambda ws: [s for w in sorted(ws) for s in ({"setWeight": w}, {"pause": {"duration": "10s"}})]
)


@st.composite
def model_deployments(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"uri": draw(uris)},
        "replicas": draw(st.integers(0, 20)),
        "server": {
            "workers": draw(st.integers(1, 4)),
            "batching": {
                "maxBatchSize": draw(st.integers(0, 64)),
                "maxBatchDelayMs": draw(st.floats(0, 50)),
            },
            "env": [{"name": f"VAR_{i}", "value": str(i)} for i in range(draw(st.integers(0, 3)))],
        },
        "rollout": {"steps": draw(steps)},
    }
    if draw(st.booleans()):
        spec["model"]["sha256"] = "ab" * 32
    if draw(st.booleans()):
        spec["model"]["version"] = str(draw(st.integers(1, 999)))
    if draw(st.booleans()):
        low = draw(st.integers(1, 10))
        spec["autoscaling"] = {
            "minReplicas": low,
            "maxReplicas": draw(st.integers(low, 50)),
            "metric": draw(st.sampled_from(["cpu", "concurrency", "rps"])),
            "target": draw(st.integers(1, 100)),
        }
    if draw(st.booleans()):
        spec["traffic"] = {
            "router": "gateway-api",
            "gateway": {"parentRefs": [{"name": "gw"}], "hostnames": ["a.example.com"]},
        }
    name = draw(st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True))
    return with_identity(
        {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_deployments(), st.integers(0, 100), st.booleans())
def test_generated_specs_render_children_kubernetes_accepts(
    document: dict[str, Any], weight: int, with_canary: bool
) -> None:
    md = parse_model_deployment(document)
    replicas = (
        None if md.spec.autoscaling and md.spec.autoscaling.metric == "cpu" else md.spec.replicas
    )
    desired = revision_of(md.spec)
    for child in render_children(
        md,
        "s" * 16 if with_canary else desired,
        replicas,
        canary=desired if with_canary else None,
        canary_replicas=replicas,
        canary_weight=weight,
    ):
        assert_valid_or_role_patch(child)


def test_apply_nulls_selector_keys_a_service_no_longer_renders() -> None:
    existing = {"spec": {"selector": {"a": "1", REVISION_LABEL: "r"}, "ports": []}}
    desired = {"spec": {"selector": {"a": "1"}}}
    gone = removed_keys("Service", existing, desired)
    assert gone == {"spec": {"selector": {REVISION_LABEL: None}}}
    assert merged(desired, gone) == {"spec": {"selector": {"a": "1", REVISION_LABEL: None}}}
    assert removed_keys("Service", desired, existing) == {}
    assert removed_keys("Deployment", existing, desired) == {}, "only exact maps"


def pod_of(md: ModelDeployment) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(pod template, fetch-model init container, server container) of md's Deployment."""
    deployment = render_deployment(md, revision_of(md.spec), "stable", 2)
    assert_valid(deployment)
    template = deployment["spec"]["template"]
    (fetch,) = template["spec"]["initContainers"]
    (server,) = template["spec"]["containers"]
    return template, fetch, server


class TestProductionPodSettings:
    """Issue 19: every server pod setting of the spec, rendered field by field."""

    def test_scheduling_images_identity_and_extended_resources(self) -> None:
        md = example("iris-gpu.yaml")
        template, fetch, server = pod_of(md)
        pod = template["spec"]
        assert pod["serviceAccountName"] == "resnet-server"
        assert pod["automountServiceAccountToken"] is True, "the identity needs its token"
        assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert pod["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        node = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert node["nodeSelectorTerms"][0]["matchExpressions"] == [
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
        ]
        anti = pod["affinity"]["podAntiAffinity"]
        assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"] == 50
        (spread,) = pod["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone"
        assert spread["labelSelector"] == {"matchLabels": selector_labels(md, revision_of(md.spec))}
        assert pod["priorityClassName"] == "inference-high"
        assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
        assert fetch["imagePullPolicy"] == server["imagePullPolicy"] == "Always"
        assert server["image"] == "registry.example.com/weir:0.1.0"
        annotations = template["metadata"]["annotations"]
        assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
        assert annotations["prometheus.io/scrape"] == "true", "Weir's own are kept"
        assert template["metadata"]["labels"]["team"] == "vision"
        assert template["metadata"]["labels"][REVISION_LABEL] == revision_of(md.spec)
        assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert server["resources"]["requests"]["nvidia.com/gpu"] == "1"
        env = {e["name"]: e for e in server["env"]}
        assert env["OMP_NUM_THREADS"] == {"name": "OMP_NUM_THREADS", "value": "2"}
        assert env["FEATURE_FLAGS"]["valueFrom"] == {
            "configMapKeyRef": {"name": "resnet-settings", "key": "flags"}
        }
        assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert server["envFrom"] == [{"prefix": "APP_", "secretRef": {"name": "resnet-app"}}]

    def test_without_them_the_pod_is_as_before(self) -> None:
        template, fetch, server = pod_of(example("iris.yaml"))
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False
        for absent in (
            "serviceAccountName",
            "nodeSelector",
            "tolerations",
            "affinity",
            "topologySpreadConstraints",
            "priorityClassName",
            "imagePullSecrets",
        ):
            assert absent not in pod, absent  # fmt: skip
        assert "envFrom" not in server
        assert fetch["imagePullPolicy"] == "IfNotPresent"

    def test_s3_credentials_reach_the_fetch_container_only(self) -> None:
        _, fetch, server = pod_of(example("iris-private-s3.yaml"))
        env = {e["name"]: e for e in fetch["env"]}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
            "secretKeyRef": {"name": "iris-s3", "key": "AWS_ACCESS_KEY_ID"}
        }
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "iris-s3"
        assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
        assert env["AWS_ENDPOINT_URL_S3"]["value"] == "https://minio.storage.svc:9000"
        assert env["AWS_REGION"]["value"] == "eu-west-1"
        assert not [e for e in server["env"] if e["name"].startswith("AWS_")]

    def test_an_http_token_is_a_header_from_a_secret(self) -> None:
        _, fetch, _ = pod_of(example("iris-http-token.yaml"))
        env = {e["name"]: e for e in fetch["env"]}
        assert env["WEIR_FETCH_HEADER_NAME"]["value"] == "Authorization"
        assert env["WEIR_FETCH_HEADER_PREFIX"]["value"] == "Bearer "
        assert env["WEIR_FETCH_HEADER_VALUE"]["valueFrom"] == {
            "secretKeyRef": {"name": "model-registry", "key": "token"}
        }

    def test_tls_mounts_the_secret_and_probes_speak_https(self) -> None:
        template, _, server = pod_of(example("iris-tls.yaml"))
        assert {"name": "tls", "secret": {"secretName": "iris-tls", "defaultMode": 0o440}} in (
            template["spec"]["volumes"]
        )
        assert {"name": "tls", "mountPath": "/etc/weir/tls", "readOnly": True} in (
            server["volumeMounts"]
        )
        assert server["args"][-6:-2] == [
            "--tls-cert", "/etc/weir/tls/tls.crt", "--tls-key", "/etc/weir/tls/tls.key"
        ]  # fmt: skip
        assert server["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
        assert server["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"

    def test_lineage_is_not_part_of_the_revision(self) -> None:
        md = example("iris-lineage.yaml")
        document = yaml.safe_load((ROOT / "examples" / "iris-lineage.yaml").read_text())
        document["spec"]["model"]["lineage"]["metrics"]["auc"] = 0.5
        changed = parse_model_deployment(with_identity(document))
        assert revision_of(changed.spec) == revision_of(md.spec)
        del document["spec"]["model"]["lineage"]
        assert revision_of(parse_model_deployment(with_identity(document)).spec) == (
            revision_of(md.spec)
        )


class TestMonitoringReference:
    """spec.monitoring.reference: fetched next to the model by the same init container, with
    the model's credentials, and loaded by the server (docs/monitoring.md, section 2)."""

    def test_the_init_container_fetches_the_reference_next_to_the_model(self) -> None:
        md = example("iris-monitoring.yaml")
        reference = md.spec.monitoring.reference if md.spec.monitoring else None
        assert reference is not None
        _, fetch, server = pod_of(md)
        args = fetch["args"]
        assert args[args.index("--dest") + 1] == "/models/model.onnx"
        assert args[args.index("--reference-uri") + 1] == reference.uri
        assert args[args.index("--reference-sha256") + 1] == reference.sha256
        assert server["args"][-2:] == ["--reference", "/models/reference.json"]

    def test_without_one_nothing_is_fetched_or_loaded(self) -> None:
        _, fetch, server = pod_of(example("iris.yaml"))
        assert "--reference-uri" not in fetch["args"]
        assert "--reference" not in server["args"]

    def test_a_reference_without_a_sha256_is_fetched_unchecked(self) -> None:
        md = with_monitoring({"reference": {"uri": "https://m.example.com/iris.reference.json"}})
        _, fetch, _ = pod_of(md)
        assert "--reference-sha256" not in fetch["args"]

    def test_it_is_fetched_with_the_models_credentials(self) -> None:
        document = yaml.safe_load((ROOT / "examples/iris-private-s3.yaml").read_text())
        document["spec"]["monitoring"] = {"reference": {"uri": "s3://models/iris.reference.json"}}
        md = parse_model_deployment(with_identity(document))
        _, fetch, _ = pod_of(md)
        assert fetch["args"][fetch["args"].index("--reference-uri") + 1] == (
            "s3://models/iris.reference.json"
        )
        assert "AWS_ACCESS_KEY_ID" in {e["name"] for e in fetch["env"]}

    def test_a_pvc_reference_on_the_models_claim_is_read_through_the_same_mount(self) -> None:
        document = yaml.safe_load((ROOT / "examples/iris-autoscaling.yaml").read_text())
        document["spec"]["monitoring"] = {"reference": {"uri": "pvc://models/iris/reference.json"}}
        template, fetch, _ = pod_of(parse_model_deployment(with_identity(document)))
        assert fetch["args"][fetch["args"].index("--reference-uri") + 1] == (
            "file:///source/iris/reference.json"
        )
        assert [v["name"] for v in template["spec"]["volumes"]].count("model-source") == 1

    def test_a_pvc_reference_on_another_claim_gets_its_own_read_only_mount(self) -> None:
        md = with_monitoring({"reference": {"uri": "pvc://profiles/iris/reference.json"}})
        template, fetch, _ = pod_of(md)
        assert fetch["args"][fetch["args"].index("--reference-uri") + 1] == (
            "file:///reference-source/iris/reference.json"
        )
        assert {
            "name": "reference-source",
            "persistentVolumeClaim": {"claimName": "profiles", "readOnly": True},
        } in template["spec"]["volumes"]
        assert {
            "name": "reference-source", "mountPath": "/reference-source", "readOnly": True
        } in fetch["volumeMounts"]  # fmt: skip

    def test_the_reference_is_part_of_the_revision_and_the_drift_settings_are_not(self) -> None:
        plain = example("iris.yaml")
        base = revision_of(plain.spec)
        judged_only = with_monitoring({"drift": {"window": "1m", "threshold": 0.3}})
        assert revision_of(judged_only.spec) == base, "no reference: the servers are as before"
        one = with_monitoring({"reference": {"uri": "https://m.example.com/a.reference.json"}})
        other = with_monitoring({"reference": {"uri": "https://m.example.com/b.reference.json"}})
        assert len({base, revision_of(one.spec), revision_of(other.spec)}) == 3
        retuned = with_monitoring(
            {
                "reference": {"uri": "https://m.example.com/a.reference.json"},
                "drift": {"window": "1m", "minSamples": 50},
                "features": ["input[0]"],
            }
        )
        assert revision_of(retuned.spec) == revision_of(one.spec)


def with_monitoring(monitoring: dict[str, Any]) -> ModelDeployment:
    document = yaml.safe_load((ROOT / "examples/iris.yaml").read_text())
    document["spec"]["monitoring"] = monitoring
    return parse_model_deployment(with_identity(document))
