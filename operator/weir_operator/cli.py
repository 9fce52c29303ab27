"""The `weir` (and `kubectl-weir`) command line: one entry point, one subcommand per job.

Subcommands register themselves from their own modules; nothing is imported or parsed until
`main()` runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from weir_server import __version__
from weir_server.exit_codes import INTERRUPTED, READER_GONE, USAGE, exit_3_on_usage_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weir",
        description="Weir: serve ONNX models and roll out new versions safely.",
    )
    parser.add_argument("--version", action="version", version=f"weir {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    from weir_operator.client.cli import add_client_parsers
    from weir_operator.cluster.cli import add_operator_parser
    from weir_operator.local.run_cli import add_run_parser
    from weir_server.cli import add_serve_parser
    from weir_server.fetch import add_fetch_parser
    from weir_server.profile import add_profile_parser

    add_serve_parser(subparsers)
    add_operator_parser(subparsers)
    add_fetch_parser(subparsers)
    add_profile_parser(subparsers)
    add_client_parsers(subparsers)
    add_run_parser(subparsers)
    exit_3_on_usage_errors(parser)
    for subparser in subparsers.choices.values():
        exit_3_on_usage_errors(subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand's parser when it has its own (exit 3 for the client)
        usage: argparse.ArgumentParser = getattr(args, "parser", parser)
        usage.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return USAGE
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`weir get | head -0`): stop quietly, as a command killed by
        # SIGPIPE would; the interpreter's own flush at exit must not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return READER_GONE
    return code


if __name__ == "__main__":
    sys.exit(main())
