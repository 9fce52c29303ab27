"""One big request while another client sends small ones: how long the small ones wait.

Used by tests/server/test_big_requests.py (a generous bound) and bench/big_requests.py (the
figures in docs/benchmarks.md). The small client is one keep-alive httpx client on its own
thread, sending requests one after another from before the big request starts until after it
is answered; every latency is kept."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
import orjson

SMALL_IRIS = orjson.dumps(
    {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
)
SMALL_SCALED = orjson.dumps(
    {
        "inputs": [
            {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]},
            {"name": "scale", "shape": [], "datatype": "FP32", "data": [2.0]},
            {"name": "tag", "shape": [1], "datatype": "BYTES", "data": ["a"]},
        ]
    }
)


@dataclass(frozen=True)
class Big:
    """A big request: its body and headers."""

    name: str
    body: bytes
    headers: dict[str, str]


def iris_json(rows: int) -> Big:
    data = np.random.default_rng(0).random((rows, 4)).tolist()
    body = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [rows, 4], "datatype": "FP32", "data": data}]}
    )
    return Big(f"iris, nested JSON, {rows:,} rows", body, {"content-type": "application/json"})


def iris_json_over_limit(megabytes: float) -> Big:
    """Nested JSON of about `megabytes` MB (over `--max-json-bytes`, under the body limit)."""
    big = iris_json(int(megabytes * 1e6 / 82))
    return Big(f"iris, nested JSON, {len(big.body) / 1e6:.0f} MB", big.body, big.headers)


def iris_binary(rows: int, binary_out: bool) -> Big:
    tensor = np.random.default_rng(0).random((rows, 4), dtype=np.float32)
    document = {
        "inputs": [
            {
                "name": "input",
                "shape": [rows, 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": tensor.nbytes},
            }
        ],
        "parameters": {"binary_data_output": binary_out},
    }
    header = orjson.dumps(document)
    out = "binary" if binary_out else "JSON"
    return Big(
        f"iris, binary FP32, {rows:,} rows, {out} answer",
        header + tensor.tobytes(),
        {"inference-header-content-length": str(len(header))},
    )


def scaled_bytes(count: int) -> Big:
    """The scaled model's BYTES input `tag` with `count` one-character strings, in binary."""
    blob = (struct.pack("<I", 1) + b"a") * count
    document = {
        "inputs": [  # `x` first: before issue 17, a scalar first failed every request
            {"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]},
            {"name": "scale", "shape": [], "datatype": "FP32", "data": [2.0]},
            {
                "name": "tag",
                "shape": [count],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": len(blob)},
            },
        ],
        "outputs": [{"name": "y"}],
    }
    header = orjson.dumps(document)
    return Big(
        f"BYTES in binary, {count:,} strings",
        header + blob,
        {"inference-header-content-length": str(len(header))},
    )


@dataclass(frozen=True)
class Measured:
    big: str
    body_bytes: int
    big_status: int
    big_seconds: float
    small_latencies: list[float] = field(repr=False)
    small_failures: int

    @property
    def small_max(self) -> float:
        return max(self.small_latencies, default=float("nan"))


def small_latencies_during(
    url: str, model: str, small: bytes, big: Big, send_big: Callable[[], int] | None = None
) -> Measured:
    """Send `big` while a second client sends `small` one after another."""
    infer = f"{url}/v2/models/{model}/infer"
    latencies: list[float] = []
    failures = 0
    stop = threading.Event()

    def small_client() -> None:
        nonlocal failures
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                started = time.perf_counter()
                try:
                    response = client.post(
                        infer, content=small, headers={"content-type": "application/json"}
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                failures += not ok
                time.sleep(0.005)

    thread = threading.Thread(target=small_client, daemon=True)
    thread.start()
    time.sleep(0.5)
    started = time.perf_counter()
    with httpx.Client(timeout=120) as client:
        status = client.post(infer, content=big.body, headers=big.headers).status_code
    seconds = time.perf_counter() - started
    time.sleep(0.3)
    stop.set()
    thread.join(timeout=60)
    return Measured(big.name, len(big.body), status, seconds, latencies, failures)
