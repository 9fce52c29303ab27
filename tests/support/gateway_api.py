"""Gateway API's own CRDs (HTTPRoute), from its Go module: the module proxy is reachable here,
no other registry is. Pinned to one release."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

GATEWAY_API = "sigs.k8s.io/gateway-api@v1.2.1"


@cache
def module_dir() -> Path | None:
    """The downloaded module's folder, or None when Go is not installed."""
    go = shutil.which("go")
    if go is None:
        return None
    result = subprocess.run(
        [go, "mod", "download", "-json", GATEWAY_API], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise AssertionError(
            f"go mod download {GATEWAY_API} failed: {result.stdout}{result.stderr}"
        )
    return Path(json.loads(result.stdout)["Dir"])


def httproute_crd_file() -> Path | None:
    folder = module_dir()
    if folder is None:
        return None
    return folder / "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"


@cache
def httproute_crd() -> dict[str, Any] | None:
    """The HTTPRoute CRD with only its v1 version (what Weir renders)."""
    path = httproute_crd_file()
    if path is None:
        return None
    crd = yaml.safe_load(path.read_text())
    crd["spec"]["versions"] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return crd
