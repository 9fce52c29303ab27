"""Pure rendering of a ModelDeployment's children: Deployments, Services, HPA, HTTPRoute, PDB.

No I/O: a parsed ModelDeployment and the decisions of the rollout engine (which revision holds
which role, replica counts, weights) go in; plain manifests come out, ready for the API server.
The pod template carries the immutable revision label and never the track, so giving a revision
another role (promotion) never restarts a pod (see DESIGN.md, Rollout mechanics)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from weir_operator.core import spec as api
from weir_operator.core.spec import ModelDeployment, ModelDeploymentSpec

Manifest = dict[str, Any]
Track = Literal["stable", "canary"]

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
REVISION_LABEL = "serving.weir.dev/revision"
TRACK_LABEL = "serving.weir.dev/track"
SERVER_NAME = "weir-server"

SERVER_PORT = 8080
SERVICE_PORT = 80
# Keys of a spec.model.auth.secretRef Secret that fetch-model reads (the session token only
# when there is one), and the variables that carry an HTTP header (weir_server.fetch).
AWS_CREDENTIAL_KEYS = (
    ("AWS_ACCESS_KEY_ID", False),
    ("AWS_SECRET_ACCESS_KEY", False),
    ("AWS_SESSION_TOKEN", True),
)
TLS_DIR = "/etc/weir/tls"  # spec.server.tls's Secret, mounted read-only in the server
SHADOW_DIR = "/etc/weir/shadow"  # the ConfigMap of what to mirror (core/shadow.py)
MIRROR_FILE = "mirror.json"
# On a TLS server pod: whose ca.crt verifies its certificate and the name it is checked
# against. The operator's probes and scrapes read them from each pod, so a revision is
# reached as it was rendered (turning TLS on or off is itself a rollout).
TLS_SECRET_ANNOTATION = "serving.weir.dev/tls-secret"
TLS_SERVER_NAME_ANNOTATION = "serving.weir.dev/tls-server-name"
FETCH_HEADER_NAME_ENV = "WEIR_FETCH_HEADER_NAME"
FETCH_HEADER_PREFIX_ENV = "WEIR_FETCH_HEADER_PREFIX"
FETCH_HEADER_VALUE_ENV = "WEIR_FETCH_HEADER_VALUE"
MODEL_DIR = "/models"
MODEL_FILE = f"{MODEL_DIR}/model.onnx"
# spec.monitoring.reference, fetched next to the model (fetch-model --reference-uri writes it
# into the model file's folder under this name).
REFERENCE_FILE = f"{MODEL_DIR}/reference.json"
PVC_MOUNT = "/source"
REFERENCE_PVC_MOUNT = "/reference-source"  # a reference on another claim than the model's
RUN_AS = 10001
PRE_STOP_SECONDS = 5
DRAIN_SECONDS = 30


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """Operator-wide settings that rendering needs (from the Helm values)."""

    server_image: str = "weir:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    cluster_domain: str = "cluster.local"


def revision_of(spec: ModelDeploymentSpec) -> str:
    """The revision: a hash of what defines the serving pods (spec.model + spec.server, and
    spec.monitoring.reference when there is one: the servers load it, so a new reference rolls
    out like a new model; the model's lineage says where it came from, not how it is served,
    and is left out)."""
    model = {k: v for k, v in spec.model.to_manifest().items() if k != "lineage"}
    defining: dict[str, Any] = {"model": model, "server": spec.server.to_manifest()}
    reference = spec.monitoring.reference if spec.monitoring is not None else None
    if reference is not None:
        defining["reference"] = reference.to_manifest()
    canonical = json.dumps(defining, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def tls_server_name(md: ModelDeployment) -> str | None:
    """The name a TLS server's certificate is checked against: spec.server.tls.serverName, by
    default <md>.<namespace>.svc; None without TLS."""
    tls = md.spec.server.tls
    if tls is None:
        return None
    return tls.server_name or f"{md.name}.{md.namespace}.svc"


def _tls_annotations(md: ModelDeployment) -> dict[str, str]:
    tls, name = md.spec.server.tls, tls_server_name(md)
    if tls is None or name is None:
        return {}
    return {
        TLS_SECRET_ANNOTATION: tls.secret_name,
        TLS_SERVER_NAME_ANNOTATION: name,
        "prometheus.io/scheme": "https",
    }


def shadow_config_name(md: ModelDeployment) -> str:
    return f"{md.name}-shadow"


def deployment_name(md: ModelDeployment, revision: str) -> str:
    return f"{md.name}-{revision[:10]}"


def instance_labels(md: ModelDeployment) -> dict[str, str]:
    return {NAME_LABEL: SERVER_NAME, INSTANCE_LABEL: md.name, MANAGED_BY_LABEL: "weir"}


def selector_labels(md: ModelDeployment, revision: str | None = None) -> dict[str, str]:
    labels = {NAME_LABEL: SERVER_NAME, INSTANCE_LABEL: md.name}
    if revision is not None:
        labels[REVISION_LABEL] = revision
    return labels


def label_selector(md: ModelDeployment) -> str:
    """The scale subresource's selector: every serving pod of the instance."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(md).items())


def owner_references(md: ModelDeployment) -> list[dict[str, Any]]:
    if not md.metadata.uid:
        return []
    return [
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "name": md.name,
            "uid": md.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def object_metadata(md: ModelDeployment, name: str, labels: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": md.namespace, "labels": labels}
    owners = owner_references(md)
    if owners:
        metadata["ownerReferences"] = owners
    return metadata


def service_url(md: ModelDeployment, settings: RenderSettings) -> str:
    host = f"{md.name}.{md.namespace}.svc.{settings.cluster_domain}"
    return f"http://{host}/v2/models/{md.model_name}"


_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _resources(spec: ModelDeploymentSpec) -> dict[str, Any]:
    resources = spec.server.resources.to_manifest()
    return {k: v for k, v in resources.items() if v}


def _env_var(variable: api.EnvVar) -> dict[str, Any]:
    if variable.value_from is not None:
        return {"name": variable.name, "valueFrom": variable.value_from.to_manifest()}
    return {"name": variable.name, "value": variable.value}


def _fetch_env(md: ModelDeployment) -> list[dict[str, Any]]:
    """What only the fetch-model init container sees: the model store's credentials (each key
    of the Secret named by spec.model.auth), its endpoint and region, an HTTP header."""
    model = md.spec.model
    env: list[dict[str, Any]] = []
    auth = model.auth
    if auth is not None and auth.secret_ref is not None:
        for key, optional in AWS_CREDENTIAL_KEYS:
            ref = {
                "name": auth.secret_ref.name,
                "key": key,
                **({"optional": True} if optional else {}),
            }
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    if auth is not None and auth.header is not None:
        header = auth.header
        env.append({"name": FETCH_HEADER_NAME_ENV, "value": header.name})
        if header.prefix:
            env.append({"name": FETCH_HEADER_PREFIX_ENV, "value": header.prefix})
        ref = {"name": header.secret_key_ref.name, "key": header.secret_key_ref.key}
        env.append({"name": FETCH_HEADER_VALUE_ENV, "valueFrom": {"secretKeyRef": ref}})
    if model.s3 is not None and model.s3.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": model.s3.endpoint})
    if model.s3 is not None and model.s3.region:
        env.append({"name": "AWS_REGION", "value": model.s3.region})
    return env


def _scheduling(md: ModelDeployment, revision: str) -> dict[str, Any]:
    """Where and how the server pods are scheduled: only the fields the spec sets."""
    server = md.spec.server
    found: dict[str, Any] = {}
    if server.service_account_name:
        found["serviceAccountName"] = server.service_account_name
    if server.node_selector:
        found["nodeSelector"] = dict(server.node_selector)
    if server.tolerations:
        found["tolerations"] = [t.to_manifest() for t in server.tolerations]
    if server.affinity is not None:
        found["affinity"] = server.affinity.to_manifest()
    if server.topology_spread_constraints:
        spread = []
        for constraint in server.topology_spread_constraints:
            manifest = constraint.to_manifest()
            manifest.setdefault("labelSelector", {"matchLabels": selector_labels(md, revision)})
            spread.append(manifest)
        found["topologySpreadConstraints"] = spread
    if server.priority_class_name:
        found["priorityClassName"] = server.priority_class_name
    if server.image_pull_secrets:
        found["imagePullSecrets"] = [r.to_manifest() for r in server.image_pull_secrets]
    return found


def _fetch_source(md: ModelDeployment) -> tuple[str, list[Manifest], list[Manifest]]:
    """The URI the init container reads, and the volume (and mount) a pvc:// URI needs."""
    return _claim_source(md.spec.model.uri, "model-source", PVC_MOUNT)


def _claim_source(
    uri: str, volume_name: str, mount_path: str
) -> tuple[str, list[Manifest], list[Manifest]]:
    if not uri.startswith("pvc://"):
        return uri, [], []
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    volume = {
        "name": volume_name,
        "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
    }
    mount = {"name": volume_name, "mountPath": mount_path, "readOnly": True}
    return f"file://{mount_path}/{path}", [volume], [mount]


def _reference_source(md: ModelDeployment) -> tuple[list[str], list[Manifest], list[Manifest]]:
    """fetch-model's arguments for spec.monitoring.reference (none without one), and the
    volume (and mount) a pvc:// reference needs when the model's claim is not the same."""
    monitoring = md.spec.monitoring
    reference = monitoring.reference if monitoring is not None else None
    if reference is None:
        return [], [], []
    uri = reference.uri
    volumes: list[Manifest] = []
    mounts: list[Manifest] = []
    model_claim = _claim_of(md.spec.model.uri)
    if model_claim is not None and model_claim == _claim_of(uri):
        uri = f"file://{PVC_MOUNT}/{uri.removeprefix('pvc://').partition('/')[2]}"
    else:
        uri, volumes, mounts = _claim_source(uri, "reference-source", REFERENCE_PVC_MOUNT)
    args = ["--reference-uri", uri]
    if reference.sha256:
        args += ["--reference-sha256", reference.sha256]
    return args, volumes, mounts


def _claim_of(uri: str) -> str | None:
    return uri.removeprefix("pvc://").partition("/")[0] if uri.startswith("pvc://") else None


def _server_args(md: ModelDeployment) -> list[str]:
    server = md.spec.server
    args = ["serve", MODEL_FILE, "--name", md.model_name, "--host", "0.0.0.0"]
    args += ["--port", str(SERVER_PORT), "--workers", str(server.workers)]
    if md.spec.model.version:
        args += ["--version", md.spec.model.version]
    if server.intra_op_threads:
        args += ["--intra-op-threads", str(server.intra_op_threads)]
    if server.batching.max_batch_size > 1:
        args += ["--max-batch-size", str(server.batching.max_batch_size)]
        args += ["--max-batch-delay-ms", f"{server.batching.max_batch_delay_ms:g}"]
    args += ["--graceful-timeout", str(DRAIN_SECONDS)]
    if server.tls is not None:
        args += ["--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key"]
    args += ["--mirror-config", f"{SHADOW_DIR}/{MIRROR_FILE}"]
    monitoring = md.spec.monitoring
    if monitoring is not None and monitoring.reference is not None:
        args += ["--reference", REFERENCE_FILE]
    return args


def render_deployment(
    md: ModelDeployment,
    revision: str,
    track: Track,
    replicas: int | None,
    settings: RenderSettings = RenderSettings(),
) -> Manifest:
    """The Deployment of one revision. `replicas` None leaves the count to an HPA."""
    image = md.spec.server.image or settings.server_image
    fetch_uri, source_volumes, source_mounts = _fetch_source(md)
    fetch_args = ["fetch-model", "--uri", fetch_uri, "--dest", MODEL_FILE]
    if md.spec.model.sha256:
        fetch_args += ["--sha256", md.spec.model.sha256]
    reference_args, reference_volumes, reference_mounts = _reference_source(md)
    fetch_args += reference_args
    source_volumes += reference_volumes
    source_mounts += reference_mounts
    server = md.spec.server
    user_env = [_env_var(e) for e in server.env]
    env_from = [e.to_manifest() for e in server.env_from]
    pod_labels = {**server.pod_labels, **instance_labels(md), REVISION_LABEL: revision}
    pull_policy = server.image_pull_policy or settings.image_pull_policy
    scheme = {"scheme": "HTTPS"} if server.tls is not None else {}
    tls_volumes: list[Manifest] = []
    tls_mounts: list[Manifest] = []
    if server.tls is not None:
        secret = {"secretName": server.tls.secret_name, "defaultMode": 0o440}
        tls_volumes.append({"name": "tls", "secret": secret})
        tls_mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(md, revision)},
        "revisionHistoryLimit": 2,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        },
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    **server.pod_annotations,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(SERVER_PORT),
                    "prometheus.io/path": "/metrics",
                    **_tls_annotations(md),
                },
            },
            "spec": {
                **_scheduling(md, revision),
                # A token only for a ServiceAccount named on purpose (workload identity).
                "automountServiceAccountToken": server.service_account_name is not None,
                "enableServiceLinks": False,
                "terminationGracePeriodSeconds": PRE_STOP_SECONDS + DRAIN_SECONDS + 5,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS,
                    "runAsGroup": RUN_AS,
                    "fsGroup": RUN_AS,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "initContainers": [
                    {
                        "name": "fetch-model",
                        "image": image,
                        "imagePullPolicy": pull_policy,
                        "args": fetch_args,
                        "env": [*user_env, *_fetch_env(md)],
                        **({"envFrom": env_from} if env_from else {}),
                        # The last log lines become the termination message, which the
                        # operator shows in the Ready condition (e.g. a sha256 mismatch).
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"memory": "512Mi"},
                        },
                        "securityContext": _RESTRICTED_CONTAINER,
                        "volumeMounts": [
                            {"name": "models", "mountPath": MODEL_DIR},
                            {"name": "tmp", "mountPath": "/tmp"},
                            *source_mounts,
                        ],
                    }
                ],
                "containers": [
                    {
                        "name": "server",
                        "image": image,
                        "imagePullPolicy": pull_policy,
                        "args": _server_args(md),
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "env": [{"name": "WEIR_REVISION", "value": revision}, *user_env],
                        **({"envFrom": env_from} if env_from else {}),
                        "ports": [
                            {"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/v2/health/ready", "port": "http", **scheme},
                            "periodSeconds": 2,
                            "failureThreshold": 2,
                        },
                        "livenessProbe": {
                            "httpGet": {"path": "/v2/health/live", "port": "http", **scheme},
                            "periodSeconds": 10,
                            "failureThreshold": 3,
                        },
                        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
                        "resources": _resources(md.spec),
                        "securityContext": _RESTRICTED_CONTAINER,
                        "volumeMounts": [
                            {"name": "models", "mountPath": MODEL_DIR, "readOnly": True},
                            {"name": "tmp", "mountPath": "/tmp"},
                            {"name": "shadow", "mountPath": SHADOW_DIR, "readOnly": True},
                            *tls_mounts,
                        ],
                    }
                ],
                "volumes": [
                    {"name": "models", "emptyDir": {}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    *source_volumes,
                    *tls_volumes,
                    # What to mirror in a shadow step (core/shadow.py); optional: absent, the
                    # server mirrors nothing.
                    {
                        "name": "shadow",
                        "configMap": {"name": shadow_config_name(md), "optional": True},
                    },
                ],
            },
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    labels = {**pod_labels, TRACK_LABEL: track}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(md, deployment_name(md, revision), labels),
        "spec": spec,
    }


def _service(
    md: ModelDeployment, name: str, selector: dict[str, str], track: Track | None
) -> Manifest:
    labels = instance_labels(md)
    if track is not None:
        labels = {**labels, TRACK_LABEL: track}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(md, name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def render_services(
    md: ModelDeployment, stable: str, canary: str | None, canary_weight: int = 0
) -> list[Manifest]:
    """`<md>` over the pods that get traffic; `<md>-stable` and `<md>-canary` over one revision
    each. `<md>` selects every serving pod of the instance only while a canary has weight (the
    `replicas` router splits by servers behind it); otherwise only the stable revision, so canary
    servers get no traffic before the pre-traffic checks and none from the moment of a rollback.
    Without a canary, `<md>-canary` selects the stable revision (it then gets weight 0)."""
    serving = selector_labels(md) if canary and canary_weight > 0 else selector_labels(md, stable)
    return [
        _service(md, md.name, serving, None),
        _service(md, f"{md.name}-stable", selector_labels(md, stable), "stable"),
        _service(md, f"{md.name}-canary", selector_labels(md, canary or stable), "canary"),
    ]


def render_hpa(md: ModelDeployment, revision: str, track: Track) -> Manifest | None:
    """An autoscaling/v2 HPA for one revision's Deployment, when autoscaling is on cpu."""
    autoscaling = md.spec.autoscaling
    if autoscaling is None or autoscaling.metric != "cpu":
        return None
    name = deployment_name(md, revision)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_metadata(md, name, {**instance_labels(md), TRACK_LABEL: track}),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": round(autoscaling.target),
                        },
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": round(
                        api.duration_seconds(autoscaling.scale_down_delay)
                    )
                }
            },
        },
    }


def render_pdb(md: ModelDeployment) -> Manifest:
    """At most one server of the instance down at a time during voluntary disruptions."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_metadata(md, md.name, instance_labels(md)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(md)}},
    }


def render_role(md: ModelDeployment, revision: str, track: Track, replicas: int | None) -> Manifest:
    """The Deployment of a revision the spec no longer describes, as a merge patch of its role
    and count only: its pod template stays the one it was created with (rendering it from the
    current spec would put the new model under the old revision label)."""
    labels = {**instance_labels(md), REVISION_LABEL: revision, TRACK_LABEL: track}
    manifest: Manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(md, deployment_name(md, revision), labels),
    }
    if replicas is not None:
        manifest["spec"] = {"replicas": replicas}
    return manifest


def is_role_patch(manifest: Manifest) -> bool:
    """True for `render_role`'s output: only patches an existing Deployment, never creates."""
    return manifest["kind"] == "Deployment" and "template" not in manifest.get("spec", {})


def render_children(
    md: ModelDeployment,
    stable: str,
    stable_replicas: int | None,
    canary: str | None = None,
    canary_replicas: int | None = None,
    canary_weight: int = 0,
    settings: RenderSettings = RenderSettings(),
) -> list[Manifest]:
    """Every child for a moment of a rollout: which revision holds which role, with how many
    replicas (None = an HPA decides) and which canary weight. Only the revision the current
    spec describes gets a full Deployment; another revision's is a role patch (`render_role`)."""
    desired = revision_of(md.spec)

    def deployment(revision: str, track: Track, replicas: int | None) -> Manifest:
        if revision == desired:
            return render_deployment(md, revision, track, replicas, settings)
        return render_role(md, revision, track, replicas)

    children = [deployment(stable, "stable", stable_replicas)]
    if canary is not None:
        children.append(deployment(canary, "canary", canary_replicas))
    children += render_services(md, stable, canary, canary_weight)
    hpa = render_hpa(md, stable, "stable")  # the canary's count is the rollout's
    if hpa is not None:
        children.append(hpa)
    children.append(render_pdb(md))
    return children
