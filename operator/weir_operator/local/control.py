"""The control API of `weir run` (docs/local-runtime.md): what the `weir` CLI talks to with
`--local URL`, as `kubectl` talks to an API server. Thin: every route reads or writes the
runtime's `Store` and answers JSON.

Every request passes `ControlGuard` first (docs/decisions.md, "The control API"): a Host header
that names this loopback address (so a web page cannot reach it through DNS rebinding), no
foreign Origin, and for writes the token of `control_access`, a JSON body and at most
MAX_BODY_BYTES. Reads stay open on loopback."""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, get_args

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from weir_operator.control_access import SCHEME, authorized
from weir_operator.core.spec import ModelDeployment, SpecError, parse_model_deployment
from weir_operator.core.status import RequestAction
from weir_operator.local.store import NotFound

if TYPE_CHECKING:
    from weir_operator.local.runtime import LocalRuntime

log = logging.getLogger("weir.run")
BASE = "/api/v1/modeldeployments"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's arbitrary user)
        return f"uid {os.getuid()}"


MAX_BODY_BYTES = 1024 * 1024  # a ModelDeployment with a large sample input fits; etcd's is 1.5 MiB
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


def _error(status: int, message: str, problems: list[str] | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if problems is not None:
        body["problems"] = problems
    return _json(body, status)


async def _body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError as error:
        raise ValueError(f"the body is not JSON: {error}") from None


def _name_of(document: Any) -> str | None:
    metadata = document.get("metadata") if isinstance(document, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) and name else None


def _validate(documents: list[Any]) -> tuple[list[ModelDeployment], list[str]]:
    """Parse every document (on a thread: a large one must not hold up the router's loop)."""
    parsed: list[ModelDeployment] = []
    problems: list[str] = []
    for index, document in enumerate(documents):
        try:
            parsed.append(parse_model_deployment(document))
        except SpecError as error:
            where = _name_of(document) or f"items[{index}]"
            problems += [f"{where}: {problem}" for problem in error.problems]
    return parsed, problems


class ControlGuard:
    """The checks every control request passes before it reaches a route (pure ASGI, so a
    refused request costs no routing and no body beyond the limit)."""

    def __init__(self, app: ASGIApp, token: str, host: str, port: int) -> None:
        self.app = app
        self.token = token
        hosts = {host, "127.0.0.1", "localhost", "[::1]"}
        self.hosts = frozenset(f"{h}:{port}" for h in hosts)
        self.origins = frozenset(f"http://{h}" for h in self.hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope["method"], headers)
        if refusal is not None:
            status, message, extra = refusal
            await _send_error(send, status, message, extra)
            return
        if scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        body = await _bounded_body(receive)
        if body is None:
            await _send_error(
                send, 413, f"the body is over the control API's limit of {MAX_BODY_BYTES} bytes"
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _refusal(
        self, method: str, headers: dict[str, str]
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        host = headers.get("host", "")
        if host not in self.hosts:
            return 403, f"Host {host!r} is not this control API's loopback address", []
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return 403, f"requests from Origin {origin!r} are not accepted", []
        if method not in WRITE_METHODS:
            return None
        if not authorized(headers.get("authorization"), self.token):
            what = "a wrong" if headers.get("authorization") else "no"
            return (
                401,
                f"{what} control token: writes need 'Authorization: {SCHEME} <token>' with the "
                "token weir run wrote to its state folder (the weir CLI of the same user "
                "finds it by itself)",
                [(b"www-authenticate", SCHEME.encode())],
            )
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return 413, f"the body is over the control API's limit of {MAX_BODY_BYTES} bytes", []
        has_body = (declared not in (None, "0")) or "transfer-encoding" in headers
        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if has_body and media_type != "application/json":
            return 415, "writes take a JSON body (Content-Type: application/json)", []
        return None


async def _bounded_body(receive: Receive) -> bytes | None:
    """The whole request body, or None once it passes MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send_error(
    send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = orjson.dumps({"error": message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_control_app(runtime: LocalRuntime, token: str) -> ControlGuard:
    store = runtime.store

    async def healthz(request: Request) -> Response:
        return _json({"ok": True, "models": sorted(runtime.routes)})

    async def list_objects(request: Request) -> Response:
        return _json({"items": store.list()})

    async def get_object(request: Request) -> Response:
        return _json(store.get(request.path_params["name"]))

    async def apply(request: Request) -> Response:
        body = await _body(request)
        documents = body.get("items") if isinstance(body, dict) and "items" in body else [body]
        if not isinstance(documents, list):
            return _error(400, "items must be a list")
        parsed, problems = await asyncio.to_thread(_validate, documents)
        if problems:
            return _error(422, "invalid ModelDeployment", problems)
        results = [
            {"name": md.name, "result": store.apply(document, "api", md)}
            for document, md in zip(documents, parsed, strict=True)
        ]
        return _json({"items": results})

    async def delete(request: Request) -> Response:
        name = request.path_params["name"]
        runtime.delete(name)
        return _json({"name": name, "result": "deleted"})

    async def set_model(request: Request) -> Response:
        name = request.path_params["name"]
        store.entry(name)
        body = await _body(request)
        if not isinstance(body, dict) or not isinstance(body.get("uri"), str):
            return _error(
                400, "the body needs a string uri (and optionally sha256, version, reference)"
            )
        model = {k: body.get(k) for k in ("uri", "sha256", "version")}
        reference = body.get("reference")
        if reference is not None and (
            not isinstance(reference, dict) or not isinstance(reference.get("uri"), str)
        ):
            return _error(400, "reference needs a string uri (and optionally sha256)")
        if reference is not None:
            reference = {k: reference[k] for k in ("uri", "sha256") if reference.get(k)}
        try:
            return _json(store.set_model(name, model, reference))
        except SpecError as error:
            return _error(422, "invalid model", error.problems)

    async def post_request(request: Request) -> Response:
        name = request.path_params["name"]
        store.entry(name)
        body = await _body(request)
        actions = get_args(RequestAction)
        if not isinstance(body, dict) or body.get("action") not in actions:
            return _error(400, f"action must be one of {', '.join(actions)}")
        revision = body.get("revision")
        if revision is not None and not isinstance(revision, str):
            return _error(400, "revision must be a string")
        # Who asked, as the client says; by default the user weir run runs as (the token
        # that let this request in is that user's).
        by = body.get("by") or _os_user()
        if not isinstance(by, str) or len(by) > 256:
            return _error(400, "by must be a string of at most 256 characters")
        return _json({"id": store.request(name, body["action"], revision, by)})

    async def events(request: Request) -> Response:
        return _json({"items": list(store.entry(request.path_params["name"]).events)})

    async def servers(request: Request) -> Response:
        name = request.path_params["name"]
        store.entry(name)
        return _json({"items": runtime.servers_of(name)})

    async def not_found(request: Request, error: Exception) -> Response:
        return _error(404, f"modeldeployment {error.args[0]!r} not found in weir run")

    async def bad_request(request: Request, error: Exception) -> Response:
        return _error(400, str(error))

    async def internal_error(request: Request, error: Exception) -> Response:
        log.exception("control API: %s %s failed", request.method, request.url.path)
        return _error(500, f"internal error: {type(error).__name__} (see weir run's log)")

    routes = [
        Route("/healthz", healthz),
        Route(BASE, list_objects, methods=["GET"]),
        Route(BASE, apply, methods=["POST"]),
        Route(BASE + "/{name}", get_object, methods=["GET"]),
        Route(BASE + "/{name}", delete, methods=["DELETE"]),
        Route(BASE + "/{name}/model", set_model, methods=["PATCH"]),
        Route(BASE + "/{name}/requests", post_request, methods=["POST"]),
        Route(BASE + "/{name}/events", events, methods=["GET"]),
        Route(BASE + "/{name}/servers", servers, methods=["GET"]),
    ]
    handlers = {NotFound: not_found, ValueError: bad_request, Exception: internal_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    settings = runtime.settings
    return ControlGuard(app, token, settings.host, settings.control_port)
