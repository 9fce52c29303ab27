"""The local traffic router: one Open Inference Protocol endpoint for every local model.

Why it exists: on a cluster a Service (the `replicas` router) or an HTTPRoute (`gateway-api`)
splits a model's traffic between its stable and canary revisions; `weir run` has neither, so
this router does it, with exact weights (`status.canary.weight`), in front of the `weir serve`
processes. It is a bare ASGI app (no framework on the hot path: it only forwards bytes) with
a pool of keep-alive HTTP/1.1 connections to the servers (`upstream.Upstream`).

A request goes to the canary for `weight` of every 100 requests of that model (a smooth
weighted round robin: exact shares, no randomness), and to the next ready server of that track
(round robin). When a server cannot be reached or drops the connection, the request is sent
once more to another ready server of the model (same track first): inference is a pure function
of its input, so a retry repeats nothing. The router exports per-track counts, errors and
latency (`weir_router_*`) on `/metrics`."""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from weir_server.metrics import LATENCY_BUCKETS
from weir_server.settings import DEFAULT_MAX_REQUEST_BYTES
from weir_server.upstream import Response, Upstream, UpstreamTimeout, UpstreamUnavailable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

FORWARDED_REQUEST_HEADERS = (b"content-type", b"inference-header-content-length", b"accept")
# As `weir serve`'s default: a body the servers would refuse is refused before it is buffered.
MAX_BODY_BYTES = DEFAULT_MAX_REQUEST_BYTES
FORWARDED_RESPONSE_HEADERS = (b"content-type", b"inference-header-content-length")


@dataclass
class Route:
    """Where one model's traffic goes now: the two tracks' endpoint sources and the weight."""

    model: str
    stable: str  # revision
    stable_endpoints: Callable[[], list[Any]]
    canary: str | None = None
    canary_endpoints: Callable[[], list[Any]] = list
    weight: int = 0
    _credit: int = 0
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def pick_track(self) -> str:
        """'canary' for `weight` of every 100 calls, spread evenly; 'stable' otherwise."""
        if self.canary is None or self.weight <= 0:
            return "stable"
        self._credit += self.weight
        if self._credit >= 100:
            self._credit -= 100
            return "canary"
        return "stable"

    def candidates(self, track: str) -> list[tuple[str, str, Any]]:
        """(track, revision, server) to try, in order: the chosen track's servers from the
        next in turn, then the other track's (for a retry only)."""
        first = self.canary_endpoints() if track == "canary" else self.stable_endpoints()
        other_track = "stable" if track == "canary" else "canary"
        other = self.stable_endpoints() if track == "canary" else self.canary_endpoints()
        if other_track == "canary" and (self.canary is None or self.weight <= 0):
            other = []
        turn = next(self._turn)
        rotated = first[turn % len(first) :] + first[: turn % len(first)] if first else []
        revision = self.canary if track == "canary" else self.stable
        other_revision = self.stable if track == "canary" else self.canary
        return [
            *((track, revision or "", s) for s in rotated),
            *((other_track, other_revision or "", s) for s in other),
        ]


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "track", "revision")
        self.requests = Counter(
            "weir_router_requests",
            "Requests the local router answered, by track and HTTP status code.",
            (*labels, "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "weir_router_request_duration_seconds",
            "Time from receiving a request to having its answer, router included, in seconds.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "weir_router_retries",
            "Requests sent again to another server after a connection failure.",
            ("model",),
            registry=self.registry,
        )


class TrafficProxy:
    """The ASGI app. `routes` maps served model names to their Route; the runtime replaces
    entries as rollouts move; `on_failure(server)` hears of servers that could not answer;
    `upstream` is the connection pool to the servers (1 s to connect, 60 s to answer)."""

    def __init__(
        self,
        routes: dict[str, Route],
        on_failure: Callable[[Any], None] = lambda server: None,
        upstream: Upstream | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.metrics = RouterMetrics()
        self._on_failure = on_failure
        self._upstream = upstream if upstream is not None else Upstream()

    async def aclose(self) -> None:
        await self._upstream.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/v2/models/"):
            await self._model(scope, receive, send, path)
        elif path == "/v2/health/live":
            await _json(send, 200, {"live": True})
        elif path == "/v2/health/ready":
            ready = bool(self.routes) and all(r.stable_endpoints() for r in self.routes.values())
            await _json(send, 200 if ready else 503, {"ready": ready})
        elif path in ("/v2", "/v2/"):
            await _json(
                send,
                200,
                {"name": "weir-router", "version": "v2", "extensions": ["binary_tensor_data"]},
            )
        elif path == "/metrics":
            body = generate_latest(self.metrics.registry)
            await _respond(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])
        else:
            await _json(send, 404, {"error": f"no route for {path}"})

    async def _model(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        started = time.perf_counter()
        model = path[len("/v2/models/") :].split("/", 1)[0]
        route = self.routes.get(model)
        if route is None:
            known = ", ".join(sorted(self.routes)) or "none"
            await _json(send, 404, {"error": f"unknown model {model!r} (serving: {known})"})
            return
        body = await _read_body(scope, receive, self.max_body_bytes)
        if body is None:
            message = f"request body is over the router's limit of {self.max_body_bytes} bytes"
            await self._answer(route, "stable", route.stable, started, send, 413,
                               orjson.dumps({"error": message}), [])  # fmt: skip
            return
        headers = [(k, v) for k, v in scope["headers"] if k in FORWARDED_REQUEST_HEADERS]
        target = _target(scope, path)
        track = route.pick_track() if path.endswith("/infer") else "stable"
        candidates = route.candidates(track)
        response: Response | None = None
        tried = 0
        for chosen_track, revision, server in candidates[:3]:
            tried += 1
            try:
                response = await self._upstream.request(
                    server.port, scope["method"], target, headers, body
                )
            except UpstreamUnavailable:
                self._on_failure(server)
                self.metrics.retries.labels(model).inc()
                continue
            except UpstreamTimeout:
                await self._answer(
                    route,
                    chosen_track,
                    revision,
                    started,
                    send,
                    504,
                    b'{"error": "the model server timed out"}',
                    [],
                )
                return
            track = chosen_track
            break
        if response is None:
            message = "no ready server" if tried == 0 else f"{tried} servers could not be reached"
            wanted = (route.canary if track == "canary" else route.stable) or ""
            error = orjson.dumps({"error": f"model {model!r}: {message}"})
            await self._answer(route, track, wanted, started, send, 503, error, [])
            return
        kept = [
            (name, value)
            for name in FORWARDED_RESPONSE_HEADERS
            if (value := response.header(name)) is not None
        ]
        await self._answer(
            route, track, revision, started, send, response.status, response.body, kept
        )

    async def _answer(
        self,
        route: Route,
        track: str,
        revision: str,
        started: float,
        send: Send,
        code: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        if not headers:
            headers = [(b"content-type", b"application/json")]
        await _respond(send, code, body, headers)
        labels = (route.model, track, revision)
        self.metrics.requests.labels(*labels, str(code)).inc()
        self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)


def _target(scope: Scope, path: str) -> bytes:
    """The request target to send on: the path as the client sent it (percent-encoded), and
    its query."""
    raw: bytes | None = scope.get("raw_path")
    target = raw if raw else quote(path).encode("ascii")
    query: bytes = scope.get("query_string") or b""
    return target + b"?" + query if query else target


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is over `limit` bytes (refused by its Content-Length
    before any of it is read, else as soon as the count passes it)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            return None
    chunks = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, code: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, code: int, payload: Any) -> None:
    await _respond(send, code, orjson.dumps(payload), [(b"content-type", b"application/json")])


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
