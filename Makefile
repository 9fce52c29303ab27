# Weir — the two commands a newcomer needs are `make demo` and `make test`; both set up
# everything they need (.venv, packages, generated models) on a fresh machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.weir-installed
MODELS := examples/models
IMAGE ?= weir:dev
BASE_IMAGE ?= python:3.12-slim
PYTEST_ARGS ?= --durations=15

.PHONY: setup models test demo lint bench bench-server bench-peers bench-router bench-rollback bench-shadow bench-shadow-latency bench-shadow-detection bench-monitoring image generate controlplane clean help

help:
	@echo "make demo   - weir run on this machine: a good version promoted, a bad one rolled back"
	@echo "make test   - run every test tier (sets everything up)"
	@echo "make lint   - ruff + mypy --strict + the import contracts (lint-imports)"
	@echo "make bench  - every benchmark below (results in docs/benchmarks*.md)"
	@echo "make bench-server - weir serve alone (docs/benchmarks.md)"
	@echo "make bench-peers  - weir serve vs MLServer and KServe, installed from PyPI (docs/benchmarks-peers.md)"
	@echo "make bench-rollback - rollback detection over 10 local rollouts (bench/results/rollback-*.json)"
	@echo "make bench-router - latency weir run's local router adds (bench/results/router.md)"
	@echo "make bench-shadow - what mirroring (--mirror-config) costs the stable (bench/results/shadow-*.md)"
	@echo "make bench-shadow-latency - the stable's latency with a healthy, slow, dead and hanging canary (bench/results/shadow-latency-*.md)"
	@echo "make bench-shadow-detection - shadow steps in weir run: a wrong and an erroring canary rolled back, a 98 %-agreeing one promoted, an idle stable held; 10 each"
	@echo "make bench-monitoring - what weir serve --reference (drift counting) costs, iris and mlp (bench/results/monitoring-*.md)"
	@echo "make image  - build the container image (BASE_IMAGE=... to use a local base)"
	@echo "make generate - regenerate crds/ and docs/api.md from the API models"

setup: $(STAMP)

# Reinstalls only when pyproject.toml changed; `make setup` is a no-op otherwise.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing weir and its dev tools into $(VENV) (first time: a few minutes; a line per package)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off --editable '.[dev]'
	@touch $(STAMP)

models: setup
	@$(PY) -m weir_server.sample_models $(MODELS) >/dev/null

# The control-plane tier needs binaries built from Kubernetes' Go modules: built here, with
# progress, when Go is installed (about 17 min the first time, instant after); without Go that
# tier is skipped (WEIR_REQUIRE_CONTROLPLANE=1 makes it fail). Without a Docker engine (a
# `docker` client alone is not one) the container tier is skipped, and one line says why and
# how to get one (WEIR_REQUIRE_DOCKER=1 makes it fail). Without Debian's `prometheus` (and its
# promtool) on PATH the real-Prometheus tier is skipped with one line
# (WEIR_REQUIRE_PROMETHEUS=1 makes it fail). Lint first: seconds, and a
# change that breaks ruff or mypy --strict fails here rather than in review.
test: setup models lint
	@if command -v go >/dev/null 2>&1; then hack/controlplane/build.sh >/dev/null; \
	else echo "Go is not installed: the control-plane tier will be skipped"; fi
	@engine=$$(hack/docker-engine.sh) || echo "the container tier will be skipped: $$engine"
	PY=$(PY) hack/test-tiers.sh $(PYTEST_ARGS)

demo: setup models
	$(PY) examples/demo.py

lint: setup
	$(VENV)/bin/ruff check operator server tests bench examples hack
	$(VENV)/bin/ruff format --check operator server tests bench examples hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

bench: bench-server bench-peers bench-router bench-rollback bench-shadow bench-shadow-latency bench-shadow-detection bench-monitoring

bench-server: setup models
	$(PY) bench/server.py

bench-peers: setup models
	$(PY) bench/peers.py

bench-rollback: setup models
	$(PY) bench/rollback.py --rounds 10

bench-router: setup models
	$(PY) bench/router.py

bench-shadow: setup models
	$(PY) bench/shadow.py

# About 3.5 minutes on 2 cores (a fresh stable per kind of canary).
bench-shadow-latency: setup models
	$(PY) bench/shadow.py --latency --concurrency 8 --duration 3 --rounds 2

# About 6 minutes on 2 cores (20 rollouts in weir run): a target of its own.
bench-shadow-detection: setup models
	$(PY) bench/shadow.py --detection --runs 10

# About 3 minutes on 2 cores: monitoring off and on, interleaved, iris and mlp at concurrency 16.
bench-monitoring: setup models
	$(PY) bench/monitoring.py

# The CRD and the API reference are generated from operator/weir_operator/spec.py and status.py;
# tests fail when the checked-in files are stale.
generate: setup
	$(PY) -m weir_operator.crd > crds/modeldeployment.yaml
	cp crds/modeldeployment.yaml charts/weir/crds/modeldeployment.yaml
	$(PY) -m weir_operator.apidocs > docs/api.md

# kube-apiserver, kube-controller-manager and etcd built from Kubernetes' Go modules into
# .cache/controlplane/ (about 17 min cold on 2 cores, instant once built); see hack/controlplane.
controlplane:
	hack/controlplane/build.sh

image:
	docker build --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

clean:
	rm -rf $(VENV) $(MODELS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
