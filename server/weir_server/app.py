"""The HTTP application: Open Inference Protocol routes over one `LoadedModel`.

`create_app(settings)` is the only way in (no global app): the CLI calls it for one process,
and Granian's worker processes call `create_app_from_env`. The model loads and warms up in a
background thread, so liveness answers at once and readiness only once the model can serve."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from weir_server import __version__, rsgi, schemas
from weir_server.accesslog import AccessLog, AccessLogMiddleware
from weir_server.batching import DynamicBatcher
from weir_server.codec import (
    Array,
    ProtocolError,
    decode_request,
    encode_response,
    error_body,
    parse_header_length,
)
from weir_server.metrics import ServerMetrics
from weir_server.model import LoadedModel, ModelLoadError, ModelRunError
from weir_server.monitor import Monitor, start_monitor
from weir_server.reference import ReferenceError as ReferenceFileError
from weir_server.settings import SETTINGS_ENV, ServerSettings, cpu_limit, default_intra_op_threads
from weir_server.shadow import Mirror
from weir_server.workers import WorkerReadiness

log = logging.getLogger("weir.server")

JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "inference-header-content-length"
PLATFORM = "onnx_onnxv1"
EXTENSIONS = ["binary_tensor_data", "model_repository/health", "metrics"]
# Models whose warm-up run is faster than this run on the event loop: a thread hop costs more.
INLINE_RUN_SECONDS = 0.0005
# ...but only requests estimated (from the warm-up's time per element) to run within this: a
# huge batch of a tiny model would stall every other request on the loop.
INLINE_REQUEST_SECONDS = 0.002
# Bodies larger than this are decoded, and responses with more elements than this encoded, on
# a thread: measured (docs/benchmarks.md, "One big request"), decoding 64 KB of JSON takes
# about 0.4 ms, more than a thread hop (about 0.05 ms), and 4 MB takes 40 ms that the event
# loop, and so every other request, would wait. On a thread the loop takes the GIL back at
# every switch interval (5 ms), except during one C call (orjson, numpy), which
# --max-json-bytes bounds.
OFFLOAD_BODY_BYTES = 64 * 1024
OFFLOAD_OUTPUT_ELEMENTS = 64 * 1024


def _json(status: int, body: bytes) -> Response:
    return Response(body, status_code=status, media_type=JSON)


def _error(status: int, message: str) -> Response:
    return _json(status, error_body(message))


@dataclass
class ServingState:
    """What the routes read: the model once loaded, readiness, and how inference is run."""

    settings: ServerSettings
    metrics: ServerMetrics
    model: LoadedModel | None = None
    ready: bool = False
    failure: str | None = None
    batcher: DynamicBatcher | None = None
    executor: ThreadPoolExecutor | None = None
    # Decoding and encoding of large requests and responses, one at a time, off the loop.
    coder: ThreadPoolExecutor | None = None
    inline_elements: int = 0  # the most input elements a request may have to run inline
    json_limit: int = field(init=False)
    deadlines: rsgi.BodyDeadlines = field(default_factory=lambda: rsgi.BodyDeadlines(30.0))
    workers: WorkerReadiness | None = None  # several workers: ready only when all of them are
    mirror: Mirror | None = None  # --mirror-config: copies of answered requests to a canary
    monitor: Monitor | None = None  # --reference: drift counts of every row answered
    on_fatal: Callable[[str], None] = field(default=lambda message: os._exit(3))

    def __post_init__(self) -> None:
        self.json_limit = self.settings.json_limit  # read on every request

    def check_model(self, name: str, version: str | None) -> None:
        settings = self.settings
        if name != settings.model_name:
            raise ProtocolError(
                f"unknown model '{name}'; this server serves '{settings.model_name}'", 404
            )
        if version is not None and version != settings.model_version:
            served = (
                f"version '{settings.model_version}'" if settings.model_version else "no versions"
            )
            raise ProtocolError(
                f"model '{name}' has no version '{version}'; this server serves {served}", 404
            )

    def serving(self) -> bool:
        """Ready to take traffic: the model is loaded and warmed up here, and in every worker."""
        return self.ready and (self.workers is None or self.workers.all_ready())

    def check_ready(self) -> LoadedModel:
        if not self.ready or self.model is None:
            reason = self.failure or "the model is still loading"
            raise ProtocolError(f"model '{self.settings.model_name}' is not ready: {reason}", 503)
        return self.model

    async def run(
        self, inputs: dict[str, Array], outputs: list[str] | None, body_bytes: int
    ) -> dict[str, Array]:
        model = self.check_ready()
        if self.batcher is not None:
            return await self.batcher.run(inputs, outputs)
        self.metrics.batch(batch_rows(inputs))
        inline = self.inline_elements  # every element took at least a byte of the body
        if inline and (body_bytes <= inline or _elements(inputs) <= inline):
            return model.run(inputs, outputs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, model.run, inputs, outputs)

    async def infer(
        self, body: bytes, header_length: str | None, model_name: str, model_version: str | None
    ) -> tuple[int, bytes, str, int | None]:
        """One infer request, start to end: (status, body, content type, binary header length).
        Shared by the RSGI path and the FastAPI route, and never raises."""
        started = time.perf_counter()
        metrics = self.metrics
        metrics.started()
        # What the request is counted as unless it gets an answer: a request abandoned halfway
        # (cancelled at shutdown) was the server's failure, never a success.
        status = 500
        try:
            settings = self.settings
            self.check_model(model_name, model_version)
            model = self.check_ready()
            header = parse_header_length(header_length)
            size = len(body)
            if size > OFFLOAD_BODY_BYTES:
                decoded = await asyncio.get_running_loop().run_in_executor(
                    self.coder,
                    partial(
                        decode_request,
                        body,
                        header,
                        model.signature,
                        max_elements=settings.max_request_bytes,
                        max_json_bytes=self.json_limit,
                    ),
                )
            else:
                decoded = decode_request(
                    body,
                    header,
                    model.signature,
                    max_elements=settings.max_request_bytes,
                    max_json_bytes=self.json_limit,
                )
            outputs = await self.run(decoded.inputs, decoded.requested_outputs, size)
            name, version = settings.model_name, settings.model_version
            if _elements(outputs) > OFFLOAD_OUTPUT_ELEMENTS:
                encoded = await asyncio.get_running_loop().run_in_executor(
                    self.coder, encode_response, name, version, decoded, outputs
                )
            else:
                encoded = encode_response(name, version, decoded, outputs)
            status = 200
            if self.monitor is not None:
                self.monitor.record(decoded.inputs, outputs)
            if self.mirror is not None and self.mirror.target is not None:
                # Only while a shadow step mirrors: the path and the output's name for the copy.
                path = f"/v2/models/{model_name}" + (
                    f"/versions/{model_version}/infer" if model_version else "/infer"
                )
                first = model.signature.outputs[0].name if model.signature.outputs else None
                self.mirror.offer(path, body, header_length, outputs, first)
            if encoded.header_length is None:
                return 200, encoded.body, JSON, None
            return 200, encoded.body, BINARY, encoded.header_length
        except ProtocolError as error:
            status = error.status
            return status, error_body(error.message), JSON, None
        except ModelRunError as error:
            message = f"model '{self.settings.model_name}' failed on this request: {error}"
            return 500, error_body(message), JSON, None
        except Exception as error:
            # A bug of weir's, not the client's nor the model's: logged once, with its
            # traceback, on the server's log; the client gets a 500 that says no more.
            log.exception("unexpected error on an infer request of model '%s'", model_name)
            message = f"internal server error ({type(error).__name__}); see the server's log"
            return 500, error_body(message), JSON, None
        finally:
            metrics.finished(status, time.perf_counter() - started)


def _elements(tensors: dict[str, Array]) -> int:
    total = 0
    for array in tensors.values():
        total += array.size
    return total


def batch_rows(inputs: dict[str, Array]) -> int:
    """The rows of a request: the first dimension of its first input that has one (scalar
    inputs have none; a request of scalars alone is one row)."""
    for array in inputs.values():
        if array.ndim:
            return int(array.shape[0])
    return 1


def _prepare(settings: ServerSettings, model: LoadedModel | None) -> tuple[LoadedModel, float, int]:
    """Load (unless given) and warm up the model, on a thread at startup.

    Returns the model, the seconds spent loading and warming up, and the most input elements
    a request may have to run on the event loop (0: none; the model is not that fast)."""
    started = time.perf_counter()
    if model is None:
        threads = settings.intra_op_threads or default_intra_op_threads(
            cpu_limit(), settings.workers
        )
        model = LoadedModel.load(
            settings.model_path, sha256=settings.sha256, intra_op_threads=threads
        )
        load_seconds = time.perf_counter() - started
    else:
        load_seconds = model.load_seconds
    warm_started = time.perf_counter()
    per_run = model.warmup(rounds=5)
    fast = per_run < INLINE_RUN_SECONDS
    if fast and model.intra_op_threads != 1:
        # A model this small gains nothing from a thread pool, whose threads would only take
        # CPU from the event loop; it runs on one thread, on the event loop.
        model = LoadedModel.load(model.path, sha256=settings.sha256, intra_op_threads=1, tiny=True)
        model.warmup(rounds=2)
    inline_elements = 0
    if fast:
        warm_elements = max(1, _elements(model.warmup_inputs()))
        inline_elements = max(
            warm_elements, int(warm_elements * INLINE_REQUEST_SECONDS / max(per_run, 1e-7))
        )
    return model, load_seconds + (time.perf_counter() - warm_started), inline_elements


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(
            f"request body of {declared} bytes is over this server's limit of {limit} bytes", 413
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"request body is over this server's limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    settings: ServerSettings,
    model: LoadedModel | None = None,
    on_fatal: Callable[[str], None] | None = None,
) -> InferenceApp:
    """The server for one model. `model` may be pre-loaded; `on_fatal` runs if loading fails."""
    metrics = ServerMetrics(
        settings.model_name, settings.model_version, settings.revision, settings.track
    )
    state = ServingState(
        settings=settings,
        metrics=metrics,
        deadlines=rsgi.BodyDeadlines(settings.body_timeout_seconds),
    )
    if settings.workers_dir is not None:
        state.workers = WorkerReadiness(Path(settings.workers_dir), settings.workers)
    if settings.mirror_config is not None:
        labels = (
            settings.model_name,
            settings.model_version or "",
            settings.revision,
            settings.track,
        )
        state.mirror = Mirror(
            Path(settings.mirror_config), labels, metrics.registry, revision=settings.revision
        )
    if on_fatal is not None:
        state.on_fatal = on_fatal
    access_log = AccessLog() if settings.access_log else None

    async def load_in_background() -> None:
        try:
            loaded, seconds, inline_elements = await asyncio.to_thread(_prepare, settings, model)
            if settings.reference is not None:
                state.monitor = await asyncio.to_thread(start_monitor, settings, loaded, metrics)
                state.monitor.start(asyncio.get_running_loop())
        except (ModelLoadError, ReferenceFileError) as error:
            state.failure = str(error)
            log.error("cannot serve the model: %s", error)
            state.on_fatal(str(error))
            return
        except Exception as error:
            # Not one of the failures `LoadedModel.load` explains; still fatal (the server would
            # otherwise stay unready for ever, answering 503), and logged with its traceback.
            state.failure = f"loading the model failed: {type(error).__name__}: {error}"
            log.exception("cannot serve the model")
            state.on_fatal(state.failure)
            return
        state.model = loaded
        state.inline_elements = inline_elements
        if settings.batching:
            if loaded.batchable():
                state.batcher = DynamicBatcher(
                    loaded,
                    settings.max_batch_size,
                    settings.max_batch_delay_ms / 1000,
                    on_batch=metrics.batch,
                )
                state.batcher.start()
            else:
                log.warning(
                    "dynamic batching is off: the model's inputs and outputs do not all have a "
                    "dynamic first (batch) dimension"
                )
        metrics.load_seconds.set(seconds)
        metrics.ready.set(1)
        state.ready = True
        if state.workers is not None:
            state.workers.mark_ready()
        log.info(
            "model '%s' ready (%s, loaded and warmed up in %.3f s, batching %s, %s)",
            settings.model_name,
            settings.model_path,
            seconds,
            "on" if state.batcher else "off",
            f"runs on the event loop up to {inline_elements} input elements"
            if inline_elements
            else "runs on a thread",
        )

    lifecycle = Lifecycle(state, access_log, load_in_background)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Used when the app is hosted as ASGI; `weir serve` drives the lifecycle through RSGI.
        lifecycle.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            await lifecycle.stop()

    app = FastAPI(
        title="Weir inference server",
        version=__version__,
        description="Open Inference Protocol (KServe V2) REST for one ONNX model.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.serving = state

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /openapi.json"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return _error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal server error: {type(exc).__name__}")

    @app.get("/v2/health/live", response_model=schemas.Live, tags=["health"])
    async def live() -> Response:
        return _json(200, b'{"live":true}')

    @app.get(
        "/v2/health/ready",
        response_model=schemas.Ready,
        responses={503: {"model": schemas.Ready}},
        tags=["health"],
    )
    async def ready() -> Response:
        if state.serving():
            return _json(200, b'{"ready":true}')
        return _json(503, b'{"ready":false}')

    @app.get("/v2", response_model=schemas.ServerMetadata, tags=["metadata"])
    async def server_metadata() -> Response:
        return _json(
            200, orjson.dumps({"name": "weir", "version": __version__, "extensions": EXTENSIONS})
        )

    def model_metadata(model_name: str, model_version: str | None) -> Response:
        try:
            state.check_model(model_name, model_version)
            model = state.check_ready()
        except ProtocolError as error:
            return _error(error.status, error.message)
        return _json(
            200,
            orjson.dumps(
                {
                    "name": settings.model_name,
                    "versions": [settings.model_version] if settings.model_version else [],
                    "platform": PLATFORM,
                    "inputs": [spec.to_json() for spec in model.signature.inputs],
                    "outputs": [spec.to_json() for spec in model.signature.outputs],
                }
            ),
        )

    def model_ready(model_name: str, model_version: str | None) -> Response:
        try:
            state.check_model(model_name, model_version)
        except ProtocolError as error:
            return _error(error.status, error.message)
        serving = state.serving()
        body = b'{"name":"%s","ready":%s}' % (
            settings.model_name.encode(),
            b"true" if serving else b"false",
        )
        return _json(200 if serving else 503, body)

    async def infer(request: Request, model_name: str, model_version: str | None) -> Response:
        # Reached only without the fast path in front (e.g. the app mounted elsewhere).
        try:
            body = await _read_body(request, settings.max_request_bytes)
        except ProtocolError as error:
            state.metrics.answered(error.status, 0.0)
            return _error(error.status, error.message)
        header = request.headers.get(HEADER_LENGTH)
        status, payload, media_type, length = await state.infer(
            body, header, model_name, model_version
        )
        headers = {"Inference-Header-Content-Length": str(length)} if length is not None else None
        return Response(payload, status_code=status, media_type=media_type, headers=headers)

    infer_docs: dict[str, Any] = {
        "response_model": schemas.InferenceResponse,
        "responses": {
            400: {"model": schemas.Error},
            404: {"model": schemas.Error},
            413: {"model": schemas.Error},
            500: {"model": schemas.Error},
            503: {"model": schemas.Error},
        },
        "tags": ["inference"],
        "openapi_extra": {"x-weir-request-body": "InferenceRequest"},
    }
    model_docs: dict[str, Any] = {
        "responses": {404: {"model": schemas.Error}, 503: {"model": schemas.Error}},
        "tags": ["metadata"],
    }

    @app.get("/v2/models/{model_name}", response_model=schemas.ModelMetadata, **model_docs)
    async def metadata_latest(model_name: str) -> Response:
        return model_metadata(model_name, None)

    @app.get(
        "/v2/models/{model_name}/versions/{model_version}",
        response_model=schemas.ModelMetadata,
        **model_docs,
    )
    async def metadata_version(model_name: str, model_version: str) -> Response:
        return model_metadata(model_name, model_version)

    @app.get("/v2/models/{model_name}/ready", response_model=schemas.ModelReady, **model_docs)
    async def ready_latest(model_name: str) -> Response:
        return model_ready(model_name, None)

    @app.get(
        "/v2/models/{model_name}/versions/{model_version}/ready",
        response_model=schemas.ModelReady,
        **model_docs,
    )
    async def ready_version(model_name: str, model_version: str) -> Response:
        return model_ready(model_name, model_version)

    @app.post("/v2/models/{model_name}/infer", **infer_docs)
    async def infer_latest(request: Request, model_name: str) -> Response:
        return await infer(request, model_name, None)

    @app.post("/v2/models/{model_name}/versions/{model_version}/infer", **infer_docs)
    async def infer_version(request: Request, model_name: str, model_version: str) -> Response:
        return await infer(request, model_name, model_version)

    @app.get("/shadow/examples", tags=["shadow"], response_class=Response)
    async def shadow_examples() -> Response:
        # Opt-in (the mirror file's `examples`, from analysis.agreement.examples): requests
        # can hold personal data.
        examples = state.mirror.examples() if state.mirror is not None else []
        if not examples and (state.mirror is None or not (state.mirror.target or None)):
            return _error(404, "this server mirrors nothing, or keeps no examples")
        return _json(200, orjson.dumps({"examples": examples}))

    @app.get("/metrics", tags=["metrics"], response_class=Response)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return InferenceApp(app, state, access_log, lifecycle)


class Lifecycle:
    """Start and stop of one server process: the model loads in the background, the access log
    writer and the inference thread run while serving. Both idempotent, because RSGI servers
    call the hooks while an embedding caller may also stop the app itself."""

    def __init__(
        self,
        state: ServingState,
        access_log: AccessLog | None,
        load: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        self.state = state
        self.access_log = access_log
        self._load = load
        self._loader: asyncio.Task[None] | None = None
        self._stopped = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loader is not None:
            return
        # One model run at a time: ONNX Runtime already uses every core it was given, and
        # several concurrent runs would only fight over them (and ruin the tail latency).
        self.state.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self.state.coder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codec")
        self.state.deadlines.start(loop)
        if self.access_log is not None:
            self.access_log.start()
        self._loader = loop.create_task(self._load())

    async def stop(self) -> None:
        if self._loader is None or self._stopped:
            return
        self._stopped = True
        state = self.state
        state.ready = False
        if state.workers is not None:
            state.workers.mark_not_ready()
        state.metrics.ready.set(0)
        self._loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loader
        if state.batcher is not None:
            await state.batcher.stop()
        if state.executor is not None:
            state.executor.shutdown(wait=True)
        if state.coder is not None:
            state.coder.shutdown(wait=True)
        await state.deadlines.stop()
        if state.mirror is not None:
            await state.mirror.aclose()
        if state.monitor is not None:
            state.monitor.stop()
        if self.access_log is not None:
            self.access_log.stop()


class InferenceApp:
    """The app `weir serve` runs, as RSGI (Granian): infer requests take a direct path,
    everything else (health, metadata, metrics, OpenAPI, errors) goes to FastAPI through
    `asgi_over_rsgi`. Called as ASGI, it is the FastAPI app, infer route included.

    Measured (bench/server.py, docs/benchmarks.md): FastAPI's routing, dependency resolution
    and middleware cost more per request than decoding, running and encoding a small model."""

    def __init__(
        self,
        fastapi: FastAPI,
        state: ServingState,
        access_log: AccessLog | None,
        lifecycle: Lifecycle,
    ) -> None:
        self.fastapi = fastapi
        self.state = state
        self.access_log = access_log
        self.lifecycle = lifecycle
        self._other: Any = AccessLogMiddleware(fastapi, access_log) if access_log else fastapi
        self._limit = state.settings.max_request_bytes
        self._json_limit = state.settings.json_limit
        self._json_note = (
            f" for JSON (--max-json-bytes); send large tensors in the binary tensor extension "
            f"(Inference-Header-Content-Length, binary_data_size), up to {self._limit} bytes"
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._other(scope, receive, send)

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lifecycle.start(loop)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        # A worker process's loop has stopped here; an embedding caller (`weir serve` with
        # one process) awaits `lifecycle.stop()` itself, on its running loop.
        if not loop.is_running():
            loop.run_until_complete(self.lifecycle.stop())

    async def __rsgi__(self, scope: rsgi.Scope, proto: rsgi.HTTPProtocol) -> None:
        if scope.method == "POST":
            target = _infer_target(scope.path)
            if target is not None:
                await self._infer(scope, proto, *target)
                return
        started = time.perf_counter()
        try:
            refused = await rsgi.asgi_over_rsgi(
                self._other, scope, proto, self._limit, self.state.deadlines
            )
        except Exception:  # before FastAPI had the request: its handlers never saw it
            log.exception("unexpected error on %s %s", scope.method, scope.path)
            refused = ProtocolError("internal server error; see the server's log", 500)
            with contextlib.suppress(RuntimeError):
                proto.response_bytes(500, [("content-type", JSON)], error_body(refused.message))
        if refused is not None and self.access_log is not None:
            elapsed = time.perf_counter() - started
            self.access_log.record(
                (time.time(), scope.method, scope.path, refused.status, elapsed, scope.client)
            )

    async def _infer(
        self,
        scope: rsgi.Scope,
        proto: rsgi.HTTPProtocol,
        model_name: str,
        model_version: str | None,
    ) -> None:
        started = time.perf_counter()
        headers = scope.headers
        header_length = headers.get(HEADER_LENGTH)
        # A JSON body is refused over the JSON limit before it is read; a binary one's JSON
        # header is checked when decoded.
        binary = header_length is not None
        status = 500  # unless answered: see ServingState.infer
        try:
            body = await rsgi.read_body(
                proto,
                headers.get("content-length"),
                self._limit if binary else self._json_limit,
                self.state.deadlines,
                started,
                "" if binary else self._json_note,
            )
            if isinstance(body, ProtocolError):
                status = body.status
                self.state.metrics.answered(status, time.perf_counter() - started)
                payload, media_type, length = error_body(body.message), JSON, None
            else:
                status, payload, media_type, length = await self.state.infer(
                    body, header_length, model_name, model_version
                )
            try:
                if length is None:
                    proto.response_bytes(status, [("content-type", media_type)], payload)
                else:
                    proto.response_bytes(
                        status,
                        [("content-type", media_type), (HEADER_LENGTH, str(length))],
                        payload,
                    )
            except RuntimeError:  # granian's RSGIProtocolClosed: the client went away
                pass
        finally:
            if self.access_log is not None:
                elapsed = time.perf_counter() - started
                self.access_log.record(
                    (time.time(), "POST", scope.path, status, elapsed, scope.client)
                )


def _infer_target(path: str) -> tuple[str, str | None] | None:
    """(model, version) of an infer path, or None for any other path."""
    parts = path.split("/")
    if parts[-1] != "infer" or parts[1:3] != ["v2", "models"]:
        return None
    if len(parts) == 5 and parts[3]:
        return parts[3], None
    if len(parts) == 7 and parts[4] == "versions" and parts[3] and parts[5]:
        return parts[3], parts[5]
    return None


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the infer request body described (the route reads raw bytes)."""
    if app.openapi_schema:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    request_schema = schemas.InferenceRequest.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(request_schema.pop("$defs", {}))
    components["InferenceRequest"] = request_schema
    for path_item in document["paths"].values():
        operation = path_item.get("post")
        if operation and operation.pop("x-weir-request-body", None):
            operation["requestBody"] = {
                "required": True,
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
            }
    app.openapi_schema = document
    return document


def create_app_from_env() -> InferenceApp:
    """Factory for Granian worker processes: settings come from WEIR_SERVER_SETTINGS."""
    from weir_server.accesslog import configure_logging

    settings = ServerSettings.from_json(os.environ[SETTINGS_ENV])
    configure_logging(settings.log_level)
    return create_app(settings)
