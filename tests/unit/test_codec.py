"""The V2 codec: what a client may send, how it is decoded, and what every rejection says."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from weir_server.codec import (
    InferRequest,
    ModelSignature,
    ProtocolError,
    TensorSpec,
    decode_request,
    encode_response,
    parse_header_length,
)
from weir_server.datatypes import V2_TO_NUMPY

IRIS = ModelSignature(
    inputs=(TensorSpec("input", "FP32", (-1, 4)),),
    outputs=(TensorSpec("probabilities", "FP32", (-1, 3)), TensorSpec("label", "INT64", (-1,))),
)


def request(*inputs: dict[str, Any], **extra: Any) -> bytes:
    # json, not orjson: a test may need integers that orjson refuses to write
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def fp32_input(data: Any, shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": "input", "datatype": "FP32", "shape": shape or [1, 4], "data": data}


def rejection(
    body: bytes, header_length: int | None = None, signature: ModelSignature = IRIS
) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode_request(body, header_length, signature)
    return caught.value


class TestJsonTensors:
    def test_flat_and_nested_data_decode_to_the_same_array(self) -> None:
        flat = decode_request(request(fp32_input([1, 2, 3, 4, 5, 6, 7, 8], [2, 4])), None, IRIS)
        nested = decode_request(
            request(fp32_input([[1, 2, 3, 4], [5, 6, 7, 8]], [2, 4])), None, IRIS
        )
        assert flat.inputs["input"].dtype == np.float32
        assert flat.inputs["input"].shape == (2, 4)
        np.testing.assert_array_equal(flat.inputs["input"], nested.inputs["input"])

    def test_id_and_parameters_are_kept(self) -> None:
        decoded = decode_request(
            request(fp32_input([1, 2, 3, 4]), id="req-7", parameters={"trace": "x"}), None, IRIS
        )
        assert decoded.id == "req-7"
        assert decoded.parameters == {"trace": "x"}

    def test_requested_outputs_keep_their_order_and_binary_flags(self) -> None:
        decoded = decode_request(
            request(
                fp32_input([1, 2, 3, 4]),
                outputs=[
                    {"name": "label"},
                    {"name": "probabilities", "parameters": {"binary_data": True}},
                ],
            ),
            None,
            IRIS,
        )
        assert decoded.requested_outputs == ["label", "probabilities"]
        assert decoded.binary_outputs == {"probabilities": True}

    @pytest.mark.parametrize(
        ("datatype", "data", "expected"),
        [
            ("BOOL", [True, False], np.array([True, False])),
            ("INT8", [-128, 127], np.array([-128, 127], dtype=np.int8)),
            ("UINT64", [0, 2**64 - 1], np.array([0, 2**64 - 1], dtype=np.uint64)),
            ("FP16", [0.5, -2], np.array([0.5, -2], dtype=np.float16)),
            ("FP64", [1e300, 2], np.array([1e300, 2], dtype=np.float64)),
            ("BYTES", ["héllo", ""], np.array(["héllo", ""], dtype=object)),
        ],
    )
    def test_every_datatype_decodes_to_its_numpy_type(
        self, datatype: str, data: list[Any], expected: Any
    ) -> None:
        signature = ModelSignature(
            (TensorSpec("x", datatype, (2,)),), (TensorSpec("y", datatype, (2,)),)
        )
        decoded = decode_request(
            request({"name": "x", "datatype": datatype, "shape": [2], "data": data}),
            None,
            signature,
        )
        assert decoded.inputs["x"].dtype == V2_TO_NUMPY[datatype]
        np.testing.assert_array_equal(decoded.inputs["x"], expected)


class TestRejections:
    """Every rejection is a 400 (unless said) whose message names what was expected."""

    @pytest.mark.parametrize(
        ("body", "fragments"),
        [
            (b"{not json", ["malformed JSON"]),
            (b"[1, 2]", ["JSON object"]),
            (orjson.dumps({"inputs": []}), ["non-empty 'inputs'", "'input' (FP32 [-1, 4])"]),
            (
                request({**fp32_input([1, 2, 3, 4]), "name": "petal"}),
                ["unknown input 'petal'", "'input'"],
            ),
            (request(fp32_input([1, 2, 3, 4]), fp32_input([1, 2, 3, 4])), ["more than once"]),
            (request({**fp32_input([1, 2, 3, 4]), "datatype": "FP64"}), ["FP64", "expects FP32"]),
            (request(fp32_input([1, 2, 3], [1, 3])), ["shape [1, 3]", "expects [-1, 4]"]),
            (request(fp32_input([1, 2, 3, 4], [1, 4, 1])), ["expects [-1, 4]"]),
            (request(fp32_input([1, 2, 3], [1, 4])), ["3 elements", "needs 4"]),
            (request(fp32_input([[1, 2], [3, 4, 5, 6]], [1, 4])), ["ragged"]),
            (request(fp32_input(["a", "b", "c", "d"])), ["must be a number"]),
            (request(fp32_input([1, 2, 3, 4], [-1, 4])), ["non-negative integers"]),
            (request({"name": "input", "datatype": "FP32", "shape": [1, 4]}), ["neither 'data'"]),
            (
                request(fp32_input([1, 2, 3, 4]), outputs=[{"name": "logits"}]),
                ["unknown output 'logits'", "'label'"],
            ),
            (request(fp32_input([1, 2, 3, 4]), id=7), ["'id' must be a string"]),
            (request(fp32_input([1, 2, 3, 4]), parameters=[1]), ["'parameters'"]),
        ],
    )
    def test_bad_requests_are_rejected_with_a_message_saying_what_was_expected(
        self, body: bytes, fragments: list[str]
    ) -> None:
        error = rejection(body)
        assert error.status == 400
        for fragment in fragments:
            assert fragment in error.message

    def test_a_missing_input_is_named(self) -> None:
        signature = ModelSignature(
            (TensorSpec("a", "FP32", (1,)), TensorSpec("b", "FP32", (1,))),
            (TensorSpec("y", "FP32", (1,)),),
        )
        error = rejection(
            request({"name": "a", "datatype": "FP32", "shape": [1], "data": [1]}), None, signature
        )
        assert "missing input 'b'" in error.message

    @pytest.mark.parametrize(
        ("datatype", "data", "fragment"),
        [
            ("INT8", [128], "[-128, 127]"),
            ("UINT8", [-1], "[0, 255]"),
            ("INT32", [1.5], "must be an integer"),
            ("BOOL", [1], "true or false"),
            ("BYTES", [1], "must be a string"),
            ("INT64", [2**70], "must be an integer"),
        ],
    )
    def test_values_outside_the_datatype_are_rejected(
        self, datatype: str, data: list[Any], fragment: str
    ) -> None:
        signature = ModelSignature(
            (TensorSpec("x", datatype, (1,)),), (TensorSpec("y", datatype, (1,)),)
        )
        error = rejection(
            request({"name": "x", "datatype": datatype, "shape": [1], "data": data}),
            None,
            signature,
        )
        assert fragment in error.message

    def test_header_length_must_be_a_non_negative_integer_within_the_body(self) -> None:
        assert parse_header_length(None) is None
        assert parse_header_length("12") == 12
        for bad in ("-1", "x", "1.5"):
            with pytest.raises(ProtocolError, match="Inference-Header-Content-Length"):
                parse_header_length(bad)
        assert "only 6 bytes" in rejection(b"{}{}{}", 10).message


def binary_request(
    arrays: dict[str, np.ndarray], specs: dict[str, str], **extra: Any
) -> tuple[bytes, int]:
    inputs, blobs = [], []
    for name, array in arrays.items():
        if specs[name] == "BYTES":
            blob = b"".join(
                struct.pack("<I", len(s.encode())) + s.encode() for s in array.reshape(-1)
            )
        else:
            blob = array.astype(array.dtype.newbyteorder("<")).tobytes()
        blobs.append(blob)
        inputs.append(
            {
                "name": name,
                "datatype": specs[name],
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
    header = orjson.dumps({"inputs": inputs, **extra})
    return header + b"".join(blobs), len(header)


class TestBinaryTensors:
    def test_binary_and_json_inputs_can_be_mixed(self) -> None:
        signature = ModelSignature(
            (TensorSpec("a", "FP32", (-1, 2)), TensorSpec("b", "INT64", (2,))),
            (TensorSpec("y", "FP32", (-1,)),),
        )
        a = np.array([[1.5, 2.5]], dtype=np.float32)
        body, length = binary_request({"a": a}, {"a": "FP32"})
        document = orjson.loads(body[:length])
        document["inputs"].append({"name": "b", "datatype": "INT64", "shape": [2], "data": [3, 4]})
        header = orjson.dumps(document)
        decoded = decode_request(header + body[length:], len(header), signature)
        np.testing.assert_array_equal(decoded.inputs["a"], a)
        np.testing.assert_array_equal(decoded.inputs["b"], [3, 4])

    def test_binary_size_must_match_the_shape(self) -> None:
        body, length = binary_request({"input": np.zeros((1, 4), np.float32)}, {"input": "FP32"})
        truncated = body[:-4]
        header = orjson.loads(truncated[:length])
        header["inputs"][0]["parameters"]["binary_data_size"] = 12
        new_header = orjson.dumps(header)
        error = rejection(new_header + truncated[length:], len(new_header))
        assert "12 bytes of binary data" in error.message
        assert "needs 16" in error.message

    def test_binary_data_nobody_claims_is_rejected(self) -> None:
        body, length = binary_request({"input": np.zeros((1, 4), np.float32)}, {"input": "FP32"})
        assert "no input claims" in rejection(body + b"\x00\x00", length).message

    def test_truncated_bytes_elements_are_rejected(self) -> None:
        signature = ModelSignature(
            (TensorSpec("s", "BYTES", (1,)),), (TensorSpec("y", "BYTES", (1,)),)
        )
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "s",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": 6},
                    }
                ]
            }
        )
        error = rejection(header + struct.pack("<I", 10) + b"ab", len(header), signature)
        assert "runs past the end" in error.message


NUMERIC = [
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
]


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4))
    if datatype == "BYTES":
        strings = draw(
            st.lists(
                st.text(max_size=6), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))
            )
        )
        return datatype, np.array(strings, dtype=object).reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    elements = (
        hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False) if dtype.kind == "f" else None
    )
    return datatype, draw(hnp.arrays(dtype, shape, elements=elements))


class TestRoundTrips:
    @settings(max_examples=200, deadline=None)
    @given(tensors(), st.booleans())
    def test_any_tensor_survives_json_or_binary_encoding(
        self, tensor: tuple[str, np.ndarray], binary: bool
    ) -> None:
        datatype, array = tensor
        signature = ModelSignature(
            (TensorSpec("x", datatype, tuple(-1 for _ in array.shape)),),
            (TensorSpec("x", datatype, tuple(-1 for _ in array.shape)),),
        )
        if binary:
            body, length = binary_request({"x": array}, {"x": datatype})
            decoded = decode_request(body, length, signature)
        else:
            data = array.tolist()
            body = request(
                {"name": "x", "datatype": datatype, "shape": list(array.shape), "data": data}
            )
            decoded = decode_request(body, None, signature)
        np.testing.assert_array_equal(decoded.inputs["x"], array)
        assert decoded.inputs["x"].shape == array.shape

        encoded = encode_response(
            "m", "1", InferRequest(inputs={}, binary_default=binary), {"x": decoded.inputs["x"]}
        )
        if binary:
            assert encoded.header_length is not None
            header = orjson.loads(encoded.body[: encoded.header_length])
            assert (
                header["outputs"][0]["parameters"]["binary_data_size"]
                == len(encoded.body) - encoded.header_length
            )
        else:
            document = orjson.loads(encoded.body)
            output = document["outputs"][0]
            assert output["datatype"] == datatype
            assert output["shape"] == list(array.shape)
            np.testing.assert_array_equal(
                np.array(output["data"], dtype=V2_TO_NUMPY[datatype]).reshape(array.shape), array
            )

    def test_response_has_name_version_id_and_only_the_requested_outputs(self) -> None:
        outputs = {"probabilities": np.ones((1, 3), np.float32), "label": np.array([2], np.int64)}
        decoded = InferRequest(inputs={}, id="abc", requested_outputs=["label"])
        document = orjson.loads(encode_response("iris", "7", decoded, outputs).body)
        assert document == {
            "model_name": "iris",
            "model_version": "7",
            "id": "abc",
            "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [2]}],
        }
