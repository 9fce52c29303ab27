"""Dynamic batching: concurrent requests share model runs, and each gets its own right answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from tests.server.test_observability import samples, value
from tests.support.processes import running_server


async def test_concurrent_requests_are_batched_and_answered_correctly(mlp_model: Path) -> None:
    session = ort.InferenceSession(str(mlp_model), providers=["CPUExecutionProvider"])
    width = session.get_inputs()[0].shape[1]
    rng = np.random.default_rng(1)
    requests = [
        rng.normal(size=(int(rng.integers(1, 4)), width)).astype(np.float32) for _ in range(48)
    ]
    with running_server(
        mlp_model,
        "--name",
        "mlp",
        "--max-batch-size",
        "16",
        "--max-batch-delay-ms",
        "20",
        "--no-access-log",
    ) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def infer(x: np.ndarray) -> np.ndarray:
                body = {
                    "inputs": [
                        {
                            "name": "x",
                            "shape": list(x.shape),
                            "datatype": "FP32",
                            "data": x.ravel().tolist(),
                        }
                    ]
                }
                response = await client.post("/v2/models/mlp/infer", json=body)
                assert response.status_code == 200, response.text
                output = response.json()["outputs"][0]
                return np.array(output["data"], dtype=np.float32).reshape(output["shape"])

            answers = await asyncio.gather(*(infer(x) for x in requests))
        for x, answer in zip(requests, answers, strict=True):
            (expected,) = session.run(["y"], {"x": x})
            np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-5)
        found = samples(server)
        runs = value(found, "weir_inference_batch_size_count")
        rows = value(found, "weir_inference_batch_size_sum")
        assert rows == sum(len(x) for x in requests)  # every row ran exactly once
        assert runs < len(requests), (
            f"{runs} model runs for {len(requests)} requests: nothing was batched"
        )


async def test_a_request_that_breaks_its_batch_fails_alone(gather_model: Path) -> None:
    with running_server(
        gather_model,
        "--name",
        "gather",
        "--max-batch-size",
        "8",
        "--max-batch-delay-ms",
        "50",
        "--no-access-log",
    ) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

            async def lookup(indices: list[int]) -> httpx.Response:
                body = {
                    "inputs": [
                        {
                            "name": "indices",
                            "shape": [len(indices)],
                            "datatype": "INT64",
                            "data": indices,
                        }
                    ]
                }
                return await client.post("/v2/models/gather/infer", json=body)

            good_a, bad, good_b = await asyncio.gather(lookup([1]), lookup([99]), lookup([2, 3]))
        assert bad.status_code == 500
        assert good_a.json()["outputs"][0]["data"] == [1.5]
        assert good_b.json()["outputs"][0]["data"] == [3.0, 4.5]
