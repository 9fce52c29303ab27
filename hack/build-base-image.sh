#!/usr/bin/env bash
# Builds the local base image (Debian bookworm + python3) with debootstrap and imports it into
# Docker. No image registry is reachable from our machines, so `python:3.12-slim` cannot be
# pulled; this image stands in for it via `docker build --build-arg BASE_IMAGE=weir-base:bookworm`.
#
# The machine's CA bundle (which trusts the package proxy) is baked into this local image only,
# with a pip.conf pointing at it, so the Dockerfile itself stays free of it.
set -euo pipefail

tag=${WEIR_BASE_IMAGE:-weir-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca_bundle=${WEIR_BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if docker image inspect "$tag" >/dev/null 2>&1 && [ -z "${WEIR_REBUILD_BASE:-}" ]; then
  echo "base image $tag already present (set WEIR_REBUILD_BASE=1 to rebuild)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }

rootfs=$(mktemp -d /tmp/weir-base.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap bookworm into $rootfs (a few minutes on a cold machine)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -30 "$rootfs.log" >&2; exit 1; }
rm -f "$rootfs.log"

if [ -f "$ca_bundle" ]; then
  install -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/weir-build-ca-bundle.crt"
  printf '[global]\ncert = /etc/ssl/certs/weir-build-ca-bundle.crt\n' >"$rootfs/etc/pip.conf"
fi
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*

tar -C "$rootfs" --numeric-owner -c . | docker import \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$tag" >/dev/null
echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
