"""Runs the sample-input gate: `server.sampleInput` sent to a canary server."""

from __future__ import annotations

import httpx

from weir_operator.core.gates import GateResult
from weir_operator.core.spec import ModelDeployment
from weir_operator.providers import PodTarget, ServerClients

TIMEOUT = httpx.Timeout(5.0, connect=1.0)


async def run(
    servers: ServerClients, md: ModelDeployment, canary: PodTarget, stable: PodTarget | None
) -> GateResult | None:
    body = md.spec.server.sample_input
    if body is None:
        return None
    path = f"/v2/models/{md.model_name}/infer"
    try:
        response = await servers.post(canary, path, json=body, timeout=TIMEOUT)
    except httpx.HTTPError:
        return None
    if response.is_success:
        return GateResult(True)
    if response.status_code in (400, 500):  # the model's own answer: bad input or failure
        return GateResult(False, f"HTTP {response.status_code}: {response.text[:300]}")
    return None  # not ready, unknown model while loading, ...: ask again
