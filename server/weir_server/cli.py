"""`weir serve MODEL.onnx`: argument parsing and process set-up for the inference server."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

from weir_server.settings import DEFAULT_MAX_REQUEST_BYTES, SETTINGS_ENV, ServerSettings


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
        help="ONNX Runtime threads per worker; 0 = CPU limit / workers",
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
        help="longest a request waits for others to batch with",
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
    if settings.workers == 1:
        return _serve_one_process(settings)
    return _serve_workers(settings)


def _uvicorn_options(settings: ServerSettings) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "timeout_graceful_shutdown": settings.graceful_timeout_seconds,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
    }


def _serve_one_process(settings: ServerSettings) -> int:
    import signal
    from collections.abc import Iterator
    from contextlib import contextmanager

    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn re-raises SIGTERM once it has drained, so the process dies of the signal
        (exit 143). A server that finished its in-flight requests on purpose exits 0."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
            yield

    from weir_server.accesslog import configure_logging
    from weir_server.app import create_app

    configure_logging(settings.log_level)
    failures: list[str] = []
    server: DrainingServer | None = None

    def on_fatal(message: str) -> None:
        failures.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=on_fatal)
    server = DrainingServer(uvicorn.Config(app, **_uvicorn_options(settings)))  # type: ignore[arg-type]
    server.run()
    if failures:
        print(f"weir serve: error: {failures[0]}", file=sys.stderr)
        return 2
    return 0 if server.started else 1


def _serve_workers(settings: ServerSettings) -> int:
    """Several processes: check the model once here, so a bad file fails before any fork."""
    from weir_server.model import LoadedModel, ModelLoadError

    try:
        LoadedModel.load(settings.model_path, sha256=settings.sha256, intra_op_threads=1).warmup(1)
    except ModelLoadError as error:
        print(f"weir serve: error: {error}", file=sys.stderr)
        return 2
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="weir-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    workers_dir = tempfile.mkdtemp(prefix="weir-workers-")
    os.environ[SETTINGS_ENV] = dataclasses.replace(settings, workers_dir=workers_dir).to_json()
    import uvicorn

    from weir_server.accesslog import configure_logging

    configure_logging(settings.log_level)
    try:
        uvicorn.run(
            "weir_server.app:create_app_from_env",
            factory=True,
            workers=settings.workers,
            **_uvicorn_options(settings),  # type: ignore[arg-type]
        )
    finally:
        shutil.rmtree(workers_dir, ignore_errors=True)
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
