"""Decoding and encoding of Open Inference Protocol (V2) infer requests and responses.

Pure functions (bytes in, numpy arrays and bytes out, no I/O) so that every rule about what a
client may send is unit-testable, and every rejection carries a message that says what was
expected. Covers JSON tensors (flat or nested `data`) and the binary tensor data extension
(`Inference-Header-Content-Length`, `binary_data_size`, `binary_data`, `binary_data_output`)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from weir_server.datatypes import (
    FLOAT_DATATYPES,
    INTEGER_DATATYPES,
    V2_TO_NUMPY,
    v2_datatype_of_numpy,
)

Array = npt.NDArray[Any]

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
# Default bound on a tensor's elements: the default body limit (settings.DEFAULT_MAX_REQUEST_BYTES).
MAX_ELEMENTS = 64 * 1024 * 1024


class ProtocolError(Exception):
    """A request the protocol or the model cannot accept; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model as V2 metadata describes it (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def describe(self) -> str:
        return f"{self.datatype} {format_shape(self.shape)}"


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """The inputs and outputs of a model, in the model's order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # Derived once, read on every request.
    _inputs_by_name: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _output_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inputs_by_name", {spec.name: spec for spec in self.inputs})
        object.__setattr__(self, "_output_names", tuple(spec.name for spec in self.outputs))

    def input(self, name: str) -> TensorSpec | None:
        return self._inputs_by_name.get(name)

    def output_names(self) -> tuple[str, ...]:
        return self._output_names


@dataclass(slots=True)
class InferRequest:
    """A decoded infer request: validated numpy inputs keyed by name, and what to send back."""

    inputs: dict[str, Array]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    # Names of the outputs to return, in order; None = every output of the model.
    requested_outputs: list[str] | None = None
    # Output name -> answer in binary (True) or JSON (False); absent = `binary_default`.
    binary_outputs: dict[str, bool] = field(default_factory=dict)
    binary_default: bool = False


def format_shape(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def parse_header_length(value: str | None) -> int | None:
    """The `Inference-Header-Content-Length` header as an int, or None when absent."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise ProtocolError(
            f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}"
        ) from None
    if length < 0:
        raise ProtocolError(
            f"Inference-Header-Content-Length must be a non-negative integer, got {value!r}"
        )
    return length


def decode_request(
    body: bytes,
    header_length: int | None,
    signature: ModelSignature,
    *,
    max_elements: int = MAX_ELEMENTS,
    max_json_bytes: int | None = None,
) -> InferRequest:
    """Validate and decode an infer request body against the model's signature.

    `max_elements`: the most elements a tensor may have, its zero dimensions counted as 1 (the
    server passes its body limit: every element takes at least a byte of the body).
    `max_json_bytes`: the most bytes of JSON (the whole body, or a binary body's JSON header)
    and, apart, of BYTES tensors in the binary extension; more is a 413. Both bound work done
    holding the GIL: JSON is parsed by one C call, and every string becomes a Python object
    that numpy and then ONNX Runtime convert in C calls that hold it (measured: ONNX Runtime
    held it 0.75 s for 12.7 M strings)."""
    json_part: bytes | memoryview
    if header_length is None:
        json_part, binary_part = body, memoryview(b"")
    else:
        if header_length > len(body):
            raise ProtocolError(
                f"Inference-Header-Content-Length is {header_length} but the body has only "
                f"{len(body)} bytes"
            )
        # Views, not copies: the tensors' bytes are read in place (np.frombuffer).
        view = memoryview(body)
        json_part, binary_part = view[:header_length], view[header_length:]
    if max_json_bytes is not None and len(json_part) > max_json_bytes:
        raise ProtocolError(
            f"the request's JSON is {len(json_part)} bytes, over this server's limit of "
            f"{max_json_bytes} bytes for JSON; send large tensors in the binary tensor "
            "extension (Inference-Header-Content-Length, binary_data_size)",
            413,
        )
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as error:
        raise ProtocolError(f"malformed JSON in request body: {error}") from None
    if not isinstance(document, dict):
        raise ProtocolError("request body must be a JSON object with an 'inputs' list")

    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    parameters = _parameters(document, "request")
    binary_default = parameters.get("binary_data_output", False) if parameters else False
    if not isinstance(binary_default, bool):
        raise ProtocolError("parameter 'binary_data_output' must be true or false")

    inputs = _decode_inputs(
        document.get("inputs"), binary_part, signature, max_elements, max_json_bytes
    )
    requested, binary_outputs = _decode_requested_outputs(document.get("outputs"), signature)
    return InferRequest(
        inputs=inputs,
        id=request_id,
        parameters=parameters,
        requested_outputs=requested,
        binary_outputs=binary_outputs,
        binary_default=binary_default,
    )


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any] | None:
    parameters = obj.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise ProtocolError(f"'parameters' of the {where} must be a JSON object")
    return parameters


def _decode_inputs(
    raw_inputs: Any,
    binary_part: memoryview,
    signature: ModelSignature,
    max_elements: int,
    max_string_bytes: int | None = None,
) -> dict[str, Array]:
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError(
            "request must have a non-empty 'inputs' list; the model takes "
            + _describe_specs(signature.inputs)
        )
    inputs: dict[str, Array] = {}
    offset = 0
    strings = 0  # bytes of BYTES tensors in the binary part
    for position, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise ProtocolError(f"inputs[{position}] must be a JSON object")
        name = raw.get("name")
        if not isinstance(name, str):
            raise ProtocolError(f"inputs[{position}] must have a string 'name'")
        spec = signature.input(name)
        if spec is None:
            raise ProtocolError(
                f"unknown input '{name}'; the model takes " + _describe_specs(signature.inputs)
            )
        if name in inputs:
            raise ProtocolError(f"input '{name}' is given more than once")
        shape = _checked_shape(raw.get("shape"), spec, max_elements)
        datatype = raw.get("datatype")
        if datatype != spec.datatype:
            raise ProtocolError(
                f"input '{name}' has datatype {datatype!r}; the model expects {spec.datatype}"
            )
        parameters = raw.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise ProtocolError(f"'parameters' of the input '{name}' must be a JSON object")
        binary_size = parameters.get("binary_data_size") if parameters else None
        if binary_size is not None:
            if not isinstance(binary_size, int) or isinstance(binary_size, bool) or binary_size < 0:
                raise ProtocolError(
                    f"input '{name}': binary_data_size must be a non-negative integer"
                )
            if offset + binary_size > len(binary_part):
                raise ProtocolError(
                    f"input '{name}': binary_data_size is {binary_size} but only "
                    f"{len(binary_part) - offset} bytes of binary data remain in the body"
                )
            chunk = binary_part[offset : offset + binary_size]
            offset += binary_size
            if spec.datatype == "BYTES" and max_string_bytes is not None:
                strings += binary_size
                if strings > max_string_bytes:
                    raise ProtocolError(
                        f"the request's BYTES tensors hold {strings} bytes or more of strings, "
                        f"over this server's limit of {max_string_bytes} bytes "
                        "(--max-json-bytes, which holds for strings too: each becomes an "
                        "object the model's runtime converts one by one)",
                        413,
                    )
            inputs[name] = _array_from_binary(chunk, shape, spec)
        else:
            if "data" not in raw:
                raise ProtocolError(
                    f"input '{name}' has neither 'data' nor a binary_data_size parameter"
                )
            inputs[name] = _array_from_json(raw["data"], shape, spec)
    if offset != len(binary_part):
        raise ProtocolError(
            f"the body has {len(binary_part) - offset} bytes of binary data that no input claims"
        )
    if len(inputs) != len(signature.inputs):
        missing = [spec.name for spec in signature.inputs if spec.name not in inputs]
        raise ProtocolError(
            "missing input "
            + ", ".join(f"'{m}'" for m in missing)
            + "; the model takes "
            + _describe_specs(signature.inputs)
        )
    return inputs


def _describe_specs(specs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"'{s.name}' ({s.describe()})" for s in specs)


def _checked_shape(raw_shape: Any, spec: TensorSpec, max_elements: int) -> tuple[int, ...]:
    valid = type(raw_shape) is list
    if valid:
        for d in raw_shape:
            if type(d) is not int or d < 0:  # `type is`: a bool is not a dimension
                valid = False
                break
    if not valid:
        raise ProtocolError(
            f"input '{spec.name}' must have a 'shape' list of non-negative integers; "
            f"the model expects {format_shape(spec.shape)}"
        )
    shape = tuple(raw_shape)
    expected = spec.shape
    matches = len(shape) == len(expected)
    if matches:
        for want, got in zip(expected, shape, strict=True):
            if want != -1 and want != got:
                matches = False
                break
    if not matches:
        raise ProtocolError(
            f"input '{spec.name}' has shape {format_shape(shape)}; "
            f"the model expects {format_shape(spec.shape)} (-1 = any size)"
        )
    size = 1
    for d in shape:
        if d > 1:
            size *= d
    if size > max_elements:
        # Not a tensor any request could carry: each element takes at least one byte of a body
        # of at most `max_elements` bytes (and numpy could not even make it empty).
        raise ProtocolError(
            f"input '{spec.name}' has shape {format_shape(shape)}: more than {max_elements} "
            "elements (counting zero dimensions as 1), which no request body this server "
            "accepts can hold"
        )
    return shape


def _array_from_binary(chunk: memoryview, shape: tuple[int, ...], spec: TensorSpec) -> Array:
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        strings = _split_length_prefixed(chunk, spec.name)
        if len(strings) != count:
            raise ProtocolError(
                f"input '{spec.name}' has {len(strings)} BYTES elements in its binary data; "
                f"shape {format_shape(shape)} needs {count}"
            )
        array = np.empty(count, dtype=object)
        array[:] = strings
        return array.reshape(shape)
    dtype = V2_TO_NUMPY[spec.datatype].newbyteorder("<")
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise ProtocolError(
            f"input '{spec.name}' has {len(chunk)} bytes of binary data; shape "
            f"{format_shape(shape)} of {spec.datatype} needs {expected}"
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


_LENGTH_PREFIX = struct.Struct("<I")


def _split_length_prefixed(chunk: memoryview, name: str) -> list[str]:
    """BYTES elements, each a 4-byte little-endian length and that many bytes of UTF-8.
    (Measured on 1.6 M one-byte elements: slices of bytes decoded afterwards, 0.57 s; slices
    of the memoryview decoded one by one, 1.25 s.)"""
    data = bytes(chunk)
    elements: list[bytes] = []
    append = elements.append
    unpack = _LENGTH_PREFIX.unpack_from
    position, end = 0, len(data)
    while position < end:
        if position + 4 > end:
            raise ProtocolError(f"input '{name}': truncated BYTES length prefix in binary data")
        (length,) = unpack(data, position)
        position += 4
        stop = position + length
        if stop > end:
            raise ProtocolError(
                f"input '{name}': a BYTES element of {length} bytes runs past the end of its "
                f"data ({end - position} bytes left)"
            )
        append(data[position:stop])
        position = stop
    try:
        return [element.decode("utf-8") for element in elements]
    except UnicodeDecodeError:
        raise ProtocolError(f"input '{name}': BYTES element is not valid UTF-8") from None


def _leaves(
    data: list[Any], spec: TensorSpec, shape: tuple[int, ...]
) -> tuple[list[Any], set[type]]:
    """The elements of flat or regularly nested `data`, in order, without numpy: numpy would
    turn a list holding one long string among numbers into a fixed-width string array of that
    width for every element (measured: a 96 KB body made 2 GB), so element types are checked
    first. Each level is flattened by C calls (map, chain), not per element in Python.
    Returns the elements and their types."""
    level = data
    while True:
        if len(level) == 1 and type(level[0]) is list:  # one row: nothing can be ragged
            level = level[0]
            continue
        types = set(map(type, level))
        if list not in types:
            return level, types
        if len(types) > 1 or len(set(map(len, level))) > 1:
            raise ProtocolError(
                f"input '{spec.name}': 'data' is a ragged nested list; give it flat or as a "
                f"regular nested list of shape {format_shape(shape)}"
            )
        level = list(chain.from_iterable(level))


def _array_from_json(data: Any, shape: tuple[int, ...], spec: TensorSpec) -> Array:
    count = math.prod(shape)
    target = V2_TO_NUMPY[spec.datatype]
    elements, types = _leaves(data if isinstance(data, list) else [data], spec, shape)
    if len(elements) != count:
        raise ProtocolError(
            f"input '{spec.name}' has {len(elements)} elements in 'data'; shape "
            f"{format_shape(shape)} needs {count}"
        )
    if count == 0:
        return np.zeros(shape, dtype=target)
    datatype = spec.datatype
    if datatype == "BYTES":
        if types != {str}:
            raise ProtocolError(f"input '{spec.name}' is BYTES: every element must be a string")
        array = np.empty(count, dtype=object)
        array[:] = elements
        return array.reshape(shape)
    if datatype == "BOOL":
        if types != {bool}:
            raise ProtocolError(f"input '{spec.name}' is BOOL: every element must be true or false")
        return np.array(elements, dtype=target).reshape(shape)
    if datatype in INTEGER_DATATYPES:
        if types != {int}:  # `type is int`: a bool is not an integer here
            raise ProtocolError(
                f"input '{spec.name}' is {datatype}: every element must be an integer"
            )
        info = np.iinfo(target)  # type: ignore[type-var]
        if min(elements) < info.min or max(elements) > info.max:
            raise ProtocolError(
                f"input '{spec.name}' is {datatype}: values must lie in [{info.min}, {info.max}]"
            )
        return np.array(elements, dtype=target).reshape(shape)
    assert datatype in FLOAT_DATATYPES
    if not types <= {float, int}:
        raise ProtocolError(f"input '{spec.name}' is {datatype}: every element must be a number")
    return np.array(elements, dtype=target).reshape(shape)  # orjson's ints fit in 64 bits


def _decode_requested_outputs(
    raw_outputs: Any, signature: ModelSignature
) -> tuple[list[str] | None, dict[str, bool]]:
    if raw_outputs is None:
        return None, {}
    if not isinstance(raw_outputs, list):
        raise ProtocolError("'outputs' must be a list of {\"name\": ...} objects")
    known = signature.output_names()
    names: list[str] = []
    binary: dict[str, bool] = {}
    for position, raw in enumerate(raw_outputs):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ProtocolError(f"outputs[{position}] must be an object with a string 'name'")
        name = raw["name"]
        if name not in known:
            raise ProtocolError(
                f"unknown output '{name}'; the model has outputs "
                + ", ".join(f"'{n}'" for n in known)
            )
        parameters = _parameters(raw, f"output '{name}'") or {}
        flag = parameters.get("binary_data")
        if flag is not None:
            if not isinstance(flag, bool):
                raise ProtocolError(f"output '{name}': binary_data must be true or false")
            binary[name] = flag
        if name not in names:
            names.append(name)
    if not names:  # `"outputs": []`: as if absent, every output (as Triton answers it)
        return None, binary
    return names, binary


@dataclass(frozen=True, slots=True)
class EncodedResponse:
    """A response body; `header_length` is set when binary tensors follow the JSON header."""

    body: bytes
    header_length: int | None


def encode_response(
    model_name: str,
    model_version: str | None,
    request: InferRequest,
    outputs: dict[str, Array],
) -> EncodedResponse:
    """Encode the model's outputs as the request asked (subset, order, JSON or binary)."""
    names = request.requested_outputs if request.requested_outputs is not None else list(outputs)
    encoded: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        array = outputs[name]
        datatype = v2_datatype_of_numpy(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if request.binary_outputs.get(name, request.binary_default):
            blob = _binary_of(array, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data_of(array, datatype)
        encoded.append(entry)
    document: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        document["model_version"] = model_version
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = encoded
    header = orjson.dumps(document, option=_JSON_OPTIONS)
    if not blobs:
        return EncodedResponse(header, None)
    return EncodedResponse(header + b"".join(blobs), len(header))


def _binary_of(array: Array, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for element in array.reshape(-1):
            raw = element if isinstance(element, bytes) else str(element).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).tobytes()


# Above this many elements, an output's JSON is written in pieces of this many: orjson holds
# the GIL for a whole call (measured: 110 ms for 12 M floats), which a response encoded on a
# thread must not do for long, so that the event loop can take it back between pieces.
JSON_PIECE_ELEMENTS = 256 * 1024


def _json_data_of(array: Array, datatype: str) -> Any:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        strings = [e.decode("utf-8", "replace") if isinstance(e, bytes) else str(e) for e in flat]
        if len(strings) <= JSON_PIECE_ELEMENTS:
            return strings
        return _pieces(strings, len(strings), 0)
    flat = np.ascontiguousarray(flat)
    if flat.size <= JSON_PIECE_ELEMENTS:
        return flat
    return _pieces(flat, flat.size, _JSON_OPTIONS)


def _pieces(elements: Any, count: int, option: int) -> orjson.Fragment:
    """The JSON list of `elements`, written JSON_PIECE_ELEMENTS at a time."""
    step = JSON_PIECE_ELEMENTS
    parts = [
        orjson.dumps(elements[i : i + step], option=option)[1:-1] for i in range(0, count, step)
    ]
    return orjson.Fragment(b"[" + b",".join(parts) + b"]")


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
