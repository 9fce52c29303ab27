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

from weir_server.settings import DEFAULT_MAX_REQUEST_BYTES, SETTINGS_ENV, ServerSettings

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
    parser.add_argument("--workers", type=_positive_int, default=1, help="server processes")
    parser.add_argument(
        "--intra-op-threads",
        type=_non_negative_int,
        default=0,
        help="ONNX Runtime threads per worker; 0 = CPU limit / workers, less one (at least 1)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=_non_negative_int,
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
        type=_positive_int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help="larger request bodies get 413",
    )
    parser.add_argument("--no-access-log", dest="access_log", action="store_false")
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="seconds to finish in-flight requests after SIGTERM",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.set_defaults(handler=run_serve)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


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
        access_log=args.access_log,
        graceful_timeout_seconds=args.graceful_timeout,
        revision=os.environ.get("WEIR_REVISION", ""),
        track=os.environ.get("WEIR_TRACK", ""),
        log_level=args.log_level,
    )


def run_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not settings.model_path.is_file():
        print(
            f"weir serve: error: model file {settings.model_path} does not exist", file=sys.stderr
        )
        return 2
    if (problem := _check_port_free(settings)) is not None:
        print(f"weir serve: error: {problem}", file=sys.stderr)
        return 1
    if settings.workers == 1:
        return _serve_one_process(settings)
    return _serve_workers(settings)


def _granian_options(settings: ServerSettings) -> dict[str, Any]:
    from granian.constants import HTTPModes, Interfaces

    return {
        "address": settings.host,
        "port": settings.port,
        "interface": Interfaces.RSGI,
        "http": HTTPModes.http1,
        "websockets": False,
        "log_level": settings.log_level,
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
        except OSError as error:
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
    if failures:
        print(f"weir serve: error: {failures[0]}", file=sys.stderr)
        return 2
    return 0


def _serve_workers(settings: ServerSettings) -> int:
    """Several processes: check the model once here, so a bad file fails before any fork; then
    Granian's process manager runs the workers (and replaces one that dies)."""
    from weir_server.model import LoadedModel, ModelLoadError

    try:
        LoadedModel.load(settings.model_path, sha256=settings.sha256, intra_op_threads=1).warmup(1)
    except ModelLoadError as error:
        print(f"weir serve: error: {error}", file=sys.stderr)
        return 2
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
    return 0
