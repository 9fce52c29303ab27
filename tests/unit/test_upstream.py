"""The local router's upstream pool (`weir_operator.local.upstream`) against real little HTTP/1.1
servers on 127.0.0.1, written here so each test chooses how the server misbehaves; and the
router on top of it (retries, `on_failure`, 504, forwarded headers)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import pytest

from weir_operator.local.proxy import Route, TrafficProxy
from weir_server.upstream import (
    Response,
    Upstream,
    UpstreamTimeout,
    UpstreamUnavailable,
)


@dataclass
class Seen:
    """A request as the server read it."""

    method: bytes
    target: bytes
    headers: dict[bytes, bytes]
    body: bytes
    connection: int  # 1 for the server's first connection, ...
    index: int  # 1 for the first request on its connection, ...
    number: int  # 1 for the server's first request, ...


Handler = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]  # True: keep the connection


def answer(
    body: bytes = b"{}",
    status: int = 200,
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),),
    length: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers)]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def echo(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    """The request's body back (or its target when it has none), with where it was seen."""
    extra = (("X-Connection", str(seen.connection)), ("Content-Type", "application/octet-stream"))
    writer.write(answer(seen.body or seen.target, headers=extra))
    await writer.drain()
    return True


class TinyServer:
    """An HTTP/1.1 server on a free 127.0.0.1 port; `handler` answers each request."""

    def __init__(self, handler: Handler = echo, idle_timeout: float | None = None) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.connections = 0
        self.requests: list[Seen] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> TinyServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        self.connections += 1
        connection, index = self.connections, 0
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
                    return
                index += 1
                lines = head[:-4].split(b"\r\n")
                method, target, _ = lines[0].split(b" ")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    assert name.lower() not in headers, f"{name!r} sent twice"
                    headers[name.lower()] = value.strip()
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                seen = Seen(
                    method, target, headers, body, connection, index, len(self.requests) + 1
                )
                self.requests.append(seen)
                if not await self.handler(seen, writer):
                    return
        finally:
            writer.close()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (RST), as a process that dies with unread data does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    pool = Upstream(read_timeout=5.0)
    yield pool
    await pool.aclose()


async def post(pool: Upstream, port: int, body: bytes = b"{}", target: bytes = b"/x") -> Response:
    return await pool.request(port, "POST", target, [(b"content-type", b"application/json")], body)


# --------------------------------------------------------------------------------------------
# Keep-alive and framing


async def test_sequential_requests_share_one_keep_alive_connection(upstream: Upstream) -> None:
    async with TinyServer() as server:
        for i in range(20):
            response = await post(upstream, server.port, f"request {i}".encode())
            assert (response.status, response.body) == (200, f"request {i}".encode())
        assert server.connections == 1
        assert [s.index for s in server.requests] == list(range(1, 21))
        assert upstream.idle(server.port) == 1


async def test_the_request_carries_host_content_length_and_the_given_headers_only(
    upstream: Upstream,
) -> None:
    async with TinyServer() as server:
        headers = [(b"content-type", b"application/json"), (b"accept", b"*/*")]
        await upstream.request(server.port, "POST", b"/v2/a%20b?x=1&y=2", headers, b"12345")
        await upstream.request(server.port, "POST", b"/empty", headers, b"")
        seen, empty = server.requests
        assert (seen.method, seen.target) == (b"POST", b"/v2/a%20b?x=1&y=2")
        assert seen.headers == {
            b"host": f"127.0.0.1:{server.port}".encode(),
            b"content-type": b"application/json",
            b"accept": b"*/*",
            b"content-length": b"5",
        }
        assert empty.headers[b"content-length"] == b"0"  # a POST always says how long it is


async def test_get_and_head_send_no_body_and_a_head_answer_has_none(upstream: Upstream) -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        # A HEAD answer announces the length of the body a GET would get, and sends none.
        body = b"0123456789" * 10
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        writer.write(head if seen.method == b"HEAD" else head + body)
        return True

    async with TinyServer(handler) as server:
        head = await upstream.request(server.port, "HEAD", b"/v2/models/iris")
        get = await upstream.request(server.port, "GET", b"/v2/models/iris")
        head_again = await upstream.request(server.port, "HEAD", b"/v2/models/iris")
        assert (head.status, head.body, head.header(b"content-length")) == (200, b"", b"100")
        assert get.body == b"0123456789" * 10
        assert head_again.body == b""
        assert server.connections == 1  # the HEAD answer's framing left the connection usable
        assert all(b"content-length" not in s.headers for s in server.requests)
        assert [s.method for s in server.requests] == [b"HEAD", b"GET", b"HEAD"]


async def test_header_names_are_case_insensitive_and_repeated_ones_joined(
    upstream: Upstream,
) -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        headers = (
            ("CONTENT-TYPE", "application/json"),
            ("Inference-Header-Content-Length", "42"),
            ("X-Many", "a"),
            ("x-many", "b"),
        )
        writer.write(answer(b"{}", headers=headers))
        return True

    async with TinyServer(handler) as server:
        response = await post(upstream, server.port)
        assert response.header(b"content-type") == b"application/json"
        assert response.header(b"inference-header-content-length") == b"42"
        assert response.header(b"x-many") == b"a, b"
        assert response.header(b"content-encoding") is None


async def test_a_chunked_answer_is_read_whole_and_the_connection_kept(
    upstream: Upstream,
) -> None:
    payload = bytes(random.Random(1).randbytes(300_000))

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        pieces = [payload[:1], payload[1:70_000], payload[70_000:]]
        for piece in pieces:
            # Sizes in either case, one with an extension; the bytes trickle in odd splits.
            size = f"{len(piece):X}" if len(piece) % 2 else f"{len(piece):x};name=value"
            data = size.encode() + b"\r\n" + piece + b"\r\n"
            for start in range(0, len(data), 65_537):
                writer.write(data[start : start + 65_537])
                await writer.drain()
                await asyncio.sleep(0)
        writer.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        return True

    async with TinyServer(handler) as server:
        for _ in range(3):
            response = await post(upstream, server.port)
            assert response.status == 200
            assert response.body == payload
        assert server.connections == 1


async def test_an_empty_chunked_answer(upstream: Upstream) -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n")
        return True

    async with TinyServer(handler) as server:
        assert (await post(upstream, server.port)).body == b""
        assert (await post(upstream, server.port)).body == b""
        assert server.connections == 1


@pytest.mark.parametrize("header", ["Connection: close", "connection: Keep-Alive, CLOSE"])
async def test_connection_close_is_not_reused(upstream: Upstream, header: str) -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        name, value = header.split(": ")
        writer.write(answer(b"bye", headers=((name, value),)))
        await writer.drain()
        return False

    async with TinyServer(handler) as server:
        for _ in range(3):
            assert (await post(upstream, server.port)).body == b"bye"
            assert upstream.idle(server.port) == 0
        assert server.connections == 3
        assert all(s.index == 1 for s in server.requests)


async def test_an_answer_without_length_ends_with_the_connection(upstream: Upstream) -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b", really")
        return False

    async with TinyServer(handler) as server:
        response = await post(upstream, server.port)
        assert response.body == b"until the end, really"
        assert upstream.idle(server.port) == 0


async def test_an_interim_100_continue_is_skipped(upstream: Upstream) -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"final", status=201))
        return True

    async with TinyServer(handler) as server:
        response = await post(upstream, server.port)
        assert (response.status, response.body) == (201, b"final")


@pytest.mark.parametrize(
    "garbage",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
async def test_an_answer_that_is_not_http_is_unavailable(
    upstream: Upstream, garbage: bytes
) -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(garbage)
        await asyncio.sleep(1)
        return True

    async with TinyServer(handler) as server:
        with pytest.raises(UpstreamUnavailable, match="bad HTTP answer"):
            await post(upstream, server.port)
        assert upstream.idle(server.port) == 0


# --------------------------------------------------------------------------------------------
# Connections the server closes


async def test_a_connection_the_server_closed_while_idle_leaves_the_pool(
    upstream: Upstream,
) -> None:
    async with TinyServer(idle_timeout=0.05) as server:
        assert (await post(upstream, server.port, b"one")).body == b"one"
        assert upstream.idle(server.port) == 1
        await asyncio.sleep(0.2)  # the server closes it (like uvicorn after 5 s)
        assert upstream.idle(server.port) == 0
        assert (await post(upstream, server.port, b"two")).body == b"two"
        assert server.connections == 2


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_keep_alive_connection_closed_in_the_race_is_retried_once_on_a_fresh_one(
    upstream: Upstream, how: str
) -> None:
    """The server takes the second request of each connection and drops the connection
    without a byte of answer (a keep-alive timeout that fired as the request arrived)."""

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.index == 2:
            if how == "reset":
                reset(writer)
            return False
        return await echo(seen, writer)

    async with TinyServer(handler) as server:
        for i in range(5):
            assert (await post(upstream, server.port, b"%d" % i)).body == b"%d" % i
        # 1 on the first connection; then each request: dropped on the old, answered on a new.
        assert [s.body for s in server.requests] == [b"0", b"1", b"1", b"2", b"2", b"3", b"3", b"4", b"4"]  # fmt: skip
        assert server.connections == 5


async def test_a_server_that_closes_after_every_answer_fails_nothing(upstream: Upstream) -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await echo(seen, writer)
        return False  # closed without saying so (no Connection: close)

    async with TinyServer(handler) as server:
        for i in range(30):
            assert (await post(upstream, server.port, b"%d" % i)).body == b"%d" % i
            if i % 2:
                await asyncio.sleep(0.01)  # half see the end first, half race with it
        assert len(server.requests) >= 30


async def test_a_fresh_connection_dropped_before_any_answer_is_unavailable(
    upstream: Upstream,
) -> None:
    """Once on the stale one, once on a fresh one: then it is the server, not the pool."""

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.number == 1:
            return await echo(seen, writer)
        return False

    async with TinyServer(handler) as server:
        await post(upstream, server.port, b"ok")
        with pytest.raises(UpstreamUnavailable, match="before any byte"):
            await post(upstream, server.port, b"dropped")
        assert [s.body for s in server.requests] == [b"ok", b"dropped", b"dropped"]
        assert server.connections == 2
        with pytest.raises(UpstreamUnavailable, match="before any byte"):
            await post(upstream, server.port, b"fresh")  # nothing idle: no second chance
        assert server.connections == 3


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_connection_lost_mid_answer_is_unavailable_and_not_retried(
    upstream: Upstream, how: str
) -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.number == 1:
            return await echo(seen, writer)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await writer.drain()
        await asyncio.sleep(0.02)
        if how == "reset":
            reset(writer)
        return False

    async with TinyServer(handler) as server:
        await post(upstream, server.port, b"first")
        with pytest.raises(UpstreamUnavailable, match="mid-answer"):
            await post(upstream, server.port, b"second")
        assert len(server.requests) == 2  # the router, not the pool, decides where to retry


async def test_a_refused_connection_is_unavailable(upstream: Upstream) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="cannot connect"):
        await post(upstream, closed_port())
    assert time.monotonic() - started < 0.5


# --------------------------------------------------------------------------------------------
# Timeouts


async def test_no_answer_within_the_read_timeout_is_a_timeout() -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return True

    pool = Upstream(read_timeout=0.2)
    try:
        async with TinyServer(handler) as server:
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout, match=r"no answer within 0\.2 s"):
                await post(pool, server.port)
            assert 0.15 < time.monotonic() - started < 1.5
            assert pool.idle(server.port) == 0
    finally:
        await pool.aclose()


async def test_the_read_timeout_is_for_silence_not_for_the_whole_answer() -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
        for piece in (b"ab", b"cd", b"ef"):
            await asyncio.sleep(0.15)
            writer.write(piece)
        return True

    pool = Upstream(read_timeout=0.3)
    try:
        async with TinyServer(handler) as server:
            started = time.monotonic()
            assert (await post(pool, server.port)).body == b"abcdef"
            assert time.monotonic() - started > 0.3
    finally:
        await pool.aclose()


@contextlib.contextmanager
def unanswered_listener() -> Iterator[int]:
    """A port whose accept queue is full: a connection attempt gets no answer (Linux drops the
    SYN), so it takes until the connect timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.05)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_no_connection_within_the_connect_timeout_is_a_timeout() -> None:
    pool = Upstream(connect_timeout=0.2)
    try:
        with unanswered_listener() as port:
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout, match=r"no connection within 0\.2 s"):
                await post(pool, port)
            assert time.monotonic() - started < 1.5
    finally:
        await pool.aclose()


# --------------------------------------------------------------------------------------------
# Load


async def test_concurrent_requests_each_get_their_own_answer() -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(random.random() * 0.01)
        return await echo(seen, writer)

    pool = Upstream(max_idle=8)
    try:
        async with TinyServer(handler) as server:
            for _ in range(3):  # the later rounds run on the connections the first left idle

                async def one(i: int) -> None:
                    body = b"request %d " % i + b"x" * random.randrange(0, 3000)
                    response = await post(pool, server.port, body, target=b"/r/%d" % i)
                    assert response.body == body

                await asyncio.gather(*(one(i) for i in range(100)))
                assert pool.idle(server.port) == 8  # the rest were closed
            assert len(server.requests) == 300
            assert server.connections < 300
    finally:
        await pool.aclose()


async def test_large_bodies_both_ways(upstream: Upstream) -> None:
    request_body = random.Random(2).randbytes(2 * 1024 * 1024)

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(answer(seen.body[::-1]))
        await writer.drain()
        return True

    async with TinyServer(handler) as server:
        for _ in range(2):
            response = await post(upstream, server.port, request_body)
            assert server.requests[-1].body == request_body
            assert response.body == request_body[::-1]
        assert server.connections == 1


def echo_slowly(seconds: float) -> Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]:
    """An echo handler that first waits `seconds` when the body is b"slow"."""

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.body == b"slow":
            await asyncio.sleep(seconds)
        return await echo(seen, writer)

    return handler


async def test_aclose_closes_idle_and_busy_connections() -> None:
    pool = Upstream()
    async with TinyServer(echo_slowly(30)) as server:
        await post(pool, server.port, b"fast")
        slow = asyncio.create_task(post(pool, server.port, b"slow"))
        await asyncio.sleep(0.05)
        await pool.aclose()
        assert pool.idle(server.port) == 0
        with pytest.raises(UpstreamUnavailable):
            await slow
        with pytest.raises(UpstreamUnavailable, match="closed"):
            await post(pool, server.port)


async def test_a_cancelled_request_does_not_leave_its_answer_to_the_next(
    upstream: Upstream,
) -> None:
    async with TinyServer(echo_slowly(0.1)) as server:
        await post(upstream, server.port, b"warm")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await post(upstream, server.port, b"slow")
        assert (await post(upstream, server.port, b"next")).body == b"next"


# --------------------------------------------------------------------------------------------
# The router on the pool


@dataclass(eq=False)
class FakeServer:
    port: int


async def call(
    app: TrafficProxy,
    method: str,
    path: str,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    query: bytes = b"",
) -> tuple[int, dict[bytes, bytes], bytes]:
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": headers or [],
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def make_router(
    *ports: int, read_timeout: float = 5.0
) -> tuple[TrafficProxy, list[FakeServer], list[Any]]:
    servers = [FakeServer(p) for p in ports]
    failures: list[Any] = []
    route = Route(model="iris", stable="r1", stable_endpoints=lambda: list(servers))
    router = TrafficProxy(
        {"iris": route}, on_failure=failures.append, upstream=Upstream(read_timeout=read_timeout)
    )
    return router, servers, failures


def retries(router: TrafficProxy) -> float:
    value = router.metrics.registry.get_sample_value("weir_router_retries_total", {"model": "iris"})
    return value or 0.0


async def test_the_router_forwards_the_inference_headers_only_both_ways() -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        headers = (
            ("Content-Type", "application/octet-stream"),
            ("Inference-Header-Content-Length", "7"),
            ("Set-Cookie", "no=thanks"),
        )
        writer.write(answer(b"answer!", status=400, headers=headers))
        return True

    async with TinyServer(handler) as server:
        router, _, failures = make_router(server.port)
        try:
            request_headers = [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", b"5"),
                (b"accept", b"*/*"),
                (b"cookie", b"secret"),
                (b"host", b"router:8080"),
            ]
            status, headers, body = await call(
                router, "POST", "/v2/models/iris/infer", b"hello", request_headers, b"a=1"
            )
        finally:
            await router.aclose()
        assert (status, body) == (400, b"answer!")
        assert headers == {
            b"content-type": b"application/octet-stream",
            b"inference-header-content-length": b"7",
            b"content-length": b"7",
        }
        seen = server.requests[0]
        assert seen.target == b"/v2/models/iris/infer?a=1"
        assert seen.headers == {
            b"host": f"127.0.0.1:{server.port}".encode(),
            b"content-type": b"application/octet-stream",
            b"inference-header-content-length": b"5",
            b"accept": b"*/*",
            b"content-length": b"5",
        }
        assert failures == []


async def test_the_router_forwards_get_and_head() -> None:
    async with TinyServer() as server:
        router, _, _ = make_router(server.port)
        try:
            get = await call(router, "GET", "/v2/models/iris")
            head = await call(router, "HEAD", "/v2/models/iris/ready")
        finally:
            await router.aclose()
        assert get[0] == 200
        assert get[2] == b"/v2/models/iris"
        assert [(s.method, s.target) for s in server.requests] == [
            (b"GET", b"/v2/models/iris"),
            (b"HEAD", b"/v2/models/iris/ready"),
        ]
        assert head[0] == 200


async def test_a_stale_keep_alive_connection_is_no_failure_of_the_server() -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.index == 2:
            return False
        return await echo(seen, writer)

    async with TinyServer(handler) as server:
        router, _, failures = make_router(server.port)
        try:
            for i in range(4):
                status, _, body = await call(router, "POST", "/v2/models/iris/infer", b"%d" % i)
                assert (status, body) == (200, b"%d" % i)
        finally:
            await router.aclose()
        assert failures == []
        assert retries(router) == 0


async def test_a_refused_server_is_reported_and_the_request_goes_to_another() -> None:
    async with TinyServer() as server:
        router, servers, failures = make_router(closed_port(), server.port)
        try:
            for i in range(4):
                status, _, body = await call(router, "POST", "/v2/models/iris/infer", b"%d" % i)
                assert (status, body) == (200, b"%d" % i)
        finally:
            await router.aclose()
        assert failures == [servers[0], servers[0]]  # the round robin tried it first twice
        assert retries(router) == 2


async def test_a_server_that_dies_mid_answer_is_reported_and_the_request_retried() -> None:
    async def dying(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        reset(writer)
        return False

    async with TinyServer(dying) as bad, TinyServer() as good:
        router, servers, failures = make_router(bad.port, good.port)
        try:
            status, _, body = await call(router, "POST", "/v2/models/iris/infer", b"x")
        finally:
            await router.aclose()
        assert (status, body) == (200, b"x")
        assert failures == [servers[0]]


async def test_no_server_reachable_is_503() -> None:
    router, servers, failures = make_router(closed_port(), closed_port())
    try:
        status, _, body = await call(router, "POST", "/v2/models/iris/infer", b"x")
    finally:
        await router.aclose()
    assert status == 503
    assert b"2 servers could not be reached" in body
    assert failures == servers


async def test_a_server_that_does_not_answer_in_time_is_504_and_not_reported() -> None:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(30)
        return True

    async with TinyServer(handler) as server:
        router, _, failures = make_router(server.port, read_timeout=0.2)
        try:
            status, _, body = await call(router, "POST", "/v2/models/iris/infer", b"x")
        finally:
            await router.aclose()
        assert (status, body) == (504, b'{"error": "the model server timed out"}')
        assert failures == []
