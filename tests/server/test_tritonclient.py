"""Triton's own HTTP client works unchanged, with its binary defaults and in pure JSON mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.support.processes import ServerProcess

DTYPES = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def client_for(server: ServerProcess) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=10)


def sample(datatype: str, rows: int = 3) -> np.ndarray:
    if datatype == "BYTES":
        return np.array(
            [[f"r{r}c{c}".encode() for c in range(2)] for r in range(rows)], dtype=np.object_
        )
    if datatype == "BOOL":
        return np.arange(rows * 2).reshape(rows, 2) % 2 == 0
    return (np.arange(rows * 2).reshape(rows, 2) + 1).astype(DTYPES[datatype])


def test_health_and_metadata(iris_server: ServerProcess) -> None:
    client = client_for(iris_server)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "7")
    metadata = client.get_model_metadata("iris", "7")
    assert metadata["platform"] == "onnx_onnxv1"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert client.get_server_metadata()["name"] == "weir"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_iris_inference_matches_onnxruntime(
    iris_server: ServerProcess, iris_model: Path, binary: bool
) -> None:
    rows = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    inputs = [triton.InferInput("input", list(rows.shape), "FP32")]
    inputs[0].set_data_from_numpy(rows, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("label", binary_data=binary),
    ]
    result = client_for(iris_server).infer(
        "iris", inputs, outputs=outputs, model_version="7", request_id="t-1"
    )
    session = ort.InferenceSession(str(iris_model), providers=["CPUExecutionProvider"])
    probabilities, label = session.run(["probabilities", "label"], {"input": rows})
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    assert result.get_response()["id"] == "t-1"


def test_default_request_without_outputs_gets_every_output_in_binary(
    iris_server: ServerProcess,
) -> None:
    rows = np.ones((2, 4), dtype=np.float32)
    inputs = [triton.InferInput("input", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(rows)
    result = client_for(iris_server).infer("iris", inputs)
    assert result.as_numpy("probabilities").shape == (2, 3)
    assert result.as_numpy("label").shape == (2,)
    assert all("binary_data_size" in o["parameters"] for o in result.get_response()["outputs"])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_every_datatype(all_types_server: ServerProcess, binary: bool) -> None:
    inputs = []
    for datatype in DTYPES:
        tensor = triton.InferInput(f"x_{datatype}", [3, 2], datatype)
        tensor.set_data_from_numpy(sample(datatype), binary_data=binary)
        inputs.append(tensor)
    outputs = [triton.InferRequestedOutput(f"y_{d}", binary_data=binary) for d in DTYPES]
    result = client_for(all_types_server).infer("types", inputs, outputs=outputs)
    for datatype in DTYPES:
        got = result.as_numpy(f"y_{datatype}")
        expected = sample(datatype)
        if datatype == "BYTES":
            got = np.array(
                [e if isinstance(e, bytes) else str(e).encode() for e in got.reshape(-1)],
                dtype=object,
            )
            expected = expected.reshape(-1)
        np.testing.assert_array_equal(got, expected, err_msg=datatype)


def test_errors_reach_the_client_with_the_server_message(iris_server: ServerProcess) -> None:
    inputs = [triton.InferInput("input", [1, 3], "FP32")]
    inputs[0].set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"expects \[-1, 4\]"):
        client_for(iris_server).infer("iris", inputs)
    with pytest.raises(InferenceServerException, match="unknown model 'rose'"):
        client_for(iris_server).get_model_metadata("rose")
