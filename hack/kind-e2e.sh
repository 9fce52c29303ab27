#!/usr/bin/env bash
# Weir on a real cluster (kind): build the image, load it into kind, `helm install` the chart,
# serve example models inside the cluster, apply a ModelDeployment, send traffic through
# `kubectl port-forward`, roll out a good model (promoted: `weir status --wait` exits 0) and a bad
# one (rolled back by the operator alone: it exits 1). With --gateway-api, a second phase
# installs the Gateway API CRDs and Envoy Gateway and repeats it with `traffic.router:
# gateway-api` (an HTTPRoute weights the tracks).
#
#   hack/kind-e2e.sh                  # phase 1 (router: replicas); the cluster is deleted at exit
#   hack/kind-e2e.sh --gateway-api    # phases 1 and 2
#   hack/kind-e2e.sh --keep           # keep the cluster and the work folder for a look around
#   hack/kind-e2e.sh --dry-run        # print every command instead of running it (tests do this)
#
# Needs: Docker, kind (>= 0.24), kubectl, helm (else the pinned one from hack/helm.py), the
# project's venv (`make setup`), and internet access for the kindest/node image, BASE_IMAGE, the
# Gateway API CRDs and the Envoy Gateway chart (docker.io).
#
# How the model files reach the pods: the harness builds the sample models on the host, then a
# small "fixtures" image FROM the Weir image it just built, with the models copied in
# (hack/kind-e2e/fixtures.Dockerfile), and loads it into kind like the Weir image. In the cluster
# it runs `python -m http.server` (Deployment + Service weir-e2e-models), so spec.model.uri is
# http://weir-e2e-models.weir-e2e.svc:8000/iris-N.onnx with its sha256. Nothing is pulled from a
# registry for it, no ConfigMap size limit applies, no `tar` is needed in the image (kubectl cp
# needs one) and the files survive a pod restart; serving from the host would depend on the
# Docker network's gateway address and on the host's firewall.
#
# How traffic reaches a canary: `kubectl port-forward svc/X` tunnels to ONE pod of the Service,
# so the harness port-forwards to a relay (hack/kind-e2e/relay.py, in the fixtures image) that
# opens a new connection to the `iris` Service for every request; kube-proxy then spreads
# requests over the stable and canary pods like it does for real clients. For the gateway-api
# phase the port-forward goes to Envoy's Service, and Envoy applies the HTTPRoute's weights.
#
# Settings (environment): KIND_CLUSTER_NAME (or --name), BASE_IMAGE, IMAGE (name:tag of the Weir
# image), FIXTURES_IMAGE, KIND_NODE_IMAGE, GATEWAY_API_VERSION, ENVOY_GATEWAY_VERSION,
# E2E_LOCAL_PORT, E2E_ROLLOUT_TIMEOUT, E2E_MIN_OK_REQUESTS, and the tools: KIND, DOCKER, KUBECTL,
# HELM, PYTHON, WEIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

CLUSTER=${KIND_CLUSTER_NAME:-weir-e2e}
BASE_IMAGE=${BASE_IMAGE:-python:3.12-slim}
IMAGE=${IMAGE:-weir:kind-e2e}
FIXTURES_IMAGE=${FIXTURES_IMAGE:-weir-e2e-fixtures:kind-e2e}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-}
# Envoy Gateway v1.3 is built and tested against Gateway API v1.2.1 (its compatibility matrix),
# the release tests/support/gateway_api.py pins too.
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.2.1}
ENVOY_GATEWAY_VERSION=${ENVOY_GATEWAY_VERSION:-v1.3.3}
LOCAL_PORT=${E2E_LOCAL_PORT:-18080}
ROLLOUT_TIMEOUT=${E2E_ROLLOUT_TIMEOUT:-10m}
KIND=${KIND:-kind}
DOCKER=${DOCKER:-docker}
KUBECTL=${KUBECTL:-}
HELM=${HELM:-}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WEIR=${WEIR:-$ROOT/.venv/bin/weir}

NAMESPACE=weir-e2e
OPERATOR_NAMESPACE=weir-system
RELEASE=weir
OPERATOR_DEPLOYMENT=weir  # the chart's fullname for a release named "weir"
MODELS_SERVICE=weir-e2e-models
MODELS_PORT=8000
RELAY=weir-e2e-relay
GATEWAY=weir-e2e
ENVOY_NAMESPACE="envoy-gateway-system"
SERVICE_PORT=80  # the port of the <md> Services the operator creates
MIN_OK_REQUESTS=${E2E_MIN_OK_REQUESTS:-100}  # answers 200 each traffic phase must get

DRY_RUN=0
KEEP=0
GATEWAY_API=0
WORKDIR=""
CREATED_WORKDIR=0
CREATED_CLUSTER=0
CLUSTER_UP=0
BACKGROUND=()
SHA=()

usage() {
  cat <<EOF
usage: hack/kind-e2e.sh [--name CLUSTER] [--gateway-api] [--keep] [--dry-run] [--workdir DIR]

  --name CLUSTER   kind cluster name (default: \$KIND_CLUSTER_NAME or weir-e2e); an existing
                   cluster of that name is reused (its $NAMESPACE namespace is recreated) and
                   not deleted at exit
  --gateway-api    also run phase 2: Gateway API CRDs $GATEWAY_API_VERSION, Envoy Gateway
                   $ENVOY_GATEWAY_VERSION, a ModelDeployment with traffic.router gateway-api
  --keep           keep the cluster and the work folder at exit (prints how to reach them)
  --dry-run        print the commands instead of running them; manifests are still rendered
                   into the work folder
  --workdir DIR    work folder (kubeconfig, models, manifests, logs); default: a new temp folder
EOF
}

log() { printf '[kind-e2e] %s\n' "$*"; }
die() {
  printf 'kind-e2e: error: %s\n' "$*" >&2
  exit 1
}
step() { printf '== %s\n' "$1"; }

# Prints a command, each word shell-quoted (single quotes only where needed, so a printed line
# can be pasted back into a shell), then a suffix: `show SUFFIX CMD...`.
show() {
  local suffix=$1 word line="+"
  shift
  for word in "$@"; do
    if [[ $word =~ ^[-A-Za-z0-9_./:=@,+%]+$ ]]; then
      line+=" $word"
    else
      line+=" '${word//\'/\'\\\'\'}'"
    fi
  done
  printf '%s%s\n' "$line" "$suffix"
}

# Runs a command (printed first), or only prints it with --dry-run.
run() {
  show "" "$@"
  ((DRY_RUN)) || "$@"
}

# run_bg VAR LOG CMD...: starts CMD in the background (output to LOG); its pid goes into VAR.
run_bg() {
  local var=$1 logfile=$2
  shift 2
  show " >$logfile 2>&1 &" "$@"
  if ((DRY_RUN)); then
    printf -v "$var" '%s' "<$var>"
    return 0
  fi
  "$@" >"$logfile" 2>&1 &
  local pid=$!
  BACKGROUND+=("$pid")
  printf -v "$var" '%s' "$pid"
}

# expect_exit CODE CMD...: runs CMD and fails unless it exits with CODE.
expect_exit() {
  local expected=$1
  shift
  show "  # expect exit $expected" "$@"
  ((DRY_RUN)) && return 0
  local rc=0
  "$@" || rc=$?
  ((rc == expected)) || die "\`$*\` exited $rc, expected $expected"
}

# capture VAR CMD...: VAR gets CMD's output (in a dry run, the placeholder <VAR>).
capture() {
  local var=$1
  shift
  show "" "$@"
  if ((DRY_RUN)); then
    printf -v "$var" '%s' "<$var>"
    return 0
  fi
  local out
  out=$("$@")
  printf -v "$var" '%s' "$out"
}

# eventually SECONDS EXPECTED CMD...: polls CMD until its output is EXPECTED.
eventually() {
  local seconds=$1 expected=$2
  shift 2
  show "  # expect output '$expected' within ${seconds}s" "$@"
  ((DRY_RUN)) && return 0
  local deadline=$((SECONDS + seconds)) out=""
  while :; do
    out=$("$@" 2>&1) || true
    [[ $out == "$expected" ]] && return 0
    ((SECONDS < deadline)) || die "\`$*\` printed '$out', expected '$expected' (waited ${seconds}s)"
    sleep 2
  done
}

# stop_bg PID: SIGTERM, then waits; returns the process' exit status.
stop_bg() {
  local pid=$1
  run kill -TERM "$pid"
  ((DRY_RUN)) && return 0
  local rc=0
  wait "$pid" || rc=$?
  local kept=()
  local other
  for other in ${BACKGROUND[@]+"${BACKGROUND[@]}"}; do
    [[ $other == "$pid" ]] || kept+=("$other")
  done
  BACKGROUND=(${kept[@]+"${kept[@]}"})
  return "$rc"
}

kubectl_() { run "$KUBECTL" "$@"; }

sha256_of() {
  if ((DRY_RUN)); then
    printf '%064d\n' 0  # the models are not built in a dry run
  else
    "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
  fi
}

parse_args() {
  while (($#)); do
    case $1 in
      --name)
        (($# >= 2)) || {
          usage >&2
          exit 2
        }
        CLUSTER=$2
        shift
        ;;
      --gateway-api) GATEWAY_API=1 ;;
      --keep) KEEP=1 ;;
      --dry-run) DRY_RUN=1 ;;
      --workdir)
        (($# >= 2)) || {
          usage >&2
          exit 2
        }
        WORKDIR=$2
        shift
        ;;
      -h | --help)
        usage
        exit 0
        ;;
      *)
        printf 'kind-e2e: unknown argument: %s\n' "$1" >&2
        usage >&2
        exit 2
        ;;
    esac
    shift
  done
  [[ $CLUSTER =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "cluster name '$CLUSTER' is not a DNS label"
  [[ $IMAGE == *:* && ${IMAGE##*:} != */* ]] || die "IMAGE must be NAME:TAG, got '$IMAGE'"
}

# --- steps --------------------------------------------------------------------------------------

preflight() {
  step "preflight"
  if ((DRY_RUN)); then
    KUBECTL=${KUBECTL:-kubectl}
    HELM=${HELM:-helm}
    log "dry run: nothing is executed; sha256 values are placeholders (models are not built)"
    return 0
  fi
  [[ -x $PYTHON && -x $WEIR ]] || die "no project venv at $ROOT/.venv: run \`make setup\` first"
  local tool
  for tool in "$KIND" "$DOCKER"; do
    command -v "$tool" >/dev/null || die "$tool is not on PATH (see the top of $0)"
  done
  "$DOCKER" info >/dev/null 2>&1 || die "the Docker engine does not answer (\`$DOCKER info\`)"
  if [[ -z $KUBECTL ]]; then
    KUBECTL=$(command -v kubectl || true)
    KUBECTL=${KUBECTL:-$ROOT/.venv/bin/kubectl}
  fi
  [[ -x $(command -v "$KUBECTL" || true) ]] || die "no kubectl (set KUBECTL)"
  if [[ -z $HELM ]]; then
    HELM=$(command -v helm || true)
    HELM=${HELM:-$("$PYTHON" "$ROOT/hack/helm.py")}
  fi
  log "tools: $KIND, $DOCKER, $KUBECTL, $HELM, $WEIR"
}

setup_workdir() {
  step "workdir"
  if [[ -z $WORKDIR ]]; then
    WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/weir-kind-e2e.XXXXXX")
    CREATED_WORKDIR=1
  fi
  mkdir -p "$WORKDIR/manifests" "$WORKDIR/fixtures/models" "$WORKDIR/logs"
  WORKDIR=$(cd "$WORKDIR" && pwd)
  export KUBECONFIG="$WORKDIR/kubeconfig"
  log "work folder $WORKDIR (kubeconfig, models, manifests, logs)"
}

cluster_exists() {
  ((DRY_RUN)) && return 1
  "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"
}

create_cluster() {
  step "create cluster"
  if cluster_exists; then
    log "reusing the existing kind cluster $CLUSTER (it is not deleted at exit)"
    run "$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
    CLUSTER_UP=1
    kubectl_ delete namespace "$NAMESPACE" --ignore-not-found --wait=true --timeout=3m
    return 0
  fi
  local args=(create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s)
  [[ -n $KIND_NODE_IMAGE ]] && args+=(--image "$KIND_NODE_IMAGE")
  CREATED_CLUSTER=1
  run "$KIND" "${args[@]}"
  CLUSTER_UP=1
}

build_image() {
  step "build image"
  run "$DOCKER" build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$ROOT"
}

build_models() {
  step "build models"
  local built="$WORKDIR/sample-models" models="$WORKDIR/fixtures/models"
  run "$PYTHON" -m weir_server.sample_models "$built"
  # v1 and v2: good iris classifiers; v3: slower and failing on long sepals (HTTP 500).
  run cp "$built/iris.onnx" "$models/iris-1.onnx"
  run cp "$built/iris_v2.onnx" "$models/iris-2.onnx"
  run cp "$built/iris_bad.onnx" "$models/iris-3.onnx"
  local version
  for version in 1 2 3; do
    SHA[version]=$(sha256_of "$models/iris-$version.onnx")
  done
}

build_fixtures_image() {
  step "build fixtures image"
  run cp "$ROOT/hack/kind-e2e/relay.py" "$WORKDIR/fixtures/relay.py"
  run cp "$ROOT/hack/kind-e2e/fixtures.Dockerfile" "$WORKDIR/fixtures/Dockerfile"
  run "$DOCKER" build --build-arg "WEIR_IMAGE=$IMAGE" -t "$FIXTURES_IMAGE" "$WORKDIR/fixtures"
}

load_images() {
  step "load images"
  run "$KIND" load docker-image "$IMAGE" "$FIXTURES_IMAGE" --name "$CLUSTER"
}

install_weir() {
  step "helm install"
  # `upgrade --install` is `helm install` on a new cluster, and idempotent on a reused one.
  run "$HELM" upgrade --install "$RELEASE" "$ROOT/charts/weir" \
    --namespace "$OPERATOR_NAMESPACE" --create-namespace \
    --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}" \
    --set image.pullPolicy=Never --set logLevel=debug \
    --wait --timeout 5m
  kubectl_ -n "$OPERATOR_NAMESPACE" rollout status "deployment/$OPERATOR_DEPLOYMENT" --timeout=3m
}

model_uri() { printf 'http://%s.%s.svc:%s/iris-%s.onnx' "$MODELS_SERVICE" "$NAMESPACE" "$MODELS_PORT" "$1"; }

render_fixtures() {
  local file="$WORKDIR/manifests/fixtures.yaml"
  local security='      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile:
          type: RuntimeDefault'
  local container_security='          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]'
  cat >"$file" <<EOF
# The kind harness's namespace, model file server and relay (rendered by hack/kind-e2e.sh).
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $MODELS_SERVICE
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: $MODELS_SERVICE
    app.kubernetes.io/part-of: weir-e2e
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: $MODELS_SERVICE
  template:
    metadata:
      labels:
        app.kubernetes.io/name: $MODELS_SERVICE
        app.kubernetes.io/part-of: weir-e2e
    spec:
      automountServiceAccountToken: false
$security
      containers:
        - name: models
          image: $FIXTURES_IMAGE
          imagePullPolicy: Never
          command: ["/opt/weir/bin/python", "-m", "http.server", "$MODELS_PORT", "--directory", "/e2e/models"]
          ports:
            - name: http
              containerPort: $MODELS_PORT
              protocol: TCP
          readinessProbe:
            httpGet:
              path: /iris-1.onnx
              port: http
            periodSeconds: 2
          resources:
            requests:
              cpu: 50m
              memory: 64Mi
            limits:
              memory: 256Mi
$container_security
---
apiVersion: v1
kind: Service
metadata:
  name: $MODELS_SERVICE
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: $MODELS_SERVICE
    app.kubernetes.io/part-of: weir-e2e
spec:
  selector:
    app.kubernetes.io/name: $MODELS_SERVICE
  ports:
    - name: http
      port: $MODELS_PORT
      targetPort: http
      protocol: TCP
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $RELAY
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: $RELAY
    app.kubernetes.io/part-of: weir-e2e
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: $RELAY
  template:
    metadata:
      labels:
        app.kubernetes.io/name: $RELAY
        app.kubernetes.io/part-of: weir-e2e
    spec:
      automountServiceAccountToken: false
$security
      containers:
        - name: relay
          image: $FIXTURES_IMAGE
          imagePullPolicy: Never
          command: ["/opt/weir/bin/python", "/e2e/relay.py", "--port", "8000", "--upstream", "http://iris.$NAMESPACE.svc:$SERVICE_PORT"]
          ports:
            - name: http
              containerPort: 8000
              protocol: TCP
          readinessProbe:
            tcpSocket:
              port: http
            periodSeconds: 2
          resources:
            requests:
              cpu: 50m
              memory: 64Mi
            limits:
              memory: 256Mi
$container_security
---
apiVersion: v1
kind: Service
metadata:
  name: $RELAY
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: $RELAY
    app.kubernetes.io/part-of: weir-e2e
spec:
  selector:
    app.kubernetes.io/name: $RELAY
  ports:
    - name: http
      port: 8000
      targetPort: http
      protocol: TCP
EOF
}

# render_modeldeployment NAME ROUTER FILE: v1 of the iris model, quick canary steps.
render_modeldeployment() {
  local name=$1 router=$2 file=$3 traffic
  if [[ $router == gateway-api ]]; then
    traffic="  traffic:
    router: gateway-api
    gateway:
      parentRefs:
        - name: $GATEWAY"
  else
    traffic="  traffic:
    router: replicas"
  fi
  cat >"$file" <<EOF
# Rendered by hack/kind-e2e.sh: iris v1; the harness then ships v2 (good) and v3 (bad).
apiVersion: serving.weir.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: $name
  namespace: $NAMESPACE
spec:
  model:
    uri: $(model_uri 1)
    sha256: "${SHA[1]}"
    name: iris
    version: "1"
  server:
    sampleInput:
      inputs:
        - {name: input, shape: [1, 4], datatype: FP32, data: [5.1, 3.5, 1.4, 0.2]}
  replicas: 2
$traffic
  rollout:
    steps:
      - setWeight: 20
      - pause: {duration: 20s}
      - setWeight: 50
      - pause: {duration: 20s}
    analysis:
      interval: 10s
      failureThreshold: 2
      minRequests: 20
      provider:
        direct: {}
    progressDeadline: 10m
EOF
}

render_gateway() {
  cat >"$WORKDIR/manifests/gateway.yaml" <<EOF
# Rendered by hack/kind-e2e.sh: an Envoy Gateway class and one HTTP gateway for the harness.
# Envoy's Service is a ClusterIP: kind has no load balancer, and Envoy Gateway reports a Gateway
# Programmed only once its Service has an address. Traffic comes in through a port-forward.
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyProxy
metadata:
  name: $GATEWAY
  namespace: $ENVOY_NAMESPACE
spec:
  provider:
    type: Kubernetes
    kubernetes:
      envoyService:
        type: ClusterIP
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: $GATEWAY
spec:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
  parametersRef:
    group: gateway.envoyproxy.io
    kind: EnvoyProxy
    name: $GATEWAY
    namespace: $ENVOY_NAMESPACE
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: $GATEWAY
  namespace: $NAMESPACE
spec:
  gatewayClassName: $GATEWAY
  listeners:
    - name: http
      protocol: HTTP
      port: 80
      allowedRoutes:
        namespaces:
          from: Same
EOF
}

render_manifests() {
  step "render manifests"
  render_fixtures
  render_modeldeployment iris replicas "$WORKDIR/manifests/iris.yaml"
  if ((GATEWAY_API)); then
    render_gateway
    render_modeldeployment iris-gw gateway-api "$WORKDIR/manifests/iris-gw.yaml"
  fi
  log "manifests in $WORKDIR/manifests"
}

apply_fixtures() {
  step "apply fixtures"
  kubectl_ apply -f "$WORKDIR/manifests/fixtures.yaml"
  kubectl_ -n "$NAMESPACE" rollout status "deployment/$MODELS_SERVICE" --timeout=3m
  kubectl_ -n "$NAMESPACE" rollout status "deployment/$RELAY" --timeout=3m
}

# deploy_model NAME: applies the rendered v1 manifest; the first revision becomes stable directly.
deploy_model() {
  local name=$1
  step "apply $name v1"
  kubectl_ apply -f "$WORKDIR/manifests/$name.yaml"
  expect_exit 0 "$WEIR" status "$name" -n "$NAMESPACE" --wait --timeout "$ROLLOUT_TIMEOUT"
  eventually 60 "Healthy 1" "$KUBECTL" -n "$NAMESPACE" get md "$name" \
    -o 'jsonpath={.status.phase} {.status.stable.version}'
}

# start_traffic LABEL NAMESPACE SERVICE PORT: port-forward to svc/SERVICE and send traffic.
start_traffic() {
  local label=$1 namespace=$2 service=$3 port=$4
  step "traffic ($label)"
  run_bg FORWARD_PID "$WORKDIR/logs/port-forward-$label.log" \
    "$KUBECTL" -n "$namespace" port-forward "svc/$service" "$LOCAL_PORT:$port"
  run_bg TRAFFIC_PID "$WORKDIR/logs/traffic-$label.log" \
    "$PYTHON" "$ROOT/hack/kind-e2e/traffic.py" --url "http://127.0.0.1:$LOCAL_PORT" \
    --model iris --rate 40 --min-ok "$MIN_OK_REQUESTS" \
    --summary "$WORKDIR/logs/traffic-$label.json"
}

stop_traffic() {
  local label=$1 rc=0
  step "stop traffic ($label)"
  stop_bg "$TRAFFIC_PID" || rc=$?
  stop_bg "$FORWARD_PID" || true
  ((DRY_RUN)) && return 0
  log "answers by HTTP status: $(cat "$WORKDIR/logs/traffic-$label.json" 2>/dev/null || echo none)"
  ((rc == 0)) || die "traffic ($label) got fewer than $MIN_OK_REQUESTS answers 200 or never started (exit $rc): $(tail -5 "$WORKDIR/logs/traffic-$label.log")"
}

rollout_good() {
  local name=$1
  step "rollout $name v2 (good): expect promotion"
  run "$WEIR" set-model "$name" -n "$NAMESPACE" --uri "$(model_uri 2)" --sha256 "${SHA[2]}" --version 2
  expect_exit 0 "$WEIR" status "$name" -n "$NAMESPACE" --wait --timeout "$ROLLOUT_TIMEOUT"
  eventually 60 "Healthy 2" "$KUBECTL" -n "$NAMESPACE" get md "$name" \
    -o 'jsonpath={.status.phase} {.status.stable.version}'
}

rollout_bad() {
  local name=$1
  step "rollout $name v3 (bad): expect automatic rollback"
  run "$WEIR" set-model "$name" -n "$NAMESPACE" --uri "$(model_uri 3)" --sha256 "${SHA[3]}" --version 3
  expect_exit 1 "$WEIR" status "$name" -n "$NAMESPACE" --wait --timeout "$ROLLOUT_TIMEOUT"
  eventually 60 "RolledBack 2" "$KUBECTL" -n "$NAMESPACE" get md "$name" \
    -o 'jsonpath={.status.phase} {.status.stable.version}'
  eventually 60 "RolledBack" "$KUBECTL" -n "$NAMESPACE" get md "$name" \
    -o 'jsonpath={.status.history[0].outcome}'
}

# Traffic is back on the stable revision: the <md> Service selects only it.
assert_service_on_stable() {
  local name=$1 stable
  capture stable "$KUBECTL" -n "$NAMESPACE" get md "$name" -o 'jsonpath={.status.stable.revision}'
  eventually 60 "$stable" "$KUBECTL" -n "$NAMESPACE" get service "$name" \
    -o 'jsonpath={.spec.selector.serving\.weir\.dev/revision}'
}

phase_replicas() {
  step "phase 1: traffic.router replicas"
  deploy_model iris
  start_traffic replicas "$NAMESPACE" "$RELAY" 8000
  rollout_good iris
  rollout_bad iris
  assert_service_on_stable iris
  stop_traffic replicas
}

install_gateway_api() {
  step "install Gateway API $GATEWAY_API_VERSION and Envoy Gateway $ENVOY_GATEWAY_VERSION"
  kubectl_ apply --server-side -f \
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml"
  # The chart's own copy of the Gateway API CRDs is skipped by Helm: they exist already.
  run "$HELM" upgrade --install eg oci://docker.io/envoyproxy/gateway-helm \
    --version "$ENVOY_GATEWAY_VERSION" --namespace "$ENVOY_NAMESPACE" --create-namespace \
    --wait --timeout 5m
  kubectl_ -n "$ENVOY_NAMESPACE" wait deployment/envoy-gateway --for=condition=Available --timeout=5m
  kubectl_ apply -f "$WORKDIR/manifests/gateway.yaml"
  kubectl_ -n "$NAMESPACE" wait "gateway/$GATEWAY" --for=condition=Programmed --timeout=5m
}

phase_gateway_api() {
  step "phase 2: traffic.router gateway-api"
  kubectl_ -n "$NAMESPACE" delete md iris --ignore-not-found --wait=true --timeout=3m
  install_gateway_api
  deploy_model iris-gw
  local envoy
  capture envoy "$KUBECTL" -n "$ENVOY_NAMESPACE" get service \
    -l "gateway.envoyproxy.io/owning-gateway-name=$GATEWAY,gateway.envoyproxy.io/owning-gateway-namespace=$NAMESPACE" \
    -o 'jsonpath={.items[0].metadata.name}'
  [[ -n $envoy ]] || die "no Envoy Service for gateway $NAMESPACE/$GATEWAY"
  start_traffic gateway-api "$ENVOY_NAMESPACE" "$envoy" 80
  rollout_good iris-gw
  eventually 60 "100 0" "$KUBECTL" -n "$NAMESPACE" get httproute iris-gw \
    -o 'jsonpath={.spec.rules[0].backendRefs[*].weight}'
  rollout_bad iris-gw
  eventually 60 "100 0" "$KUBECTL" -n "$NAMESPACE" get httproute iris-gw \
    -o 'jsonpath={.spec.rules[0].backendRefs[*].weight}'
  stop_traffic gateway-api
}

diagnose() {
  step "diagnostics"
  local k=("$KUBECTL")
  "${k[@]}" get md -A -o wide || true
  "${k[@]}" -n "$NAMESPACE" describe md || true
  "${k[@]}" get pods -A -o wide || true
  "${k[@]}" -n "$NAMESPACE" get events --sort-by=.lastTimestamp | tail -40 || true
  "${k[@]}" -n "$OPERATOR_NAMESPACE" logs "deployment/$OPERATOR_DEPLOYMENT" --tail=150 || true
  tail -n 5 "$WORKDIR"/logs/*.log 2>/dev/null || true
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  step "cleanup"
  local pid
  for pid in ${BACKGROUND[@]+"${BACKGROUND[@]}"}; do
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if ((rc != 0 && CLUSTER_UP && !DRY_RUN)); then
    diagnose
  fi
  if ((KEEP)); then
    log "kept: cluster $CLUSTER (KUBECONFIG=${KUBECONFIG:-}), work folder $WORKDIR"
    log "delete with: $KIND delete cluster --name $CLUSTER"
  else
    ((CREATED_CLUSTER)) && run "$KIND" delete cluster --name "$CLUSTER"
    ((CREATED_WORKDIR && !DRY_RUN)) && rm -rf "$WORKDIR"
  fi
  if ((DRY_RUN)); then
    log "dry run done (exit $rc)"
  elif ((rc == 0)); then
    log "PASSED"
  else
    log "FAILED (exit $rc)"
  fi
  exit "$rc"
}

main() {
  parse_args "$@"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  preflight
  setup_workdir
  create_cluster
  build_image
  build_models
  build_fixtures_image
  load_images
  install_weir
  render_manifests
  apply_fixtures
  phase_replicas
  if ((GATEWAY_API)); then
    phase_gateway_api
  fi
}

main "$@"
