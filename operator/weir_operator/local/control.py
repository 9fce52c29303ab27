"""The control API of `weir run` (docs/local-runtime.md): what the `weir` CLI talks to with
`--local URL`, as `kubectl` talks to an API server. Thin: every route reads or writes the
runtime's `Store` and answers JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from weir_operator.local.store import NotFound
from weir_operator.spec import SpecError, parse_model_deployment
from weir_operator.status import RequestAction

if TYPE_CHECKING:
    from weir_operator.local.runtime import LocalRuntime

BASE = "/api/v1/modeldeployments"


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


def create_control_app(runtime: LocalRuntime) -> Starlette:
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
        problems: list[str] = []
        for index, document in enumerate(documents):
            try:
                parse_model_deployment(document)
            except SpecError as error:
                name = (
                    (document.get("metadata") or {}).get("name")
                    if isinstance(document, dict)
                    else None
                )
                where = name or f"items[{index}]"
                problems += [f"{where}: {problem}" for problem in error.problems]
        if problems:
            return _error(422, "invalid ModelDeployment", problems)
        results = [
            {"name": d["metadata"]["name"], "result": store.apply(d, "api")} for d in documents
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
            return _error(400, "the body needs a string uri (and optionally sha256, version)")
        model = {k: body.get(k) for k in ("uri", "sha256", "version")}
        try:
            return _json(store.set_model(name, model))
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
        return _json({"id": store.request(name, body["action"], revision)})

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
    handlers = {NotFound: not_found, ValueError: bad_request}
    return Starlette(routes=routes, exception_handlers=handlers)
