"""Dynamic batching: requests that arrive together share model runs and each gets its own right
answer; a request that comes alone never waits for company. The requests that must arrive
together are sent in one burst on connections opened beforehand (tests/support/burst.py): from
an async client they can reach the server one at a time, and are then rightly run one by one."""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import orjson

from tests.server.test_observability import samples, value
from tests.support.burst import post_all_at_once
from tests.support.processes import ServerProcess, running_server


def batching_mlp_server(model: Path, delay_ms: int) -> AbstractContextManager[ServerProcess]:
    return running_server(
        model,
        "--name",
        "mlp",
        "--max-batch-size",
        "16",
        "--max-batch-delay-ms",
        str(delay_ms),
        "--no-access-log",
    )


def test_requests_that_arrive_together_are_batched_and_answered_correctly(
    mlp_model: Path,
) -> None:
    session = ort.InferenceSession(str(mlp_model), providers=["CPUExecutionProvider"])
    width = session.get_inputs()[0].shape[1]
    rng = np.random.default_rng(1)
    requests = [
        rng.normal(size=(int(rng.integers(1, 4)), width)).astype(np.float32) for _ in range(48)
    ]
    bodies = [
        orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": list(x.shape),
                        "datatype": "FP32",
                        "data": x.ravel().tolist(),
                    }
                ]
            }
        )
        for x in requests
    ]
    with batching_mlp_server(mlp_model, delay_ms=20) as server:
        answers = post_all_at_once(f"{server.url}/v2/models/mlp/infer", bodies)
        found = samples(server)
    for x, answer in zip(requests, answers, strict=True):
        assert answer.status == 200, answer.body
        (output,) = orjson.loads(answer.body)["outputs"]
        (expected,) = session.run(["y"], {"x": x})
        np.testing.assert_allclose(
            np.array(output["data"], dtype=np.float32).reshape(output["shape"]),
            expected,
            rtol=1e-4,
            atol=1e-5,
        )
    runs = value(found, "weir_inference_batch_size_count")
    rows = value(found, "weir_inference_batch_size_sum")
    assert rows == sum(len(x) for x in requests)  # every row ran exactly once
    assert runs < len(requests), f"{runs} model runs for {len(requests)} requests"
    # No request has more than 3 rows, so a run of more than 4 stacked several requests.
    stacked = runs - value(found, "weir_inference_batch_size_bucket", le="4.0")
    assert stacked >= 1, f"no model run of {len(requests)} took more than 4 rows"


def test_requests_that_come_one_at_a_time_never_wait(mlp_model: Path) -> None:
    with batching_mlp_server(mlp_model, delay_ms=2000) as server:
        width = ort.InferenceSession(str(mlp_model)).get_inputs()[0].shape[1]
        body = {
            "inputs": [
                {"name": "x", "shape": [1, width], "datatype": "FP32", "data": [0.5] * width}
            ]
        }
        with httpx.Client(base_url=server.url, timeout=30) as client:
            started = time.monotonic()
            for _ in range(3):
                assert client.post("/v2/models/mlp/infer", json=body).status_code == 200
            elapsed = time.monotonic() - started
        found = samples(server)
    assert value(found, "weir_inference_batch_size_count") == 3
    # One wait for company would take the whole 2 s batch delay.
    assert elapsed < 2.0, f"3 requests one at a time took {elapsed:.2f} s: one waited for company"


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
