# Weir: one image for the inference server (`weir serve ...`) and the operator (other args).
#
#   docker build -t weir .                                            # official python:3.12-slim
#   docker build --build-arg BASE_IMAGE=weir-base:bookworm -t weir .  # hack/build-base-image.sh
#
# Every stage uses the same base so the venv's interpreter path (its bin/python symlink) exists
# in the final image. Nothing here depends on the building machine's network, proxy or CA bundle.
ARG BASE_IMAGE=python:3.12-slim

# The dependency list, read from pyproject.toml in a stage of its own: the stages below copy only
# this list, so editing pyproject.toml's tool settings (or the code) does not reinstall the
# dependencies; changing a dependency does. The build backend is listed too, so the project
# itself installs below without any network (--no-build-isolation --no-deps). The `s3` extra
# (boto3) is in it: s3:// model URIs work in `weir fetch-model` as shipped.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /src/
RUN python3 -c 'import tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb")); \
print("\n".join(p["build-system"]["requires"] + p["project"]["dependencies"] \
                + p["project"]["optional-dependencies"]["s3"]))' \
    >/requirements.txt

FROM ${BASE_IMAGE} AS dependencies
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/weir
COPY --from=requirements /requirements.txt /tmp/requirements.txt
# Wheels ship their own test suites and onnxruntime its offline tools (quantization,
# transformers optimizers); a server needs none of them. Every module is byte-compiled here with
# hashes that need no source timestamps, as the root filesystem is read-only at run time.
RUN /opt/weir/bin/pip install --requirement /tmp/requirements.txt \
 && /opt/weir/bin/pip check \
 && site=$(/opt/weir/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && rm -rf "$site"/numpy/*/tests "$site"/numpy/tests "$site"/onnxruntime/tools \
           "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization \
 && find /opt/weir -name __pycache__ -type d -prune -exec rm -rf {} + \
 && /opt/weir/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/weir/lib

# The venv the image ships: nothing is installed at run time, so no pip and no build backend.
FROM dependencies AS venv
RUN /opt/weir/bin/pip uninstall --yes setuptools wheel pip

# The project itself (not editable), installed under /staging with the venv's own paths, so the
# final image gets it as a small layer of its own on top of the dependencies' big one: a code
# change rebuilds and ships only that layer.
FROM dependencies AS project
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY server/ server/
RUN /opt/weir/bin/pip install --no-deps --no-build-isolation --no-compile \
      --prefix /staging/opt/weir . \
 && /opt/weir/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
      -s /staging -p / /staging/opt/weir/lib

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="Weir: ONNX inference server and Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# ORT_DISABLE_TELEMETRY: onnxruntime >= 1.29 sends usage telemetry from Linux too, and warns at
# every start that it cannot persist a device ID on a read-only root filesystem; a server image
# should not phone home. Override with `-e ORT_DISABLE_TELEMETRY=0` if you want it.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    PATH=/opt/weir/bin:$PATH
COPY --from=venv /opt/weir /opt/weir
COPY --from=project /staging/opt/weir /opt/weir
# The image's own entry point and main imports work without what the stages above removed.
RUN /opt/weir/bin/python -c 'import onnxruntime, numpy, boto3, weir_server.app, weir_operator.cli' \
 && /opt/weir/bin/weir --version
# A numeric UID:GID (no passwd entry needed), so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/opt/weir/bin/weir"]
CMD ["--help"]
