"""The inference server's HTTP front: Granian's RSGI interface, with an ASGI bridge.

Why RSGI: measured on one machine with the same V2 request (docs/benchmarks.md), a Python echo
answered about 10.5k req/s through uvicorn's ASGI and about 15.6k through Granian's RSGI, whose
HTTP parsing and socket writes run on a Rust thread instead of the event loop. Infer requests
take a direct RSGI path; the few other routes (health, metadata, metrics, the OpenAPI document)
stay FastAPI routes, reached through `asgi_over_rsgi`: they are not on the hot path, and FastAPI
keeps describing them in the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from weir_server.accesslog import ASGIApp, Message
from weir_server.codec import ProtocolError, error_body

T = TypeVar("T")


class Headers(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def items(self) -> list[tuple[str, str]]: ...


class Scope(Protocol):
    """What weir reads of an RSGI request scope (granian.rsgi.Scope)."""

    proto: str
    http_version: str
    server: str
    client: str
    scheme: str
    method: str
    path: str
    query_string: str

    @property
    def headers(self) -> Headers: ...


class HTTPProtocol(Protocol):
    """What weir uses of an RSGI HTTP protocol object (granian.rsgi.HTTPProtocol)."""

    def __call__(self) -> Awaitable[bytes]: ...
    def __aiter__(self) -> Any: ...
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...


class BodyDeadlines:
    """The time a request body may take to arrive whole; a body still missing then gets 408.

    Why: hyper (under Granian) times out request heads but not bodies, so a client that sends
    its headers and part of its body holds its connection, one of `--max-connections`, for
    ever (issue 17: 128 of them locked every other client out). hyper closes a connection
    whose body was not read to its end once the answer is written, so the 408 frees it.

    One watchdog task cancels the reads that ran out; a read registers in a dict (about 0.1 µs)
    instead of arming a timer per request (`asyncio.timeout`: 6 µs here, on every request)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._watchdog is None:
            self._watchdog = loop.create_task(self._watch())

    async def stop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None

    async def _watch(self) -> None:
        tick = min(1.0, self.seconds / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.perf_counter()
            for task, deadline in list(self._reading.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    async def within(self, work: Awaitable[T], started: float) -> T:
        """`work`'s result; raises TimeoutError when it is not done `seconds` after `started`."""
        task = asyncio.current_task()
        if task is None or self._watchdog is None:  # not on an asyncio task, or not started
            async with asyncio.timeout(self.seconds - (time.perf_counter() - started)):
                return await work
        self._reading[task] = started + self.seconds
        try:
            return await work
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise TimeoutError from None
        finally:
            del self._reading[task]


async def _chunks_within(proto: HTTPProtocol, limit: int) -> bytes | None:
    """A body without Content-Length (chunked), or None once it is over `limit` bytes: checked
    as it arrives, so an endless body never builds up in memory."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in proto:
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(
    proto: HTTPProtocol,
    declared: str | None,
    limit: int,
    deadlines: BodyDeadlines,
    started: float,
    over_limit: str = "",
) -> bytes | ProtocolError:
    """The request body, or the error to answer: over `limit` bytes (413, with `over_limit`
    added to the message), a body that did not arrive in time (408), or a client that went
    away. A body whose Content-Length is over the limit is refused before it is read."""
    try:
        if declared is not None and declared.isascii() and declared.isdigit():
            if int(declared) > limit:
                return ProtocolError(
                    f"request body of {declared} bytes is over this server's limit of "
                    f"{limit} bytes{over_limit}",
                    413,
                )
            return await deadlines.within(proto(), started)
        body = await deadlines.within(_chunks_within(proto, limit), started)
        if body is None:
            return ProtocolError(
                f"request body is over this server's limit of {limit} bytes{over_limit}", 413
            )
        return body
    except TimeoutError:
        return ProtocolError(
            f"the request body did not arrive whole within {deadlines.seconds:g} s "
            "(weir serve --body-timeout)",
            408,
        )
    except RuntimeError:  # granian's RSGIProtocolClosed / RSGIProtocolError
        return ProtocolError("the client went away", 400)


def _wire(text: str) -> bytes:
    """Bytes for ASGI of a header or query string Granian gave as text: latin-1, as HTTP
    reads it, or UTF-8 for text with characters latin-1 has not (Granian decodes non-ASCII
    query strings as UTF-8: `?x=中` made the latin-1 encoding raise, a 500 with no body)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def _address(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


async def asgi_over_rsgi(
    app: ASGIApp, scope: Scope, proto: HTTPProtocol, limit: int, deadlines: BodyDeadlines
) -> ProtocolError | None:
    """Serve one RSGI request with an ASGI app whose responses are whole bodies (no streaming).
    Returns the error it answered itself, before the app saw the request (for the access log),
    or None once the app has it."""
    headers = scope.headers
    body = await read_body(
        proto, headers.get("content-length"), limit, deadlines, time.perf_counter()
    )
    if isinstance(body, ProtocolError):
        with contextlib.suppress(RuntimeError):  # the client may be gone
            proto.response_bytes(
                body.status, [("content-type", "application/json")], error_body(body.message)
            )
        return body
    asgi_scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": scope.path,
        "raw_path": scope.path.encode("utf-8"),
        "query_string": _wire(scope.query_string),
        "root_path": "",
        "headers": [(_wire(k), _wire(v)) for k, v in headers.items()],
        "client": _address(scope.client),
        "server": _address(scope.server),
        "state": {},
    }
    received = False

    async def receive() -> Message:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 500
    response_headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    responded = False

    async def send(message: Message) -> None:
        nonlocal status, responded
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.extend(
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
            )
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                responded = True
                proto.response_bytes(status, response_headers, b"".join(chunks))

    try:
        await app(asgi_scope, receive, send)
    except Exception:
        # FastAPI has logged it and, most often, answered 500 already.
        if not responded:
            with contextlib.suppress(RuntimeError):
                proto.response_bytes(
                    500,
                    [("content-type", "application/json")],
                    error_body("internal server error"),
                )
    return None
