#!/usr/bin/env bash
# Says in one line whether a Docker engine answers on this machine and, when none does, why and
# how to get one. A `docker` binary alone proves nothing: it is often only the client (this
# project's machines ship /usr/local/bin/docker without an engine). Used by `make test` and by
# the container tier's fixtures, so both give the same reason.
#
#   hack/docker-engine.sh   # exit 0 and "Docker engine 26.1.5": an engine answers
#                           # exit 1 and one line saying why not and what to do
set -uo pipefail

how="apt-get install docker.io, then start dockerd (bash .ci/run does both)"
if ! command -v docker >/dev/null 2>&1; then
  echo "no docker CLI on PATH and no engine: $how"
  exit 1
fi
version=$(timeout 20 docker version --format '{{.Server.Version}}' 2>/dev/null </dev/null)
if [ -n "$version" ]; then
  echo "Docker engine $version"
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1 && [ -z "${DOCKER_HOST:-}" ]; then
  echo "$(command -v docker) is only the Docker client; no engine (dockerd) is installed: $how"
else
  echo "no Docker engine answers on ${DOCKER_HOST:-unix:///var/run/docker.sock}: start dockerd" \
    "(as root: dockerd >/tmp/dockerd.log 2>&1 &), or point DOCKER_HOST at a running engine"
fi
exit 1
