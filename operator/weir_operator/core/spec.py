"""The ModelDeployment API (serving.weir.dev/v1alpha1) as typed, validated Python models.

This is the single source of truth for the API: the CRD's OpenAPI schema is generated from these
models (`weir_operator.crd`), descriptions, defaults, enums, bounds, patterns and CEL rules
included, and `weir run` parses YAML with them. So a manifest means the same thing, and is
rejected for the same reason, on a cluster and on a laptop. Errors name the field path."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from weir_operator.core.celrules import CelRule
from weir_operator.core.kubetypes import (
    Affinity,
    EnvFromSource,
    EnvVarSource,
    LocalObjectReference,
    ObjectName,
    Toleration,
    TopologySpreadConstraint,
)
from weir_operator.core.spec_base import ApiModel

GROUP = "serving.weir.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
SHA256_PATTERN = r"^[a-fA-F0-9]{64}$"
URI_PATTERN = (
    r"^(https?://[^\s]+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\s]+"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^\s]+|file:///[^\s]*)$"
)
MODEL_NAME_PATTERN = r"^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$"
MODEL_VERSION_PATTERN = r"^[^/\s]+$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """Seconds in a Go-style duration such as `30s`, `1m30s` or `250ms` (already validated)."""
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


class HeaderFromSecret(ApiModel):
    """An HTTP header whose value is a key of a Secret (e.g. Authorization: Bearer <token>)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9-]+$", max_length=64, description="Header name, e.g. Authorization."
    )
    secret_key_ref: SecretKey = Field(description="The Secret key holding the value.")
    prefix: str = Field("", max_length=32, description='Put before the value, e.g. "Bearer ".')


class SecretKey(ApiModel):
    """One key of a Secret of the same namespace."""

    name: ObjectName = Field(description="The Secret's name.")
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253, description="The key.")


class ModelAuth(ApiModel):
    """How `weir fetch-model` authenticates to the model's store. Without it: anonymously, or
    for s3:// with the pod's own identity (`server.serviceAccountName`: IRSA, workload
    identity) or whatever the image's default credential chain finds."""

    cel_rules = (
        CelRule(
            "!(has(self.secretRef) && has(self.header))",
            "auth takes secretRef (s3://) or header (http(s)://), not both",
        ),
    )

    secret_ref: LocalObjectReference | None = Field(
        None,
        description=(
            "s3://: a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and optionally "
            "AWS_SESSION_TOKEN); only the fetch-model init container sees them."
        ),
    )
    header: HeaderFromSecret | None = Field(None, description="http(s)://: a header to send.")


class S3Options(ApiModel):
    """For an S3-compatible store (MinIO, Ceph, R2...) or a region other than the default."""

    endpoint: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/[^\s]*)?$",
        max_length=512,
        description="The store's endpoint URL, e.g. https://minio.example.com:9000.",
    )
    region: str | None = Field(
        None, pattern=r"^[a-z0-9-]+$", max_length=32, description="e.g. eu-west-1."
    )


class Dataset(ApiModel):
    """The data a model was trained on."""

    uri: str = Field(min_length=1, max_length=2048, description="Where it is.")
    sha256: str | None = Field(None, pattern=SHA256_PATTERN, description="Its checksum.")


class Lineage(ApiModel):
    """Where the model came from, for an auditor: carried into status.history, events, `weir
    history` and the `weir_model_info` metric. Not part of the revision: it says where the
    model came from, not how it is served."""

    training_run: str | None = Field(
        None,
        max_length=2048,
        description="The training run, e.g. an MLflow run URI (runs:/<id>) or a CI job URL.",
    )
    dataset: Dataset | None = Field(None, description=Dataset.__doc__)
    metrics: dict[str, float] = Field(
        default_factory=dict,
        max_length=16,
        description="Evaluation metrics, name -> number (e.g. auc: 0.93).",
    )
    labels: dict[str, Annotated[str, Field(max_length=253)]] = Field(
        default_factory=dict, max_length=16, description="Free labels, e.g. team: fraud."
    )


class ModelSource(ApiModel):
    """Which ONNX file to serve, how to fetch it and check it, and where it came from."""

    uri: str = Field(
        pattern=URI_PATTERN,
        max_length=2048,
        description=(
            "Where the ONNX file is: https://host/path (or http://), s3://bucket/key, "
            "pvc://CLAIM/PATH (a PersistentVolumeClaim in the same namespace), or file:///ABS "
            "(local runtime and tests only)."
        ),
    )
    sha256: str | None = Field(
        None,
        pattern=SHA256_PATTERN,
        description=(
            "Hex sha256 of the file; checked before it is served. A mismatch fails the revision."
        ),
    )
    name: str | None = Field(
        None,
        pattern=MODEL_NAME_PATTERN,
        description="Model name served over the Open Inference Protocol. Default: metadata.name.",
    )
    auth: ModelAuth | None = Field(None, description=ModelAuth.__doc__)
    s3: S3Options | None = Field(None, description=S3Options.__doc__)
    lineage: Lineage | None = Field(None, description=Lineage.__doc__)
    version: str | None = Field(
        None,
        max_length=63,
        pattern=MODEL_VERSION_PATTERN,
        description=(
            'Human label of the model version, e.g. "7"; no "/" or whitespace (clients address '
            "it in the URL path /v2/models/{name}/versions/{version})."
        ),
    )


# Names that make the interpreter, the dynamic loader, a shell or a library load and run code
# of the writer's choosing (PYTHONPATH with a sitecustomize.py, LD_PRELOAD, OPENSSL_CONF with an
# engine...), choose which program runs (PATH), or are Weir's own (WEIR_REVISION says which
# revision a server's metrics belong to). Whoever may edit a ModelDeployment must not gain
# code execution in its servers: docs/decisions.md, "Environment variables".
REFUSED_ENV_PREFIXES = ("PYTHON", "LD_", "DYLD_", "WEIR_")
REFUSED_ENV_NAMES = (
    "PATH",
    "BASH_ENV",
    "ENV",
    "GCONV_PATH",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    "PROMETHEUS_MULTIPROC_DIR",
)


def _refused_env_rule() -> str:
    prefixes = " || ".join(f"self.name.startsWith('{p}')" for p in REFUSED_ENV_PREFIXES)
    names = ", ".join(f"'{n}'" for n in REFUSED_ENV_NAMES)
    return f"!({prefixes} || self.name in [{names}])"


class EnvVar(ApiModel):
    """An environment variable of the inference server container."""

    cel_rules = (
        CelRule(
            _refused_env_rule(),
            "refused: "
            + ", ".join(f"{p}*" for p in REFUSED_ENV_PREFIXES)
            + ", "
            + ", ".join(REFUSED_ENV_NAMES)
            + " could make the server run other code, or are Weir's own",
            ".name",
        ),
        CelRule(
            "!has(self.valueFrom) || self.value == ''",
            "give value or valueFrom, not both",
            ".valueFrom",
        ),
    )

    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=256, description="Variable name.")
    value: str = Field("", max_length=32768, description="Variable value.")
    value_from: EnvVarSource | None = Field(
        None, description="Take the value from a Secret, a ConfigMap or the pod instead."
    )


Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]


RESOURCE_NAME_PATTERN = (
    r"^(cpu|memory|ephemeral-storage|hugepages-[0-9]+[KMGTPE]i?"
    r"|[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$"
)
RESOURCE_NAME_RULE = CelRule(
    f"self.all(k, k.matches('{RESOURCE_NAME_PATTERN}'))",
    "resource names are cpu, memory, ephemeral-storage, hugepages-<size> or an extended "
    "resource DOMAIN/NAME such as nvidia.com/gpu",
)
ResourceList = dict[str, Quantity]
"""Kubernetes quantities by resource name: cpu, memory, and extended resources such as
nvidia.com/gpu (a map, as core/v1 ResourceRequirements has it)."""


class Resources(ApiModel):
    """Compute resources of each inference server container (core/v1 ResourceRequirements):
    cpu and memory, and extended resources such as nvidia.com/gpu (which Kubernetes wants in
    limits, and in requests only equal to the limit)."""

    cel_rules = (
        CelRule(
            RESOURCE_NAME_RULE.rule.replace("self.all", "self.requests.all"),
            "requests: " + RESOURCE_NAME_RULE.message,
            ".requests",
        ),
        CelRule(
            RESOURCE_NAME_RULE.rule.replace("self.all", "self.limits.all"),
            "limits: " + RESOURCE_NAME_RULE.message,
            ".limits",
        ),
        CelRule(
            "self.requests.all(k, k.contains('/') ? (k in self.limits && "
            "self.limits[k] == self.requests[k]) : true)",
            "an extended resource (nvidia.com/gpu, ...) in requests must be in limits too, with "
            "the same quantity",
            ".requests",
        ),
    )

    requests: ResourceList = Field(
        default_factory=lambda: {"cpu": "500m", "memory": "512Mi"},
        max_length=16,
        description="Guaranteed resources.",
    )
    limits: ResourceList = Field(
        default_factory=lambda: {"cpu": "2", "memory": "2Gi"},
        max_length=16,
        description=(
            "Resource caps; the server sizes its thread pool to the cpu limit. Extended "
            "resources go here, e.g. nvidia.com/gpu: 1."
        ),
    )


class Batching(ApiModel):
    """Dynamic batching: concurrent requests stacked into one model run."""

    max_batch_size: int = Field(
        0, ge=0, le=1024, description="Rows per batch; 0 turns dynamic batching off."
    )
    max_batch_delay_ms: float = Field(
        2.0, ge=0, le=1000, description="Longest a request waits for others to batch with (ms)."
    )


class ServerTls(ApiModel):
    """TLS on the inference port, with the certificate of a Secret of type kubernetes.io/tls
    (tls.crt, tls.key, and ca.crt to verify it: cert-manager's Certificate writes all three).
    The operator's probes and direct scrapes then speak HTTPS and verify the certificate."""

    secret_name: ObjectName = Field(description="The Secret with tls.crt, tls.key and ca.crt.")
    server_name: str | None = Field(
        None,
        max_length=253,
        description=("The name the certificate is checked against; default: <md>.<namespace>.svc."),
    )


class ServerSpec(ApiModel):
    """How each inference server (`weir serve`) runs. Part of the revision: a change rolls out."""

    cel_rules = (
        CelRule(
            "self.podLabels.all(k, !k.startsWith('app.kubernetes.io/') && "
            "!k.startsWith('serving.weir.dev/'))",
            "podLabels: keys under app.kubernetes.io/ and serving.weir.dev/ are Weir's own",
            ".podLabels",
        ),
        CelRule(
            "self.nodeSelector.all(k, k.matches('"
            + r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
            + "'))",
            "nodeSelector keys must be label keys",
            ".nodeSelector",
        ),
    )

    image: str | None = Field(
        None,
        max_length=512,
        description=(
            "Container image with the `weir` entry point. Default: the operator's server image."
        ),
    )
    resources: Resources = Field(default_factory=Resources, description=Resources.__doc__)
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64, description="Extra environment variables."
    )
    workers: int = Field(1, ge=1, le=64, description="Server processes per pod.")
    intra_op_threads: int = Field(
        0,
        ge=0,
        le=256,
        description=(
            "ONNX Runtime threads per worker; 0 = the CPU limit / workers, less one core for "
            "the worker's HTTP side, at least 1."
        ),
    )
    batching: Batching = Field(default_factory=Batching, description=Batching.__doc__)
    env_from: list[EnvFromSource] = Field(
        default_factory=list,
        max_length=16,
        description="Every key of a Secret or ConfigMap as a variable (prefixed) of the server.",
    )
    service_account_name: ObjectName | None = Field(
        None,
        description=(
            "The ServiceAccount the server pods run as, for workload identity (EKS IRSA, GKE "
            "Workload Identity): its token is mounted, and fetch-model reaches s3:// with it. "
            "Default: none (the namespace's default, with no token mounted)."
        ),
    )
    node_selector: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict,
        max_length=32,
        description="Node labels the server pods must land on, e.g. a GPU node pool.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Taints the server pods tolerate."
    )
    affinity: Affinity | None = Field(None, description=Affinity.__doc__)
    topology_spread_constraints: list[TopologySpreadConstraint] = Field(
        default_factory=list,
        max_length=8,
        description=(
            "How the server pods spread over zones or nodes; without a labelSelector, a "
            "constraint counts this revision's server pods."
        ),
    )
    priority_class_name: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="PriorityClass of the server pods.",
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, max_length=8, description="Secrets to pull a private image with."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Default: the operator's (IfNotPresent)."
    )
    pod_annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=32,
        description="Annotations of the server pods (Weir's own prometheus.io/* are kept).",
    )
    pod_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "Labels of the server pods; keys under app.kubernetes.io/ and serving.weir.dev/ "
            "are Weir's own and refused."
        ),
    )
    tls: ServerTls | None = Field(None, description="TLS on the inference port.")
    sample_input: dict[str, Any] | None = Field(
        None,
        description=(
            "An Open Inference Protocol infer request body; before a canary gets traffic, it "
            "must answer this request successfully."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class Autoscaling(ApiModel):
    """Replicas follow the load, between minReplicas and maxReplicas."""

    cel_rules = (
        CelRule(
            "self.minReplicas <= self.maxReplicas",
            "minReplicas must not exceed maxReplicas",
            ".minReplicas",
        ),
    )

    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest servers.")
    max_replicas: int = Field(10, ge=1, le=1000, description="Most servers.")
    metric: Literal["concurrency", "rps", "cpu"] = Field(
        "concurrency",
        description=(
            "concurrency (in-flight requests per server) or rps (requests per second per server): "
            "Weir's own autoscaler; cpu: a HorizontalPodAutoscaler (utilization percent)."
        ),
    )
    target: float = Field(
        4.0,
        gt=0,
        le=100000,
        description=(
            "Target per server: in-flight requests, requests/s, or cpu utilization percent."
        ),
    )
    scale_down_delay: Duration = Field(
        "5m", description="Load must stay low this long before servers are removed."
    )


class ParentRef(ApiModel):
    """A Gateway (gateway.networking.k8s.io) the HTTPRoute attaches to."""

    name: str = Field(min_length=1, max_length=253, description="Gateway name.")
    namespace: str | None = Field(
        None, max_length=63, description="Gateway namespace; default: this namespace."
    )
    section_name: str | None = Field(
        None, max_length=253, description="Listener of the Gateway to attach to."
    )


class Gateway(ApiModel):
    """Gateway API routing (traffic.router gateway-api only)."""

    parent_refs: list[ParentRef] = Field(
        min_length=1, max_length=16, description="Gateways the HTTPRoute attaches to."
    )
    hostnames: list[Annotated[str, Field(max_length=253)]] = Field(
        default_factory=list, max_length=16, description="Hostnames the HTTPRoute matches."
    )


class Traffic(ApiModel):
    """How requests reach the servers and how canary traffic is split."""

    cel_rules = (
        CelRule(
            "!has(self.gateway) || self.router == 'gateway-api'",
            "gateway settings are only allowed with router gateway-api",
            ".gateway",
        ),
        CelRule(
            "self.router != 'gateway-api' || has(self.gateway)",
            "router gateway-api needs gateway.parentRefs",
            ".router",
        ),
    )

    router: Literal["replicas", "gateway-api"] = Field(
        "replicas",
        description=(
            "replicas: one Service over both versions, the split follows replica counts (no "
            "mesh needed). gateway-api: an HTTPRoute weights the stable and canary Services."
        ),
    )
    gateway: Gateway | None = Field(None, description=Gateway.__doc__)


class Pause(ApiModel):
    """Wait before the next step."""

    duration: Duration | None = Field(
        None, description="How long to wait, e.g. 30s; without it, wait for `weir promote`."
    )


class Shadow(ApiModel):
    """Mirror a share of the stable's live requests to the canary, asynchronously: clients
    only ever get the stable's answer, and the canary's weight is 0 for the whole step. Its
    errors and latency on mirrored requests are analysed as in any window, and with
    `analysis.agreement` its answers are compared with the stable's."""

    percent: int = Field(100, ge=1, le=100, description="Share of requests mirrored.")
    duration: Duration = Field(description="How long to mirror (and analyse), e.g. 1m.")


class Step(ApiModel):
    """One rollout step: exactly one of setWeight, pause and shadow."""

    cel_rules = (
        CelRule(
            "[has(self.setWeight), has(self.pause), has(self.shadow)].filter(x, x).size() == 1",
            "each step has exactly one of setWeight, pause and shadow",
        ),
    )

    set_weight: int | None = Field(
        None, ge=0, le=100, description="Percent of traffic sent to the canary."
    )
    pause: Pause | None = Field(None, description=Pause.__doc__)
    shadow: Shadow | None = Field(None, description=Shadow.__doc__)


class DirectProvider(ApiModel):
    """Scrape each server's /metrics directly (no Prometheus needed)."""


PROMQL_MAX_LENGTH = 4096


class PrometheusQueries(ApiModel):
    """PromQL templates that replace the defaults, one per measurement. Placeholders:
    {{revision}}, {{namespace}}, {{name}} (the ModelDeployment), {{model}} (served model name)
    and {{interval}} (the analysis interval as a PromQL range, e.g. 10s). Each query must
    return one instant value; an empty result counts as 0 (requests, errors) or no data (p99)."""

    requests: str | None = Field(
        None,
        min_length=1,
        max_length=PROMQL_MAX_LENGTH,
        description="Requests the revision answered in the interval.",
    )
    errors: str | None = Field(
        None,
        min_length=1,
        max_length=PROMQL_MAX_LENGTH,
        description="5xx answers of the revision in the interval.",
    )
    p99: str | None = Field(
        None,
        min_length=1,
        max_length=PROMQL_MAX_LENGTH,
        description="p99 latency of the revision in the interval, in seconds.",
    )


class PrometheusProvider(ApiModel):
    """Query a Prometheus server's HTTP API. The default queries read the servers' own
    weir_inference_* series by their `revision`, `model` and `namespace` labels; the range is
    the analysis interval, which must cover at least two Prometheus scrapes."""

    url: str = Field(
        pattern=r"^https?://[^\s]+$", max_length=2048, description="Prometheus base URL."
    )
    scrape_interval: Duration = Field(
        "30s",
        description=(
            "How often that Prometheus scrapes the servers (the interval of your PodMonitor or "
            "scrape config; 30s is the Prometheus Operator's default). analysis.interval must "
            "be at least twice this: a shorter range holds fewer than two samples, increase() "
            "over it is empty, and every analysis would be Inconclusive, holding the rollout."
        ),
    )
    queries: PrometheusQueries | None = Field(None, description=PrometheusQueries.__doc__)


class MetricsProvider(ApiModel):
    """Where analysis reads request counts and latencies: exactly one of direct, prometheus."""

    cel_rules = (
        CelRule(
            "has(self.direct) != has(self.prometheus)",
            "choose exactly one metrics provider: direct or prometheus",
        ),
    )

    direct: DirectProvider | None = Field(None, description=DirectProvider.__doc__)
    prometheus: PrometheusProvider | None = Field(None, description=PrometheusProvider.__doc__)


class Agreement(ApiModel):
    """The canary's answers compared with the stable's on the same mirrored requests (shadow
    steps): a model that answers fast, with 200, and wrongly fails here. Measured while a
    shadow step mirrors; in weighted steps nothing is mirrored and the check is Skipped."""

    output: str | None = Field(
        None, max_length=256, description="Output compared; default: the model's first output."
    )
    compare: Literal["top1", "close"] = Field(
        "top1",
        description=(
            "top1: the same argmax along the last axis, per row (labels: equal); close: "
            "|c - s| <= atol + rtol*|s| for every element of the row. Another shape or dtype "
            "disagrees, and NaN never agrees."
        ),
    )
    atol: float = Field(1e-4, ge=0, le=1e6, description="Absolute tolerance of close.")
    rtol: float = Field(1e-3, ge=0, le=1e6, description="Relative tolerance of close.")
    min_rate: float = Field(
        0.95, ge=0, le=1, description="Agreeing share of compared rows a window needs to pass."
    )
    min_samples: int = Field(
        50,
        ge=1,
        le=10000000,
        description="Fewer compared rows in a window make the analysis Inconclusive (hold).",
    )
    examples: int = Field(
        0,
        ge=0,
        le=20,
        description=(
            "Keep this many of the latest disagreeing requests, with both answers, in "
            "status.lastAnalysis.agreement.examples (and on the stable servers' "
            "/shadow/examples). Requests can hold personal data, so 0 (none) unless asked."
        ),
    )


INTERVAL_TRAP_MESSAGE = (
    "analysis.interval must be at least twice provider.prometheus.scrapeInterval (30s unless "
    "set): a shorter range holds fewer than two scrapes, so every analysis would be "
    "Inconclusive and hold the rollout forever"
)


class Analysis(ApiModel):
    """How the canary is judged at every interval, against thresholds and against stable."""

    cel_rules = (
        CelRule(
            "!has(self.provider.prometheus) || duration(self.interval) >= "
            "duration(self.provider.prometheus.scrapeInterval) + "
            "duration(self.provider.prometheus.scrapeInterval)",
            INTERVAL_TRAP_MESSAGE,
            ".interval",
        ),
    )

    interval: Duration = Field("10s", description="How often the canary is analysed.")
    failure_threshold: int = Field(
        2, ge=1, le=100, description="Failed analyses in a row that roll the canary back."
    )
    min_requests: int = Field(
        20,
        ge=0,
        le=1000000,
        description=(
            "Fewer canary requests in an interval make the analysis Inconclusive (hold); an "
            "interval without any canary request always is."
        ),
    )
    max_error_rate: float = Field(
        0.01, ge=0, le=1, description="Highest share of 5xx answers the canary may give."
    )
    max_p99_latency_ms: float = Field(
        500, gt=0, le=3600000, description="Highest canary p99 latency (ms)."
    )
    max_latency_ratio: float = Field(
        1.5, ge=1, le=1000, description="Highest canary p99 / stable p99 in the same interval."
    )
    latency_tolerance_ms: float = Field(
        5,
        ge=0,
        le=3600000,
        description=(
            "A canary p99 at most this much above stable's (ms) never fails maxLatencyRatio: "
            "the scheduling jitter of a fast model is not a regression."
        ),
    )
    max_error_rate_increase: float = Field(
        0.01,
        ge=0,
        le=1,
        description=(
            "How much higher than stable's, in the same interval, the canary's error rate may "
            "be (0.01 = one percentage point)."
        ),
    )
    provider: MetricsProvider = Field(
        default_factory=lambda: MetricsProvider(direct=DirectProvider()),
        description=MetricsProvider.__doc__,
    )
    agreement: Agreement | None = Field(None, description=Agreement.__doc__)
    max_prediction_drift: float | None = Field(
        None,
        ge=0,
        le=100,
        description=(
            "Highest PSI of the canary's predicted classes against the stable's, in the same "
            "interval, on the same traffic (weight or mirror): a canary that answers fast and "
            "200 but predicts another mix of classes fails. Both count their predictions only "
            "with spec.monitoring.reference (its output classes); 0.2 is a large shift. Unset: "
            "not checked."
        ),
    )


def _default_steps() -> list[Step]:
    return [
        Step(set_weight=10),
        Step(pause=Pause(duration="30s")),
        Step(set_weight=50),
        Step(pause=Pause(duration="30s")),
    ]


class Rollout(ApiModel):
    """How a new revision replaces the stable one."""

    cel_rules = (
        CelRule(
            "self.steps.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
            "setWeight must not decrease from one step to the next",
            ".steps",
        ),
    )

    steps: list[Step] = Field(
        default_factory=_default_steps,
        max_length=32,
        description="Steps in order; after the last one the canary is promoted to stable.",
    )
    analysis: Analysis = Field(default_factory=Analysis, description=Analysis.__doc__)
    progress_deadline: Duration = Field(
        "10m",
        description=(
            "Time the canary has to become ready for traffic (and to reach full size after the "
            "last step); past it, the canary is rolled back. Steps waiting on analysis never "
            "time out: missing data holds."
        ),
    )
    allow_signature_change: bool = Field(
        False,
        description="Allow a canary whose inputs/outputs differ from stable's (V2 metadata).",
    )


FEATURE_NAME_MAX = 256
MONITORED_FEATURES_MAX = 32


class MonitoringReference(ApiModel):
    """The reference profile the servers count against (`weir profile MODEL.onnx --data
    TRAIN -o reference.json`): per input feature its bins and expected shares, per output its
    class shares and confidence. Fetched next to the model by the same init container, with
    spec.model.auth (the same store), and checked like the model. Part of the revision: a new
    reference rolls out like a new model."""

    uri: str = Field(
        pattern=URI_PATTERN,
        max_length=2048,
        description=(
            "Where reference.json is: https://host/path (or http://), s3://bucket/key, "
            "pvc://CLAIM/PATH or file:///ABS (local runtime and tests only)."
        ),
    )
    sha256: str | None = Field(
        None,
        pattern=SHA256_PATTERN,
        description="Hex sha256 of the file; checked before it is used. A mismatch fails the "
        "revision.",
    )


class DriftSettings(ApiModel):
    """How the stable revision's traffic is judged against the reference: PSI per input
    feature and per output's predicted classes over each window, and the mean confidence
    against the reference's (docs/monitoring.md)."""

    window: Duration = Field(
        "10m", description="How much traffic each measurement covers, and how often it is made."
    )
    threshold: float = Field(
        0.2,
        gt=0,
        le=100,
        description=(
            "A feature's or the prediction's PSI above this is drift (0.1: a small shift, "
            "0.2: a significant one)."
        ),
    )
    min_samples: int = Field(
        500,
        ge=1,
        le=1000000000,
        description=(
            "Fewer rows served in a window give no verdict (Drifting Unknown, NotEnoughData): "
            "no data is not drift."
        ),
    )
    max_confidence_drop: float = Field(
        0.1,
        ge=0,
        le=1,
        description=(
            "Drift when the mean top-1 probability is lower than the reference's by more than this."
        ),
    )
    output: str | None = Field(
        None,
        min_length=1,
        max_length=FEATURE_NAME_MAX,
        description=(
            "The output whose predictions and confidence are judged; default: the one whose "
            "predictions drifted most (the metrics do not say which output is the first)."
        ),
    )


class Monitoring(ApiModel):
    """Model monitoring: the servers count each row they serve into the reference's bins
    (weir_drift_* metrics) and Weir judges the stable revision's traffic once per window
    (status.drift and the Drifting condition)."""

    reference: MonitoringReference | None = Field(None, description=MonitoringReference.__doc__)
    features: list[Annotated[str, Field(min_length=1, max_length=FEATURE_NAME_MAX)]] = Field(
        default_factory=list,
        max_length=MONITORED_FEATURES_MAX,
        description=(
            "Input features judged, by name (input[2]: column 2 of input); default: every "
            "feature of the reference."
        ),
    )
    drift: DriftSettings = Field(default_factory=DriftSettings, description=DriftSettings.__doc__)


class ModelDeploymentSpec(ApiModel):
    """Desired state: the model, how its servers run, scale and take traffic, and how new
    versions roll out."""

    cel_rules = (
        CelRule(
            "!has(self.autoscaling) || self.autoscaling.metric != 'cpu' || "
            "has(self.server.resources.requests.cpu)",
            "autoscaling on cpu needs server.resources.requests.cpu",
            ".autoscaling.metric",
        ),
        CelRule(
            "!has(self.rollout.analysis.maxPredictionDrift) || "
            "(has(self.monitoring) && has(self.monitoring.reference))",
            "needs spec.monitoring.reference: the servers count their predictions only against "
            "a reference (weir profile)",
            ".rollout.analysis.maxPredictionDrift",
        ),
    )

    model: ModelSource = Field(description=ModelSource.__doc__)
    server: ServerSpec = Field(default_factory=ServerSpec, description=ServerSpec.__doc__)
    replicas: int = Field(
        1, ge=0, le=1000, description="Servers when autoscaling is off (the scale subresource)."
    )
    autoscaling: Autoscaling | None = Field(None, description=Autoscaling.__doc__)
    traffic: Traffic = Field(default_factory=Traffic, description=Traffic.__doc__)
    rollout: Rollout = Field(default_factory=Rollout, description=Rollout.__doc__)
    monitoring: Monitoring | None = Field(None, description=Monitoring.__doc__)


class ObjectMeta(BaseModel):
    """The metadata fields Weir reads; the rest is kept as given."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=45)
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelDeployment(BaseModel):
    """A parsed ModelDeployment: metadata plus a validated, defaulted spec."""

    model_config = ConfigDict(frozen=True)

    api_version: Literal["serving.weir.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelDeployment"]
    metadata: ObjectMeta
    spec: ModelDeploymentSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def model_name(self) -> str:
        return self.spec.model.name or self.metadata.name


class SpecError(ValueError):
    """A manifest that is not a valid ModelDeployment; one line per problem, each with its path."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        where = f"{source}: " if source else ""
        super().__init__(where + "invalid ModelDeployment:\n  " + "\n  ".join(problems))


# What each pattern means, for error messages a person can act on.
PATTERN_HINTS = {
    DURATION_PATTERN: "must be a duration such as 30s, 1m30s, 250ms or 2h",
    SHA256_PATTERN: "must be 64 hexadecimal characters (a sha256 digest)",
    URI_PATTERN: (
        "must be an https://, http://, s3://BUCKET/KEY, pvc://CLAIM/PATH or file:///ABS URI"
    ),
    MODEL_NAME_PATTERN: (
        "must be 1-63 letters, digits, '.', '_' or '-', starting and ending alphanumeric"
    ),
    QUANTITY_PATTERN: "must be a Kubernetes quantity such as 500m, 2, 512Mi or 1Gi",
    ENV_NAME_PATTERN: "must be a valid environment variable name",
    MODEL_VERSION_PATTERN: 'must not contain "/" or whitespace (it is a URL path segment)',
}


def _field_path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + part
    return path or "(root)"


def describe_errors(error: ValidationError) -> list[str]:
    """pydantic's errors as `field.path: message` lines, in YAML's camelCase names."""
    problems = []
    for item in error.errors():
        location = tuple(p for p in item["loc"] if not (isinstance(p, str) and "[" in p))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "string_pattern_mismatch":
            pattern = item.get("ctx", {}).get("pattern", "")
            hint = PATTERN_HINTS.get(pattern, f"must match {pattern}")
            message = f"{hint}, got {item['input']!r}"
        path = _field_path(location)
        if item["type"] == "cel" and item.get("ctx", {}).get("field"):
            path += item["ctx"]["field"]
        problems.append(f"{path}: {message}")
    return problems


def parse_model_deployment(document: Any, source: str = "") -> ModelDeployment:
    """Validate and default a ModelDeployment manifest (a dict from YAML); SpecError if invalid."""
    if not isinstance(document, dict):
        raise SpecError(["(root): a ModelDeployment must be a mapping"], source)
    document = {k: v for k, v in document.items() if k != "status"}
    try:
        return ModelDeployment.model_validate(document)
    except ValidationError as error:
        raise SpecError(describe_errors(error), source) from None


def warm_up_cel_rules() -> None:
    """Compile every CEL rule now: the first compile is slow, and concurrent reconciles would
    otherwise all pay for it at once."""
    from weir_operator.core.celrules import compiled

    for model in (
        ModelDeploymentSpec,
        EnvVar,
        Autoscaling,
        Traffic,
        Step,
        MetricsProvider,
        Rollout,
    ):
        for rule in model.cel_rules:
            compiled(rule.rule)
