"""Helm for the tests: the pinned, checksum-verified binary from hack/helm.py, run with its
state kept out of the user's home and away from any cluster. If it cannot be obtained, tests
that need it fail; they do not skip."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "weir"
HELM_TIMEOUT_S = 60

Manifest = dict[str, Any]


def _load_hack_helm() -> ModuleType:
    spec = importlib.util.spec_from_file_location("weir_hack_helm", ROOT / "hack" / "helm.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _obtain_helm() -> Path | str:
    """The Helm binary, or why it could not be obtained (tried once per session)."""
    try:
        path: Path = _load_hack_helm().ensure_helm()
    except Exception as e:
        return f"could not obtain Helm through hack/helm.py: {type(e).__name__}: {e}"
    return path


def helm_path() -> Path:
    helm = _obtain_helm()
    if isinstance(helm, str):
        pytest.fail(helm, pytrace=False)
    return helm


@cache
def _helm_env() -> dict[str, str]:
    # Helm's own state out of the user's home; no cluster is ever contacted.
    home = ROOT / ".cache" / "helm" / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-kubeconfig"),
    )
    return env


def helm(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(helm_path()), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=HELM_TIMEOUT_S,
        env=_helm_env(),
        cwd=ROOT,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def template(
    release: str, namespace: str, *args: str | Path, chart: Path = CHART
) -> list[Manifest]:
    """`helm template` of the chart, as a list of objects."""
    out = helm("template", release, chart, "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc is not None]
