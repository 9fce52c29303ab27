"""Many connections to one `weir serve` from one asyncio process, for the connection-limit tests
and bench/connections.py: connections that are held open (idle, stalled halfway through a
body, or halfway through their headers), clients that send one request each on a new
connection, and keep-alive clients that send requests one after another. Loopback only, every
wait bounded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import orjson

IRIS_BODY = orjson.dumps(
    {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
)
HOLD_KINDS = ("idle", "stalled-body", "partial-headers")


def infer_request(model: str = "iris", body: bytes = IRIS_BODY) -> bytes:
    return (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


PROBE = b"GET /v2/health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
STALLED = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{"
PARTIAL = b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@dataclass
class Held:
    """Connections held open on purpose; `close()` ends them."""

    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    readers: list[asyncio.StreamReader] = field(default_factory=list)

    def closed_by_server(self) -> int:
        return sum(1 for reader in self.readers if reader.at_eof())

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        for writer in self.writers:
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def hold(port: int, kind: str, count: int, held: Held | None = None) -> Held:
    """Open `count` connections and leave each of them waiting on the server: `idle` sends
    nothing, `stalled-body` sends headers with Content-Length 1000 and one byte of body,
    `partial-headers` sends a request line and one header, never the blank line."""
    held = held or Held()
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if kind == "stalled-body":
            writer.write(STALLED)
        elif kind == "partial-headers":
            writer.write(PARTIAL)
        else:
            assert kind == "idle", kind
        await writer.drain()
        held.readers.append(reader)
        held.writers.append(writer)
    return held


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return int(status_line.split()[1]), await reader.readexactly(length)


@dataclass(frozen=True)
class Outcome:
    status: int  # 0: no answer in time (or the connection failed)
    seconds: float
    error: str = ""


async def one_request(port: int, raw: bytes, wait: float) -> Outcome:
    """A new connection, one request, its answer, within `wait` seconds in all."""
    started = time.perf_counter()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            status, _ = await read_response(reader)
            return Outcome(status, time.perf_counter() - started)
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
        return Outcome(0, time.perf_counter() - started, type(error).__name__)
    finally:
        if writer is not None:
            writer.close()


@dataclass
class KeepAliveResult:
    answered: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def keep_alive_client(
    port: int, raw: bytes, duration: float, wait: float, start: asyncio.Event
) -> KeepAliveResult:
    """One connection; after `start`, requests one after another for `duration` seconds, each
    waited for at most `wait` (a request that gets no answer ends the client)."""
    result = KeepAliveResult()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await start.wait()
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            started = time.perf_counter()
            async with asyncio.timeout(wait):
                writer.write(raw)
                status, _ = await read_response(reader)
            result.latencies.append(time.perf_counter() - started)
            if status == 200:
                result.answered += 1
            else:
                result.failed += 1
                result.errors.append(f"status {status}")
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
        result.failed += 1
        result.errors.append(type(error).__name__)
    finally:
        if writer is not None:
            writer.close()
    return result


async def keep_alive_clients(
    port: int, clients: int, duration: float, wait: float, raw: bytes | None = None
) -> list[KeepAliveResult]:
    """`clients` keep-alive clients at once (every connection opened before any request)."""
    start = asyncio.Event()
    tasks = [
        asyncio.create_task(keep_alive_client(port, raw or infer_request(), duration, wait, start))
        for _ in range(clients)
    ]
    await asyncio.sleep(0.5)  # let every connection open
    start.set()
    return list(await asyncio.gather(*tasks))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
