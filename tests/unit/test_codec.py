"""The V2 codec: what a client may send, how it is decoded, and what every rejection says."""

from __future__ import annotations

import json
import struct
import tracemalloc
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from weir_server import codec
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


DYNAMIC = ModelSignature(
    inputs=(TensorSpec("x", "FP32", (-1, -1)), TensorSpec("s", "BYTES", (-1,))),
    outputs=(TensorSpec("y", "FP32", (-1, -1)),),
)


class TestShapesThatCannotBeReal:
    """Issue 17: `[0, 2**62]` passed every check, and numpy then raised (a 500, no body)."""

    @pytest.mark.parametrize("shape", [[0, 2**62], [2**62, 0], [2**40, 2**40], [1, 70000]], ids=str)
    def test_a_shape_with_more_elements_than_a_body_can_hold_is_a_400(
        self, shape: list[int]
    ) -> None:
        body = request({"name": "x", "datatype": "FP32", "shape": shape, "data": []})
        with pytest.raises(ProtocolError) as caught:
            decode_request(body, None, DYNAMIC, max_elements=65536)
        assert caught.value.status == 400
        assert "more than 65536 elements" in caught.value.message

    def test_the_same_shape_in_the_binary_extension_is_a_400(self) -> None:
        header = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": [0, 2**62],
                        "parameters": {"binary_data_size": 0},
                    }
                ]
            }
        )
        with pytest.raises(ProtocolError, match="more than"):
            decode_request(header, len(header), DYNAMIC)

    def test_an_empty_tensor_of_a_real_shape_is_decoded(self) -> None:
        body = request(
            {"name": "x", "datatype": "FP32", "shape": [0, 1000], "data": []},
            {"name": "s", "datatype": "BYTES", "shape": [0], "data": []},
        )
        decoded = decode_request(body, None, DYNAMIC, max_elements=65536)
        assert decoded.inputs["x"].shape == (0, 1000)
        assert decoded.inputs["s"].shape == (0,)


class TestElementTypes:
    def test_one_long_string_among_numbers_is_refused_without_a_string_array(self) -> None:
        # np.array(data) would make a <U8000 array of 1000 elements, 32 MB from a 10 kB body
        # (a 96 kB body made 2 GB), before any check could refuse it.
        body = request(fp32_input(["a" * 8000] + [1.0] * 999, [1, 1000]))
        tracemalloc.start()
        try:
            error = rejection(body, None, DYNAMIC_ONE)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert "must be a number" in error.message
        assert peak < 4 * 1024 * 1024

    @pytest.mark.parametrize(
        ("datatype", "data", "fragment"),
        [
            ("FP32", [None], "must be a number"),
            ("FP32", [{}], "must be a number"),
            ("FP32", ["1.5"], "must be a number"),
            ("INT32", [True], "must be an integer"),
            ("BOOL", [0], "true or false"),
            ("BYTES", [["a"], "b"], "ragged"),
        ],
    )
    def test_elements_of_the_wrong_type_are_refused(
        self, datatype: str, data: list[Any], fragment: str
    ) -> None:
        shape = (-1,)
        signature = ModelSignature((TensorSpec("x", datatype, shape),), ())
        body = request({"name": "x", "datatype": datatype, "shape": [len(data)], "data": data})
        assert fragment in rejection(body, None, signature).message

    def test_regular_nested_data_of_any_depth_decodes_in_order(self) -> None:
        signature = ModelSignature((TensorSpec("x", "INT64", (2, 2, 2)),), ())
        data = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
        body = request({"name": "x", "datatype": "INT64", "shape": [2, 2, 2], "data": data})
        decoded = decode_request(body, None, signature)
        np.testing.assert_array_equal(decoded.inputs["x"], np.array(data))

    def test_ragged_data_whose_count_matches_is_still_ragged(self) -> None:
        error = rejection(request(fp32_input([[1, 2, 3], [4]], [1, 4])))
        assert "ragged" in error.message


DYNAMIC_ONE = ModelSignature((TensorSpec("input", "FP32", (-1, -1)),), ())


class TestJsonLimit:
    def test_json_over_the_json_limit_is_a_413_that_points_to_the_binary_extension(
        self,
    ) -> None:
        body = request(fp32_input([1.0, 2.0, 3.0, 4.0]))
        with pytest.raises(ProtocolError) as caught:
            decode_request(body, None, IRIS, max_json_bytes=len(body) - 1)
        assert caught.value.status == 413
        assert "binary tensor extension" in caught.value.message
        decode_request(body, None, IRIS, max_json_bytes=len(body))

    def test_a_binary_bodys_json_header_is_held_to_the_json_limit_its_tensors_are_not(
        self,
    ) -> None:
        body, length = binary_request({"input": np.zeros((100, 4), np.float32)}, {"input": "FP32"})
        decode_request(body, length, IRIS, max_json_bytes=length)
        with pytest.raises(ProtocolError, match="limit"):
            decode_request(body, length, IRIS, max_json_bytes=length - 1)


class TestOutputs:
    def test_an_empty_outputs_list_asks_for_every_output(self) -> None:
        decoded = decode_request(request(fp32_input([1, 2, 3, 4]), outputs=[]), None, IRIS)
        assert decoded.requested_outputs is None

    def test_large_outputs_written_in_pieces_are_the_same_json(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(codec, "JSON_PIECE_ELEMENTS", 7)
        outputs = {
            "probabilities": np.arange(150, dtype=np.float32).reshape(50, 3),
            "label": np.array([str(i) for i in range(50)], dtype=object),
        }
        encoded = encode_response("m", None, InferRequest(inputs={}), outputs)
        document = orjson.loads(encoded.body)
        assert document["outputs"][0]["data"] == list(range(150))
        assert document["outputs"][1]["data"] == [str(i) for i in range(50)]


class TestStringLimit:
    """BYTES tensors in the binary extension count against the JSON limit: every string
    becomes a Python object that ONNX Runtime converts holding the GIL (issue 17: 64 MB of
    strings stalled every other request for 9 s)."""

    def body(self, count: int) -> tuple[bytes, int]:
        strings = np.array(["a"] * count, dtype=object)
        return binary_request({"s": strings}, {"s": "BYTES"})

    def test_strings_over_the_limit_are_a_413(self) -> None:
        body, length = self.body(1000)  # 5,000 bytes of length prefixes and strings
        signature = ModelSignature((TensorSpec("s", "BYTES", (-1,)),), ())
        with pytest.raises(ProtocolError) as caught:
            decode_request(body, length, signature, max_json_bytes=4999)
        assert caught.value.status == 413
        assert "--max-json-bytes" in caught.value.message
        assert decode_request(body, length, signature, max_json_bytes=5000).inputs["s"].size == 1000
