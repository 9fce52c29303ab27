"""`weir serve MODEL.onnx`: argument parsing and process set-up for the inference server."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from weir_server.exit_codes import FAILED, OK, USAGE
from weir_server.settings import (
    DEFAULT_BACKLOG,
    DEFAULT_BODY_TIMEOUT_SECONDS,
    DEFAULT_KEEP_ALIVE_TIMEOUT_SECONDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_JSON_BYTES,
    DEFAULT_MAX_REQUEST_BYTES,
    REFERENCE_ENV,
    SETTINGS_ENV,
    ServerSettings,
)
from weir_server.tls import tls_problem

log = logging.getLogger("weir.server")


def add_serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve one ONNX model over the Open Inference Protocol (KServe V2 REST)",
        description="Serve one ONNX model over the Open Inference Protocol (KServe V2 REST).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("model", type=Path, metavar="MODEL.onnx", help="the ONNX model file")
    parser.add_argument("--name", help="served model name (default: the file name without .onnx)")
    parser.add_argument("--version", dest="model_version", help="model version label")
    parser.add_argument("--sha256", help="refuse to serve unless the file has this sha256")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in pods)"
    )
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=0,
        help="ONNX Runtime threads per worker; 0 = CPU limit / workers, less one (at least 1)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=0,
        help="rows per dynamic batch; 0 = no dynamic batching",
    )
    parser.add_argument(
        "--max-batch-delay-ms",
        type=float,
        default=1.0,
        help=(
            "longest a request waits for others to batch with (only under load: while "
            "requests come one at a time, each runs at once)"
        ),
    )
    parser.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="larger request bodies get 413",
    )
    parser.add_argument(
        "--max-json-bytes",
        type=int,
        default=DEFAULT_MAX_JSON_BYTES,
        help=(
            "larger JSON bodies, or JSON headers of binary ones, get 413 (bigger tensors go in "
            "the binary tensor extension, up to --max-request-bytes)"
        ),
    )
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="seconds to finish in-flight requests after SIGTERM",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=DEFAULT_BACKLOG,
        help="connections the kernel queues for accepting (at least 128; capped by "
        "net.core.somaxconn)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="open connections per worker; more wait in the backlog",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT_SECONDS,
        help="seconds a request body may take to arrive whole; then 408 and the connection "
        "is closed",
    )
    parser.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=DEFAULT_KEEP_ALIVE_TIMEOUT_SECONDS,
        help="seconds a connection may stay open without sending a whole request head (idle "
        "between requests, or headers trickling in); then it is closed",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="PEM certificate (chain) file: serve HTTPS (TLS 1.3) instead of HTTP; needs --tls-key",
    )
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key file of --tls-cert")
    parser.add_argument(
        "--mirror-config",
        metavar="FILE",
        help="shadow traffic: a JSON file naming a canary to copy a share of the answered "
        "infer requests to and how to compare its answers (re-read when it changes; absent or "
        "empty: no copies). Written by the operator and by weir run",
    )
    parser.add_argument(
        "--reference",
        metavar="FILE",
        help="model monitoring: a reference from `weir profile` for this model (default: "
        f"${REFERENCE_ENV}); every row answered is counted in its input feature bins, "
        "predicted class and confidence (weir_drift_* metrics, docs/monitoring.md)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.set_defaults(handler=run_serve)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    model_path: Path = args.model
    return ServerSettings(
        model_path=model_path.resolve(),
        model_name=args.name or model_path.name.removesuffix(".onnx"),
        model_version=args.model_version,
        sha256=args.sha256,
        host=args.host,
        port=args.port,
        workers=args.workers,
        intra_op_threads=args.intra_op_threads,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        max_request_bytes=args.max_request_bytes,
        max_json_bytes=args.max_json_bytes,
        access_log=args.access_log,
        graceful_timeout_seconds=args.graceful_timeout,
        backlog=args.backlog,
        max_connections=args.max_connections,
        body_timeout_seconds=args.body_timeout,
        keep_alive_timeout_seconds=args.keep_alive_timeout,
        revision=os.environ.get("WEIR_REVISION", ""),
        track=os.environ.get("WEIR_TRACK", ""),
        log_level=args.log_level,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        mirror_config=args.mirror_config,
        reference=args.reference or os.environ.get(REFERENCE_ENV) or None,
    )


def _error(message: str) -> None:
    print(f"weir serve: error: {message}", file=sys.stderr, flush=True)


def run_serve(args: argparse.Namespace) -> int:
    """Exit codes (weir_server.exit_codes): 0 served and stopped cleanly; 1 the model cannot
    be served or the port cannot be listened on; 3 a bad option value or model path."""
    settings = settings_from_args(args)
    problem = settings.problem() or _model_path_problem(settings.model_path)
    if problem is None and settings.tls_cert is not None and settings.tls_key is not None:
        problem = tls_problem(settings.tls_cert, settings.tls_key)
    if problem is None and settings.reference is not None:
        # Not weir_server.monitor: prometheus-client picks its value store at import, and it
        # must not be imported here before PROMETHEUS_MULTIPROC_DIR is set for the workers.
        from weir_server.reference import reference_file_problem

        problem = reference_file_problem(Path(settings.reference))
    if problem is not None:
        _error(problem)
        return USAGE
    if (problem := _check_port_free(settings)) is not None:
        _error(problem)
        return FAILED
    if settings.workers == 1:
        return _serve_one_process(settings)
    return _serve_workers(settings)


def _model_path_problem(path: Path) -> str | None:
    if path.is_dir():
        return f"{path} is a directory; give the model file (MODEL.onnx) to serve"
    if not path.exists():
        return f"model file {path} does not exist"
    if not path.is_file():
        return f"{path} is not a regular file; give the model file (MODEL.onnx) to serve"
    if not os.access(path, os.R_OK):
        return f"model file {path} cannot be read by this user (uid {os.getuid()})"
    return None


def _granian_options(settings: ServerSettings) -> dict[str, Any]:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings

    tls: dict[str, Any] = {}
    if settings.tls_cert is not None and settings.tls_key is not None:
        # rustls on Granian's Rust side; TLS 1.3 at least (Granian's default).
        tls = {"ssl_cert": Path(settings.tls_cert), "ssl_key": Path(settings.tls_key)}
    return {
        **tls,
        "address": settings.host,
        "port": settings.port,
        "interface": Interfaces.RSGI,
        "http": HTTPModes.http1,
        "websockets": False,
        "log_level": settings.log_level,
        "backlog": settings.backlog,
        # Granian's "backpressure" is a semaphore of open connections per worker, taken before
        # each accept and given back when the connection closes (granian src/workers.rs).
        "backpressure": settings.max_connections,
        # hyper's header read timeout also runs while a kept-alive connection waits for its
        # next request, so it closes idle connections too (measured: docs/benchmarks.md).
        "http1_settings": HTTP1Settings(
            header_read_timeout=max(1, round(settings.keep_alive_timeout_seconds * 1000))
        ),
    }


def _check_port_free(settings: ServerSettings) -> str | None:
    """Granian binds with SO_REUSEPORT, so a second server on a taken port would silently share
    it; a bind without it first turns that into the error users expect. (SO_REUSEADDR only lets
    the port's old connections in TIME_WAIT, e.g. of a server that was killed, not stop it.)"""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as error:  # socket.gaierror too: a host name that does not resolve
            return f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error}"
    return None


def _serve_one_process(settings: ServerSettings) -> int:
    """One process: Granian's RSGI server embedded in this process's event loop, so that signals,
    the graceful timeout and the exit code stay in weir's hands."""
    import uvloop
    from granian.server.embed import Server

    from weir_server.accesslog import configure_logging
    from weir_server.app import create_app

    configure_logging(settings.log_level)
    failures: list[str] = []
    stopping: list[str] = []  # why the server is stopping, once it is

    async def serve() -> None:
        app = create_app(settings)
        server = Server(app, **_granian_options(settings))
        configure_logging(settings.log_level)  # Granian's constructor installs its own handlers
        loop = asyncio.get_running_loop()
        serving = asyncio.current_task()
        assert serving is not None

        def drain(reason: str) -> None:
            """Stop accepting, finish in-flight requests, give up after the graceful timeout."""
            if stopping:
                return
            stopping.append(reason)
            log.info(
                "%s: stopped accepting; finishing the requests in flight (at most %g s)",
                reason,
                settings.graceful_timeout_seconds,
            )
            server.stop()  # type: ignore[no-untyped-call]  # granian leaves it unannotated
            loop.call_later(settings.graceful_timeout_seconds, serving.cancel)

        def on_fatal(message: str) -> None:
            failures.append(message)
            drain("the model cannot be served")

        app.state.on_fatal = on_fatal
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, drain, sig.name)
        try:
            await server.serve()
        finally:
            await app.lifecycle.stop()

    try:
        uvloop.run(serve())
    except asyncio.CancelledError:
        log.warning(
            "requests still in flight %.0f s after the stop signal were abandoned",
            settings.graceful_timeout_seconds,
        )
    except OSError as error:  # Granian's own bind, should the port be taken since the check
        _error(f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error}")
        return FAILED
    if failures:
        _error(failures[0])
        return FAILED
    return OK


def _serve_workers(settings: ServerSettings) -> int:
    """Several processes: check the model once here, so a bad file fails before any fork; then
    Granian's process manager runs the workers (and replaces one that dies)."""
    from weir_server.model import LoadedModel, ModelLoadError

    try:
        LoadedModel.load(settings.model_path, sha256=settings.sha256, intra_op_threads=1).warmup(1)
    except ModelLoadError as error:
        _error(str(error))
        return FAILED
    from weir_server.accesslog import configure_logging

    configure_logging(settings.log_level)
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="weir-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    workers_dir = tempfile.mkdtemp(prefix="weir-workers-")
    os.environ[SETTINGS_ENV] = dataclasses.replace(settings, workers_dir=workers_dir).to_json()
    from granian import Granian
    from granian.constants import Loops

    try:
        server = Granian(
            "weir_server.app:create_app_from_env",
            factory=True,
            workers=settings.workers,
            loop=Loops.uvloop,
            respawn_failed_workers=True,
            workers_kill_timeout=max(1, math.ceil(settings.graceful_timeout_seconds)),
            **_granian_options(settings),
        )
        configure_logging(settings.log_level)
        server.serve()
    finally:
        shutil.rmtree(workers_dir, ignore_errors=True)
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return OK
