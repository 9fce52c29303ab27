"""Every malformed infer request a client can send, over real HTTP to a real `weir serve`: each
gets a JSON error with a message (never a 500 with an empty body), and /metrics and the access
log count exactly the statuses the client saw. A failure counted as a success is invisible to
the rollout analysis: a canary failing that way would never be rolled back (issue 17)."""

from __future__ import annotations

import json
import struct
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.server.rawhttp import Answer, exchange, request_bytes
from tests.server.test_observability import samples, value
from tests.support.processes import ServerProcess, running_server
from weir_server import sample_models

INFER = "/v2/models/scaled/infer"
MAX_REQUEST_BYTES = 65536
MAX_JSON_BYTES = 16384


@pytest.fixture(scope="module")
def scaled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    model = sample_models.scaled(tmp_path_factory.mktemp("scaled") / "scaled.onnx")
    with running_server(
        model,
        "--name",
        "scaled",
        "--max-request-bytes",
        str(MAX_REQUEST_BYTES),
        "--max-json-bytes",
        str(MAX_JSON_BYTES),
        "--body-timeout",
        "1",
    ) as server:
        yield server


def tensors(**changes: Any) -> list[dict[str, Any]]:
    """A valid request's inputs, the scalar first; `changes` replace fields of one input."""
    inputs: list[dict[str, Any]] = [
        {"name": "scale", "shape": [], "datatype": "FP32", "data": [2.0]},
        {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]},
        {"name": "tag", "shape": [1], "datatype": "BYTES", "data": ["a"]},
    ]
    for name, fields in changes.items():
        for tensor in inputs:
            if tensor["name"] == name:
                tensor.update(fields)
    return inputs


def json_request(document: Any, path: str = INFER) -> bytes:
    return request_bytes(json.dumps(document).encode(), path)


def binary_request(name: str, blob: bytes, size: int | None = None, **changes: Any) -> bytes:
    """The valid request with input `name` in the binary extension (`binary_data_size`:
    `size`, by default the blob's length)."""
    inputs = tensors(**changes)
    for position, tensor in enumerate(inputs):
        if tensor["name"] == name:
            inputs[position] = {
                "name": name,
                "shape": tensor["shape"],
                "datatype": tensor["datatype"],
                "parameters": {"binary_data_size": len(blob) if size is None else size},
            }
    header = orjson.dumps({"inputs": inputs})
    return request_bytes(
        header + blob, INFER, {"Inference-Header-Content-Length": str(len(header))}
    )


def bytes_elements(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def nested(depth: int) -> Any:
    data: Any = 1.0
    for _ in range(depth):
        data = [data]
    return data


HUGE = 4611686018427387904  # 2**62
CASES: list[tuple[str, bytes]] = [
    ("valid, a scalar input listed first", json_request({"inputs": tensors()})),
    ("outputs: [] means every output", json_request({"inputs": tensors(), "outputs": []})),
    ("bad JSON", request_bytes(b"{", INFER)),
    ("empty body", request_bytes(b"", INFER)),
    ("JSON nested past the parser's depth", request_bytes(b"[" * 2000 + b"]" * 2000, INFER)),
    ("not an object", json_request([1, 2])),
    ("inputs not a list", json_request({"inputs": 5})),
    ("no inputs", json_request({"inputs": []})),
    ("an input that is not an object", json_request({"inputs": [5]})),
    ("name not a string", json_request({"inputs": [{"name": 5}]})),
    ("unknown input", json_request({"inputs": [*tensors(), {"name": "z"}]})),
    ("duplicate inputs", json_request({"inputs": [*tensors(), tensors()[1]]})),
    ("missing input", json_request({"inputs": tensors()[:2]})),
    ("shape not a list", json_request({"inputs": tensors(x={"shape": "1,2"})})),
    ("negative dimension", json_request({"inputs": tensors(x={"shape": [-1, 2]})})),
    ("bool dimension", json_request({"inputs": tensors(x={"shape": [True, 2]})})),
    ("float dimension", json_request({"inputs": tensors(x={"shape": [1.0, 2]})})),
    (
        "huge dimension beside a zero (issue 17)",
        json_request({"inputs": tensors(x={"shape": [0, HUGE], "data": []})}),
    ),
    (
        "huge dimensions, no data",
        json_request({"inputs": tensors(x={"shape": [2**40, 2**40], "data": []})}),
    ),
    ("dimension past int64", json_request({"inputs": tensors(x={"shape": [1, 2**70]})})),
    ("wrong rank", json_request({"inputs": tensors(x={"shape": [2]})})),
    ("a scalar given a shape", json_request({"inputs": tensors(scale={"shape": [1]})})),
    ("shape and data disagree", json_request({"inputs": tensors(x={"data": [1.0]})})),
    ("ragged data", json_request({"inputs": tensors(x={"data": [[1.0], [2.0, 3.0]]})})),
    ("strings for FP32", json_request({"inputs": tensors(x={"data": ["a", "b"]})})),
    (
        "one long string among numbers (would be a 2 GB numpy array)",
        json_request({"inputs": tensors(x={"shape": [1, 1000], "data": ["a" * 8000] + [1] * 999})}),
    ),
    ("null data", json_request({"inputs": tensors(x={"data": [None, None]})})),
    (
        "an integer beyond any float (the parser refuses it)",
        json_request({"inputs": tensors(x={"data": [10**400, 1]})}),
    ),
    ("objects as data", json_request({"inputs": tensors(x={"data": [{}, {}]})})),
    ("numbers for BYTES", json_request({"inputs": tensors(tag={"data": [1]})})),
    (
        "neither data nor binary_data_size",
        json_request({"inputs": [{k: v for k, v in t.items() if k != "data"} for t in tensors()]}),
    ),
    ("wrong datatype", json_request({"inputs": tensors(x={"datatype": "INT32"})})),
    ("unknown datatype", json_request({"inputs": tensors(x={"datatype": "FP128"})})),
    ("input parameters not an object", json_request({"inputs": tensors(x={"parameters": 3})})),
    (
        "binary_data_size not an integer",
        json_request({"inputs": tensors(x={"parameters": {"binary_data_size": "8"}})}),
    ),
    (
        "binary_data_size negative",
        json_request({"inputs": tensors(x={"parameters": {"binary_data_size": -8}})}),
    ),
    (
        "binary_data_size a bool",
        json_request({"inputs": tensors(x={"parameters": {"binary_data_size": True}})}),
    ),
    ("binary_data_size larger than the data", binary_request("tag", bytes_elements(b"a"), 50)),
    ("binary_data_size smaller than the data", binary_request("tag", bytes_elements(b"a"), 2)),
    ("binary data no input claims", binary_request("tag", bytes_elements(b"a") + b"\0\0", 5)),
    ("BYTES length prefix past the end", binary_request("tag", struct.pack("<I", 1000) + b"ab")),
    ("BYTES length prefix truncated", binary_request("tag", b"\x01\x00")),
    ("BYTES element not UTF-8", binary_request("tag", bytes_elements(b"\xff\xfe"))),
    (
        "BYTES count and shape disagree",
        binary_request("tag", bytes_elements(b"a", b"b"), tag={"shape": [1]}),
    ),
    (
        "huge dimension beside a zero, binary",
        binary_request("x", b"", x={"shape": [0, HUGE]}),
    ),
    ("valid, binary", binary_request("tag", bytes_elements(b"a"))),
    ("valid, binary FP32", binary_request("x", struct.pack("<2f", 1.0, 2.0))),
    (
        "BYTES shape huge, binary",
        binary_request("tag", bytes_elements(b"a"), tag={"shape": [HUGE]}),
    ),
    ("FP32 bytes and shape disagree", binary_request("x", b"\0" * 12)),
    (
        "header length past the body",
        request_bytes(b"{}", INFER, {"Inference-Header-Content-Length": "99999"}),
    ),
    (
        "header length negative",
        request_bytes(b"{}", INFER, {"Inference-Header-Content-Length": "-1"}),
    ),
    (
        "header length not a number",
        request_bytes(b"{}", INFER, {"Inference-Header-Content-Length": "two"}),
    ),
    (
        "header length of 5000 digits",
        request_bytes(b"{}", INFER, {"Inference-Header-Content-Length": "9" * 5000}),
    ),
    ("unknown output", json_request({"inputs": tensors(), "outputs": [{"name": "nope"}]})),
    ("outputs not a list", json_request({"inputs": tensors(), "outputs": {"name": "y"}})),
    (
        "binary_data not a bool",
        json_request(
            {"inputs": tensors(), "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]}
        ),
    ),
    (
        "binary_data_output not a bool",
        json_request({"inputs": tensors(), "parameters": {"binary_data_output": "yes"}}),
    ),
    ("id not a string", json_request({"inputs": tensors(), "id": 7})),
    ("parameters not an object", json_request({"inputs": tensors(), "parameters": [1]})),
    ("unknown model", json_request({"inputs": tensors()}, "/v2/models/tulip/infer")),
    ("unknown version", json_request({"inputs": tensors()}, "/v2/models/scaled/versions/2/infer")),
    (
        "body over the limit",
        binary_request("x", b"\0" * 80000, x={"shape": [1, 20000]}),
    ),
    (
        "JSON body over the limit",
        json_request({"inputs": tensors(x={"shape": [1, 20000], "data": [1.0] * 20000})}),
    ),
    (
        "JSON over the JSON limit, under the body limit",
        json_request({"inputs": tensors(x={"shape": [1, 5000], "data": [1.0] * 5000})}),
    ),
    (
        "chunked, valid",
        request_bytes(
            None,
            INFER,
            {"Transfer-Encoding": "chunked"},
            content_length=None,
        )
        + b"%x\r\n" % len(orjson.dumps({"inputs": tensors()}))
        + orjson.dumps({"inputs": tensors()})
        + b"\r\n0\r\n\r\n",
    ),
    (
        "chunked, over the limit",
        request_bytes(None, INFER, {"Transfer-Encoding": "chunked"}, content_length=None)
        + (b"4000\r\n" + b" " * 0x4000 + b"\r\n") * 5
        + b"0\r\n\r\n",
    ),
    (
        "Content-Length larger than the body (it stalls: 408)",
        request_bytes(b'{"inputs": []}', INFER, content_length="1000"),
    ),
    (
        "Content-Length smaller than the body",
        request_bytes(orjson.dumps({"inputs": tensors()}), INFER, content_length="10"),
    ),
    ("Content-Length not a number", request_bytes(b"{}", INFER, content_length="ten")),
    ("Content-Length negative", request_bytes(b"{}", INFER, content_length="-2")),
    ("Content-Length in superscript digits", request_bytes(b"{}", INFER, content_length="²")),
    (
        "Content-Length and chunked at once",
        request_bytes(b"0\r\n\r\n", INFER, {"Transfer-Encoding": "chunked"}),
    ),
    (
        "a header value that is not ASCII",
        request_bytes(orjson.dumps({"inputs": tensors()}), INFER, {"X-Note": "é"}),
    ),
]


def send_all(server: ServerProcess) -> list[tuple[str, Answer]]:
    return [(name, exchange(server.port, raw)) for name, raw in CASES]


def access_log_statuses(server: ServerProcess, path_part: str) -> Counter[int]:
    entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return Counter(
        entry["status"]
        for entry in entries
        if entry.get("logger") == "weir.access" and path_part in entry["path"]
    )


def test_every_malformed_request_is_answered_with_a_message_and_counted_as_the_client_saw_it(
    scaled_server: ServerProcess,
) -> None:
    before = samples(scaled_server)
    answers = send_all(scaled_server)

    by_name = dict(answers)
    assert by_name["valid, a scalar input listed first"].status == 200
    assert by_name["valid, binary"].status == 200
    assert by_name["chunked, valid"].status == 200
    assert by_name["outputs: [] means every output"].status == 200
    assert [
        o["name"] for o in orjson.loads(by_name["outputs: [] means every output"].body)["outputs"]
    ] == ["y", "tag_out"]
    assert by_name["body over the limit"].status == 413
    assert "limit of 65536 bytes" in orjson.loads(by_name["body over the limit"].body)["error"]
    assert by_name["valid, binary FP32"].status == 200
    over_json = by_name["JSON over the JSON limit, under the body limit"]
    assert over_json.status == 413
    assert "binary tensor extension" in orjson.loads(over_json.body)["error"]
    assert by_name["chunked, over the limit"].status == 413
    stalled = by_name["Content-Length larger than the body (it stalls: 408)"]
    assert stalled.status == 408
    assert stalled.closed, "a connection whose body never came must be closed"
    for name in ("unknown model", "unknown version"):
        assert by_name[name].status == 404

    counted: Counter[int] = Counter()
    for name, answer in answers:
        assert answer.status != 0, f"{name}: no answer at all"
        assert not (answer.status == 500 and not answer.body), f"{name}: 500 with no body"
        if answer.headers.get("content-type") == "application/json":
            # Answered by weir, which must say why in {"error": ...} whenever it refused.
            document = orjson.loads(answer.body)
            if answer.status != 200:
                assert document["error"], name
            assert answer.status < 500, f"{name}: {answer.status} {answer.body[:300]!r}"
            counted[answer.status] += 1
        else:
            # Refused by the HTTP layer (hyper) before any route: a 4xx, never reaching weir.
            assert 400 <= answer.status < 500, f"{name}: {answer.status} {answer.headers}"

    deadline = time.monotonic() + 5
    while True:  # access log lines are written every 50 ms, off the request path
        after = samples(scaled_server)
        metrics = Counter(
            {
                int(code): round(
                    value(after, "weir_inference_requests_total", code=code)
                    - value(before, "weir_inference_requests_total", code=code)
                )
                for code in {"200", "400", "404", "408", "413", "500"}
            }
        )
        logged = access_log_statuses(scaled_server, "/infer")
        if (metrics == counted and logged == counted) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert +metrics == counted
    assert logged == counted
    assert value(after, "weir_inference_in_flight_requests") == 0
    assert "Traceback" not in scaled_server.log()


def test_a_body_that_stalls_gets_408_and_its_connection_is_closed(
    scaled_server: ServerProcess,
) -> None:
    for path in (INFER, "/v2/health/live"):  # the direct infer path and the FastAPI bridge
        started = time.monotonic()
        answer = exchange(
            scaled_server.port, request_bytes(b"{", path, content_length="1000"), timeout=20
        )
        assert answer.status == 408, path
        assert "--body-timeout" in orjson.loads(answer.body)["error"]
        assert answer.closed
        assert 0.9 < time.monotonic() - started < 10


@pytest.mark.parametrize(
    "raw",
    [
        "GET /v2/health/live?x=中 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
        "GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: 中\r\n\r\n".encode(),
        b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Note: \xff\xfe\r\n\r\n",
        "GET /v2/models/中 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
    ],
    ids=["query", "header", "header-bytes", "path"],
)
def test_other_routes_answer_odd_characters_never_with_an_empty_500(
    scaled_server: ServerProcess, raw: bytes
) -> None:
    answer = exchange(scaled_server.port, raw)
    assert answer.status in (200, 404), answer
    assert answer.headers.get("content-type") == "application/json"
