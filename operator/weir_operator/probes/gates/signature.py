"""Runs the signature gate: the V2 model metadata of a canary server and a stable server."""

from __future__ import annotations

from typing import Any

import httpx

from weir_operator.core.gates import GateResult
from weir_operator.core.gates.signature import same_signature
from weir_operator.core.spec import ModelDeployment
from weir_operator.providers import PodTarget, ServerClients

TIMEOUT = httpx.Timeout(5.0, connect=1.0)


async def _metadata(
    servers: ServerClients, md: ModelDeployment, pod: PodTarget
) -> dict[str, Any] | None:
    try:
        response = await servers.get(pod, f"/v2/models/{md.model_name}", timeout=TIMEOUT)
        body: Any = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


async def run(
    servers: ServerClients, md: ModelDeployment, canary: PodTarget, stable: PodTarget | None
) -> GateResult | None:
    if stable is None:
        return None
    canary_meta = await _metadata(servers, md, canary)
    stable_meta = await _metadata(servers, md, stable)
    if canary_meta is None or stable_meta is None:
        return None
    same, differences = same_signature(canary_meta, stable_meta)
    return GateResult(same, differences)
