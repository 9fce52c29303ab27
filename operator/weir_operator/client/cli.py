"""Argument parsing for the client commands, and the one place that turns a `ClientError` into
a line on stderr and an exit code. Registering parsers imports nothing else; a command's
modules (the `kubernetes` client, httpx, rich) are imported when it runs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from weir_operator.client.backend import Backend

LOCAL_ENV = "WEIR_LOCAL"
ACTIONS = {
    "promote": "end the current step (--full: skip the remaining steps) and move on",
    "abort": "roll the canary back now; the spec is held until retry or a new model",
    "retry": "roll out again the revision the spec asks for, after a rollback",
    "undo": "write a previous revision's model back into the spec",
}


def _target_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where the ModelDeployments are")
    where.add_argument(
        "--local",
        metavar="URL",
        help=f"the control API of `weir run` (e.g. http://127.0.0.1:8081); env {LOCAL_ENV}",
    )
    where.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config)")
    where.add_argument("--context", help="kubeconfig context (default: the current one)")
    where.add_argument("-n", "--namespace", help="namespace (default: the context's, else default)")
    return common


def _wait_options(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--timeout",
        default=default,
        metavar="D",
        help=f"how long to wait: 90s, 5m, 1h (default {default})",
    )


def add_client_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register apply, get, status, set-model, promote, abort, retry, undo and history."""
    common = _target_options()

    def add(name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(
            name,
            help=help,
            description=description or help[0].upper() + help[1:] + ".",
            parents=[common],
        )
        parser.set_defaults(handler=run, client_command=name, parser=parser)
        return parser

    parser = add(
        "apply",
        "create or update ModelDeployments from YAML files",
        "Validate every document first (nothing is applied if any is invalid), then create "
        "each ModelDeployment or update it (spec, labels, annotations).",
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="paths",
        action="append",
        required=True,
        metavar="PATH",
        help="a YAML file (multi-document) or a folder of them; repeatable",
    )

    parser = add("get", "list ModelDeployments, or show one")
    parser.add_argument("name", nargs="?", metavar="NAME")
    parser.add_argument(
        "-o", "--output", choices=["table", "wide", "json", "yaml"], default="table"
    )

    parser = add(
        "status",
        "show a ModelDeployment's rollout; --wait until it is over",
        "Show phase, revisions, step, weight, the last analysis, conditions and history. "
        "--wait exits 0 when the spec's revision is Healthy, 1 when it was rolled back or "
        "failed, 2 at the timeout, 3 if there is no such ModelDeployment.",
    )
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("-w", "--watch", action="store_true", help="show every change")
    parser.add_argument("--wait", action="store_true", help="wait until the rollout is over")
    parser.add_argument(
        "--timeout", metavar="D", help="give up after D: 90s, 5m, 1h (default with --wait: 15m)"
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=["text", "json"],
        default="text",
        help="json: one JSON line (per change with --watch)",
    )

    parser = add("set-model", "replace the model; a rollout starts")
    parser.add_argument("name", metavar="NAME")
    parser.add_argument(
        "--uri", required=True, help="https://, http://, s3://, pvc:// or file:/// URI"
    )
    parser.add_argument("--sha256", help="hex sha256 of the file (checked before it is served)")
    parser.add_argument("--version", dest="model_version", help="version label, e.g. 7")
    parser.add_argument(
        "--reference-uri",
        metavar="URI",
        help="also set spec.monitoring.reference (weir profile of this model), in the same "
        "revision",
    )
    parser.add_argument(
        "--reference-sha256", metavar="HEX", help="hex sha256 of --reference-uri's file"
    )

    for action, text in ACTIONS.items():
        parser = add(action, text)
        parser.add_argument("name", metavar="NAME")
        if action == "promote":
            parser.add_argument(
                "--full", action="store_true", help="skip every remaining step (never the checks)"
            )
        if action == "undo":
            parser.add_argument(
                "--to-revision",
                metavar="N",
                help="a `weir history` index (1 = the most recent) or a revision hash prefix "
                "(default: the previous stable revision)",
            )
        parser.add_argument(
            "--no-wait", dest="wait", action="store_false", help="do not wait for Weir's answer"
        )
        _wait_options(parser, "30s")

    parser = add("history", "list a ModelDeployment's finished rollouts, newest first")
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")


def _duration(text: str | None) -> float | None:
    from weir_operator.client.backend import UsageError
    from weir_operator.client.state import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as error:
        raise UsageError(f"--timeout: {error}") from None


def connect(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> Backend:
    """The backend the options name: `--local` (or WEIR_LOCAL unless --kubeconfig/--context
    say otherwise), else Kubernetes."""
    from weir_operator.client.backend import UsageError

    kube_options = args.kubeconfig is not None or args.context is not None
    if args.local is not None and kube_options:
        raise UsageError("--local and --kubeconfig/--context name two different places: pick one")
    local = (
        args.local if args.local is not None else (None if kube_options else environ.get(LOCAL_ENV))
    )
    if local:
        from weir_operator.client.local_backend import NAMESPACE, LocalBackend

        if args.namespace not in (None, NAMESPACE):
            raise UsageError(f"the local runtime has only namespace {NAMESPACE!r}")
        return LocalBackend(local)
    from weir_operator.client.kube_backend import KubeBackend

    return KubeBackend.connect(args.kubeconfig, args.context, args.namespace, environ)


def run(
    args: argparse.Namespace,
    out: TextIO | None = None,
    err: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Run one client command; errors become one line on stderr and their exit code."""
    from weir_operator.client.backend import ClientError

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        return _dispatch(args, out, err, os.environ if environ is None else environ)
    except ClientError as error:
        print(f"weir {args.client_command}: error: {error.message}", file=err)
        for problem in error.problems:
            print(f"  {problem}", file=err)
        return error.code


def _dispatch(
    args: argparse.Namespace, out: TextIO, err: TextIO, environ: Mapping[str, str]
) -> int:
    from pathlib import Path

    from weir_operator.client import commands
    from weir_operator.client.manifests import load_manifests, with_namespace

    command = args.client_command
    documents = load_manifests([Path(p) for p in args.paths]) if command == "apply" else []
    timeout = _duration(getattr(args, "timeout", None))
    backend = connect(args, environ)
    try:
        if command == "apply":
            placed = with_namespace(documents, backend.namespace, args.namespace)
            return commands.apply(backend, out, placed)
        if command == "get":
            return commands.get(backend, out, err, args.name, args.output)
        if command == "status":
            return commands.status(
                backend,
                out,
                err,
                args.name,
                output=args.output,
                watch=args.watch,
                wait=args.wait,
                timeout=timeout,
            )
        if command == "set-model":
            return commands.set_model(
                backend,
                out,
                args.name,
                args.uri,
                args.sha256,
                args.model_version,
                reference_uri=args.reference_uri,
                reference_sha256=args.reference_sha256,
            )
        if command == "history":
            return commands.history(backend, out, err, args.name, args.output)
        action = "promote-full" if command == "promote" and args.full else command
        return commands.request(
            backend,
            out,
            err,
            args.name,
            action,
            to_revision=getattr(args, "to_revision", None),
            wait=args.wait,
            timeout=timeout if timeout is not None else commands.REQUEST_TIMEOUT,
        )
    finally:
        backend.close()
