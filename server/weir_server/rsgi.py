"""The inference server's HTTP front: Granian's RSGI interface, with an ASGI bridge.

Why RSGI: measured on one machine with the same V2 request (docs/benchmarks.md), a Python echo
answered about 10.5k req/s through uvicorn's ASGI and about 15.6k through Granian's RSGI, whose
HTTP parsing and socket writes run on a Rust thread instead of the event loop. Infer requests
take a direct RSGI path; the few other routes (health, metadata, metrics, the OpenAPI document)
stay FastAPI routes, reached through `asgi_over_rsgi`: they are not on the hot path, and FastAPI
keeps describing them in the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from weir_server.accesslog import ASGIApp, Message
from weir_server.codec import ProtocolError, error_body


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


async def read_body(proto: HTTPProtocol, declared: str | None, limit: int) -> bytes | ProtocolError:
    """The request body, or the error to answer: over `limit` bytes (413), or a client that went
    away. A body whose Content-Length is over the limit is refused before it is read."""
    try:
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                return ProtocolError(
                    f"request body of {declared} bytes is over this server's limit of "
                    f"{limit} bytes",
                    413,
                )
            return await proto()
        chunks: list[bytes] = []
        size = 0
        async for chunk in proto:
            size += len(chunk)
            if size > limit:
                return ProtocolError(
                    f"request body is over this server's limit of {limit} bytes", 413
                )
            chunks.append(chunk)
        return b"".join(chunks)
    except RuntimeError:  # granian's RSGIProtocolClosed / RSGIProtocolError
        return ProtocolError("the client went away", 400)


def _address(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


async def asgi_over_rsgi(app: ASGIApp, scope: Scope, proto: HTTPProtocol, limit: int) -> None:
    """Serve one RSGI request with an ASGI app whose responses are whole bodies (no streaming)."""
    headers = scope.headers
    body = await read_body(proto, headers.get("content-length"), limit)
    if isinstance(body, ProtocolError):
        proto.response_bytes(
            body.status, [("content-type", "application/json")], error_body(body.message)
        )
        return
    asgi_scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": scope.path,
        "raw_path": scope.path.encode("utf-8"),
        "query_string": scope.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
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
            proto.response_bytes(
                500,
                [("content-type", "application/json")],
                error_body("internal server error"),
            )
