"""Every Open Inference Protocol endpoint, answered by a real `weir serve` over HTTP (httpx)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.support.processes import ServerProcess, running_server

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def iris_request(**extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": IRIS_ROWS}],
        **extra,
    }


def reference(model: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


class TestHealthAndMetadata:
    def test_live_ready_and_server_metadata(self, iris_server: ServerProcess) -> None:
        assert httpx.get(f"{iris_server.url}/v2/health/live").json() == {"live": True}
        assert httpx.get(f"{iris_server.url}/v2/health/ready").json() == {"ready": True}
        metadata = httpx.get(f"{iris_server.url}/v2").json()
        assert metadata["name"] == "weir"
        assert "binary_tensor_data" in metadata["extensions"]

    @pytest.mark.parametrize("path", ["/v2/models/iris", "/v2/models/iris/versions/7"])
    def test_model_metadata_with_and_without_version(
        self, iris_server: ServerProcess, path: str
    ) -> None:
        assert httpx.get(iris_server.url + path).json() == {
            "name": "iris",
            "versions": ["7"],
            "platform": "onnx_onnxv1",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "label", "datatype": "INT64", "shape": [-1]},
            ],
        }

    @pytest.mark.parametrize("path", ["/v2/models/iris/ready", "/v2/models/iris/versions/7/ready"])
    def test_model_ready_with_and_without_version(
        self, iris_server: ServerProcess, path: str
    ) -> None:
        response = httpx.get(iris_server.url + path)
        assert response.status_code == 200
        assert response.json() == {"name": "iris", "ready": True}


class TestInfer:
    @pytest.mark.parametrize("path", ["/v2/models/iris/infer", "/v2/models/iris/versions/7/infer"])
    def test_json_infer_matches_onnxruntime(
        self, iris_server: ServerProcess, iris_model: Path, path: str
    ) -> None:
        response = httpx.post(iris_server.url + path, json=iris_request(id="r-1"))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_name"] == "iris"
        assert body["model_version"] == "7"
        assert body["id"] == "r-1"
        expected = reference(iris_model, {"input": np.array(IRIS_ROWS, dtype=np.float32)})
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["probabilities"]["shape"] == [2, 3]
        np.testing.assert_allclose(
            np.array(outputs["probabilities"]["data"]).reshape(2, 3),
            expected["probabilities"],
            rtol=1e-6,
        )
        assert outputs["label"] == {
            "name": "label",
            "datatype": "INT64",
            "shape": [2],
            "data": expected["label"].tolist(),
        }

    def test_requested_outputs_subset(self, iris_server: ServerProcess) -> None:
        body = httpx.post(
            f"{iris_server.url}/v2/models/iris/infer",
            json=iris_request(outputs=[{"name": "label"}]),
        ).json()
        assert [o["name"] for o in body["outputs"]] == ["label"]

    def test_request_parameters_are_accepted(self, iris_server: ServerProcess) -> None:
        response = httpx.post(
            f"{iris_server.url}/v2/models/iris/infer", json=iris_request(parameters={"priority": 1})
        )
        assert response.status_code == 200

    def test_binary_request_and_binary_response(
        self, iris_server: ServerProcess, iris_model: Path
    ) -> None:
        rows = np.array(IRIS_ROWS, dtype=np.float32)
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": [2, 4],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": rows.nbytes},
                    }
                ],
                "outputs": [
                    {"name": "probabilities", "parameters": {"binary_data": True}},
                    {"name": "label"},
                ],
            }
        ).encode()
        response = httpx.post(
            f"{iris_server.url}/v2/models/iris/infer",
            content=header + rows.tobytes(),
            headers={
                "Inference-Header-Content-Length": str(len(header)),
                "Content-Type": "application/octet-stream",
            },
        )
        assert response.status_code == 200, response.text
        length = int(response.headers["Inference-Header-Content-Length"])
        document = json.loads(response.content[:length])
        probabilities, label = document["outputs"]
        assert probabilities["parameters"] == {"binary_data_size": 24}
        values = np.frombuffer(response.content[length:], dtype="<f4").reshape(2, 3)
        expected = reference(iris_model, {"input": rows})
        np.testing.assert_allclose(values, expected["probabilities"], rtol=1e-6)
        assert label["data"] == expected["label"].tolist()


class TestEveryDatatype:
    SAMPLES: ClassVar[dict[str, list[Any]]] = {
        "BOOL": [[True, False]],
        "INT8": [[-128, 127]],
        "INT16": [[-32768, 32767]],
        "INT32": [[-(2**31), 2**31 - 1]],
        "INT64": [[-(2**63), 2**63 - 1]],
        "UINT8": [[0, 255]],
        "UINT16": [[0, 65535]],
        "UINT32": [[0, 2**32 - 1]],
        "UINT64": [[0, 2**63]],
        "FP16": [[0.5, -1.25]],
        "FP32": [[1.5, -2.25]],
        "FP64": [[1e300, -1e-300]],
        "BYTES": [["héllo", ""]],
    }

    @pytest.mark.parametrize("datatype", list(SAMPLES))
    def test_json_round_trip_through_the_model(
        self, all_types_server: ServerProcess, datatype: str
    ) -> None:
        data = self.SAMPLES[datatype]
        response = httpx.post(
            f"{all_types_server.url}/v2/models/types/infer",
            json={
                "inputs": [
                    {"name": f"x_{d}", "shape": [1, 2], "datatype": d, "data": self.SAMPLES[d]}
                    for d in self.SAMPLES
                ],
                "outputs": [{"name": f"y_{datatype}"}],
            },
        )
        assert response.status_code == 200, response.text
        (output,) = response.json()["outputs"]
        assert output["datatype"] == datatype
        assert output["shape"] == [1, 2]
        assert output["data"] == [element for row in data for element in row]


class TestErrors:
    """Each error has the right status and a message; the server stays healthy after each."""

    @pytest.mark.parametrize(
        ("method", "path", "body", "status", "fragment"),
        [
            ("POST", "/v2/models/iris/infer", b"{", 400, "malformed JSON"),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}',
                400,
                "unknown input 'x'",
            ),
            ("POST", "/v2/models/iris/infer", b'{"inputs": []}', 400, "non-empty 'inputs'"),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "INT32", "data": [1,2,3,4]}]}',
                400,
                "expects FP32",
            ),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1,2,3]}]}',
                400,
                "needs 4",
            ),
            (
                "POST",
                "/v2/models/iris/infer",
                b'{"inputs": [{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [1,2,3,4,5]}]}',
                400,
                "expects [-1, 4]",
            ),
            ("POST", "/v2/models/tulip/infer", b"{}", 404, "unknown model 'tulip'"),
            ("POST", "/v2/models/iris/versions/8/infer", b"{}", 404, "no version '8'"),
            ("GET", "/v2/models/tulip", None, 404, "unknown model 'tulip'"),
            ("GET", "/v2/models/tulip/ready", None, 404, "unknown model"),
            ("GET", "/v2/nothing/here", None, 404, "no route"),
            ("GET", "/v2/models/iris/infer", None, 405, "not allowed"),
        ],
    )
    def test_bad_requests(
        self,
        iris_server: ServerProcess,
        method: str,
        path: str,
        body: bytes | None,
        status: int,
        fragment: str,
    ) -> None:
        response = httpx.request(method, iris_server.url + path, content=body)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/json"
        assert fragment in response.json()["error"]
        assert httpx.get(f"{iris_server.url}/v2/health/ready").status_code == 200
        assert (
            httpx.post(f"{iris_server.url}/v2/models/iris/infer", json=iris_request()).status_code
            == 200
        )

    def test_body_over_the_limit_is_413(self, iris_model: Path) -> None:
        with running_server(
            iris_model, "--name", "iris", "--max-request-bytes", "1000", "--no-access-log"
        ) as server:
            big = iris_request()
            big["inputs"][0]["data"] = [[1.0, 2.0, 3.0, 4.0]] * 100
            big["inputs"][0]["shape"] = [100, 4]
            response = httpx.post(f"{server.url}/v2/models/iris/infer", json=big)
            assert response.status_code == 413
            assert "limit of 1000 bytes" in response.json()["error"]

            def chunks() -> Any:  # no Content-Length: the limit holds for streamed bodies too
                payload = json.dumps(big).encode()
                for start in range(0, len(payload), 256):
                    yield payload[start : start + 256]

            response = httpx.post(f"{server.url}/v2/models/iris/infer", content=chunks())
            assert response.status_code == 413
            # Routes other than infer (FastAPI's, behind the RSGI bridge) hold the same limit.
            response = httpx.post(f"{server.url}/v2/health/live", content=b"x" * 5000)
            assert response.status_code == 413
            assert "limit of 1000 bytes" in response.json()["error"]
            assert (
                httpx.post(f"{server.url}/v2/models/iris/infer", json=iris_request()).status_code
                == 200
            )

    def test_model_that_raises_is_500_and_the_server_goes_on(self, gather_model: Path) -> None:
        with running_server(gather_model, "--name", "gather", "--no-access-log") as server:
            url = f"{server.url}/v2/models/gather/infer"

            def lookup(indices: list[int]) -> httpx.Response:
                return httpx.post(
                    url,
                    json={
                        "inputs": [
                            {
                                "name": "indices",
                                "shape": [len(indices)],
                                "datatype": "INT64",
                                "data": indices,
                            }
                        ]
                    },
                )

            bad = lookup([1, 100])
            assert bad.status_code == 500
            assert "model 'gather' failed" in bad.json()["error"]
            good = lookup([1, 2])
            assert good.status_code == 200
            assert good.json()["outputs"][0]["data"] == [1.5, 3.0]


def test_bytes_binary_input(all_types_server: ServerProcess) -> None:
    strings = ["a", "bé", "", "long string"]
    blob = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in strings)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x_BYTES",
                    "shape": [2, 2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ]
            + [
                {"name": f"x_{d}", "shape": [1, 2], "datatype": d, "data": v}
                for d, v in TestEveryDatatype.SAMPLES.items()
                if d != "BYTES"
            ],
            "outputs": [{"name": "y_BYTES"}],
        }
    ).encode()
    response = httpx.post(
        f"{all_types_server.url}/v2/models/types/infer",
        content=header + blob,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    # x_BYTES has 2 rows, the others 1: the model's Identity ops do not care.
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == strings
