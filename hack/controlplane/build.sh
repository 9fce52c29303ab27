#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager from Go modules
# (see hack/controlplane/README.md) into .cache/controlplane/<pin>/bin/.
#
#   hack/controlplane/build.sh            # build if needed; last stdout line = bin folder
#   BIN=$(hack/controlplane/build.sh)     # progress goes to stderr, the folder to stdout
#   CONTROLPLANE_FORCE=1 hack/controlplane/build.sh   # rebuild even if the binaries exist
#
# The pin is the Kubernetes and etcd versions plus a hash of both wrapper modules'
# go.mod/go.sum and of the build flags; a change to any of them gives a new folder.
# Nothing is rebuilt while the binaries for the current pin exist.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
K8S_MOD="$HERE/kubernetes"
ETCD_MOD="$HERE/etcd"
CACHE="${CONTROLPLANE_CACHE:-$REPO/.cache/controlplane}"

log() { printf '[controlplane] %s\n' "$*" >&2; }
die() { printf '[controlplane] error: %s\n' "$*" >&2; exit 1; }

for tool in sha256sum awk; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' was not found on PATH"
done

# Builds use the module files exactly as committed, outside any go.work.
export GOWORK=off GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly" CGO_ENABLED=0

# Versions come from the committed go.mod files (no network needed for this).
mod_version() { awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$1/go.mod"; }
K8S_VERSION=$(mod_version "$K8S_MOD" k8s.io/kubernetes)
ETCD_VERSION=$(mod_version "$ETCD_MOD" go.etcd.io/etcd/server/v3)
[[ -n $K8S_VERSION && -n $ETCD_VERSION ]] || die "cannot read the pinned versions from $K8S_MOD/go.mod and $ETCD_MOD/go.mod"
[[ $K8S_VERSION =~ ^v([0-9]+)\.([0-9]+)\.[0-9]+$ ]] || die "unexpected Kubernetes version '$K8S_VERSION'"
K8S_MAJOR=${BASH_REMATCH[1]}
K8S_MINOR=${BASH_REMATCH[2]}

BUILD_FLAGS=(-trimpath -buildvcs=false)
BASE_LDFLAGS="-s -w"
RECIPE="CGO_ENABLED=$CGO_ENABLED ${BUILD_FLAGS[*]} ldflags=$BASE_LDFLAGS version-vars=v1"
HASH=$(cat "$K8S_MOD/go.mod" "$K8S_MOD/go.sum" "$ETCD_MOD/go.mod" "$ETCD_MOD/go.sum" <(echo "$RECIPE") |
    sha256sum | cut -c1-12)
PIN="k8s-$K8S_VERSION-etcd-v${ETCD_VERSION#v}-$HASH"
OUT="$CACHE/$PIN"
BIN="$OUT/bin"
BINARIES=(etcd kube-apiserver kube-controller-manager)

have_all() {
    local b
    for b in "${BINARIES[@]}"; do [[ -x $BIN/$b ]] || return 1; done
}

if [[ -z ${CONTROLPLANE_FORCE:-} ]] && have_all; then
    log "up to date: $PIN (CONTROLPLANE_FORCE=1 rebuilds)"
    echo "$BIN"
    exit 0
fi

# Only a build needs Go: binaries already built for this pin are used without it.
command -v go >/dev/null 2>&1 ||
    die "'go' was not found on PATH. Go >= 1.26 is needed to build the control plane (https://go.dev/dl/)."

mkdir -p "$CACHE"
# One build at a time: a second caller waits, then finds the binaries.
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null 2>&1; then
    flock -n 9 || { log "another build holds $CACHE/.lock; waiting"; flock 9; }
fi
if [[ -z ${CONTROLPLANE_FORCE:-} ]] && have_all; then
    log "up to date: $PIN (built by another process)"
    echo "$BIN"
    exit 0
fi

log "$(go version)"
log "pin $PIN: Kubernetes $K8S_VERSION, etcd $ETCD_VERSION"
log "GOMODCACHE=$(go env GOMODCACHE) GOCACHE=$(go env GOCACHE)"
log "a cold build downloads ~160 MB of modules (~850 MB in GOMODCACHE) and compiles for ~15-20 min on 2 cores (~3.8 GB in GOCACHE); later runs reuse both caches"

STAGE="$OUT/bin.partial.$$"
trap 'rm -rf "$STAGE"' EXIT
rm -rf "$STAGE"
mkdir -p "$STAGE"

TOTAL_START=$SECONDS
step() { # step <label> <dir> <command...>: runs the command in dir and prints its duration
    local label=$1 dir=$2 start=$SECONDS
    shift 2
    log "$label ..."
    (cd "$dir" && "$@") || die "$label failed (exit $?); command: (cd $dir && $*)"
    log "$label: $((SECONDS - start))s"
}

K8S_PKGS=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
# `go list -deps` downloads exactly the modules these packages need (less than `go mod download`).
step "download modules for Kubernetes $K8S_VERSION" "$K8S_MOD" go list -deps "${K8S_PKGS[@]}" >/dev/null
step "download modules for etcd $ETCD_VERSION" "$ETCD_MOD" go list -deps go.etcd.io/etcd/server/v3 >/dev/null

# Like kube::version::ldflags in kubernetes/hack/lib/version.sh; buildDate is the release's
# publication time in the module proxy, so the binaries are reproducible.
BUILD_DATE=$(cd "$K8S_MOD" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
K8S_LDFLAGS=$BASE_LDFLAGS
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$K8S_MAJOR -X $pkg.gitMinor=$K8S_MINOR"
    K8S_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$BUILD_DATE"
done

step "build etcd" "$ETCD_MOD" \
    go build "${BUILD_FLAGS[@]}" -ldflags "$BASE_LDFLAGS" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3
step "build kube-apiserver" "$K8S_MOD" \
    go build "${BUILD_FLAGS[@]}" -ldflags "$K8S_LDFLAGS" -o "$STAGE/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
step "build kube-controller-manager" "$K8S_MOD" \
    go build "${BUILD_FLAGS[@]}" -ldflags "$K8S_LDFLAGS" -o "$STAGE/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager

"$STAGE/kube-apiserver" --version | grep -qx "Kubernetes $K8S_VERSION" ||
    die "kube-apiserver reports '$("$STAGE/kube-apiserver" --version)', expected 'Kubernetes $K8S_VERSION'"
"$STAGE/etcd" --version | grep -q "^etcd Version: ${ETCD_VERSION#v}$" ||
    die "etcd reports '$("$STAGE/etcd" --version | head -1)', expected ${ETCD_VERSION#v}"

{
    echo "pin=$PIN"
    echo "kubernetes=$K8S_VERSION"
    echo "etcd=$ETCD_VERSION"
    echo "go=$(go env GOVERSION)"
    echo "recipe=$RECIPE"
    echo "build_seconds=$((SECONDS - TOTAL_START))"
} >"$STAGE/VERSIONS"
rm -rf "$BIN"
mv "$STAGE" "$BIN"
trap - EXIT

log "sizes: $(cd "$BIN" && du -h "${BINARIES[@]}" | awk '{printf "%s %s  ", $2, $1}')"
log "built in $((SECONDS - TOTAL_START))s"
echo "$BIN"
