"""`weir run -f PATH`: argument parsing and the process's life (logging, signals, exit code)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from weir_server.exit_codes import FAILED, OK, USAGE

if TYPE_CHECKING:
    from weir_operator.local.runtime import RunSettings


def add_run_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run ModelDeployments on this machine (no cluster)",
        description=(
            "Run the ModelDeployments in PATH (a file or folder of YAML) with local `weir serve` "
            "processes behind a local router, with the operator's rollout engine. Files are "
            "re-applied when they change. Stop with Ctrl-C."
        ),
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        type=Path,
        action="append",
        required=True,
        metavar="PATH",
        help="ModelDeployment file or folder",
    )
    parser.add_argument("--port", type=_port, default=8080, help="router port (default 8080)")
    parser.add_argument(
        "--control-port",
        type=_port,
        default=8081,
        help="control API port for the weir CLI (default 8081)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=(
            "where the ModelDeployments' state (a restart resumes from it), models and server "
            "logs go (default: ~/.local/state/weir/run/<files>-<hash>, one per set of -f paths)"
        ),
    )
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help=(
            "the Secrets that spec.model.auth names (s3:// keys, an http(s) header), laid out as "
            "Kubernetes mounts them: DIR/<secret>/<key>, one file per key (default: secrets/ in "
            "the first -f folder, or beside the first -f file; keep it out of version control)"
        ),
    )
    parser.add_argument(
        "--tick",
        type=_tick,
        default=0.5,
        help="seconds between reconciles; the analysis clock (default 0.5)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(handler=run_local)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535, got {value}")
    return value


def _tick(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.05 <= value <= 60:
        raise argparse.ArgumentTypeError(f"the tick is 0.05-60 seconds, got {value}")
    return value


def run_local(args: argparse.Namespace) -> int:
    from weir_operator.local.runtime import RunSettings
    from weir_operator.local.state import default_state_dir

    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"weir run: error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return USAGE
    if args.port == args.control_port:
        print("weir run: error: --port and --control-port must differ", file=sys.stderr)
        return USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    state_dir = args.state_dir or default_state_dir(args.paths)
    settings = RunSettings(
        paths=tuple(args.paths),
        state_dir=state_dir,
        secrets_dir=args.secrets_dir.resolve() if args.secrets_dir else None,
        port=args.port,
        control_port=args.control_port,
        tick=args.tick,
    )
    return asyncio.run(_main(settings))


async def _main(settings: RunSettings) -> int:
    from weir_operator.local.runtime import LocalRuntime, install_signal_handlers
    from weir_operator.local.state import StateError

    runtime = LocalRuntime(settings)
    install_signal_handlers(runtime)
    log = logging.getLogger("weir.run")

    async def announce() -> None:
        await runtime.started.wait()
        log.info(
            "weir run: router http://%s:%d (V2 inference), control API http://%s:%d; "
            "state and server logs in %s",
            settings.host,
            settings.port,
            settings.host,
            settings.control_port,
            settings.state_dir,
        )

    announcer = asyncio.create_task(announce())
    try:
        await runtime.run()
    except (OSError, StateError) as error:
        log.error("weir run: error: %s", error)
        return FAILED
    finally:
        announcer.cancel()
    log.info("weir run: stopped (state kept in %s)", settings.state_dir)
    return OK
