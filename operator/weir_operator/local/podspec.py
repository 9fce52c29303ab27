"""What a rendered Deployment asks a local server process to be.

Why it exists: `weir run` runs the very Deployments the operator renders, so that a server's
settings (threads, batching, version, revision label, environment) have one source. On a
cluster, the `fetch-model` init container copies the model and the `server` container runs
`weir serve` on it; here the model is fetched once per revision into a local folder and each
replica is a `weir serve` process on its own 127.0.0.1 port. Pure: manifests in, a launch
description out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weir_operator.core.render import MODEL_FILE, REVISION_LABEL

LOCAL_SCHEMES = ("file://", "http://", "https://")


class LaunchError(ValueError):
    """The Deployment cannot run locally; the message says why (for the status)."""


@dataclass(frozen=True, slots=True)
class ModelSource:
    uri: str
    sha256: str | None


@dataclass(frozen=True, slots=True)
class ServerTemplate:
    """One revision's servers: where the model comes from and how `weir serve` is run."""

    revision: str
    source: ModelSource
    serve_args: tuple[str, ...]  # after `weir`, with MODEL_FILE where the model path goes
    env: tuple[tuple[str, str], ...]
    graceful_seconds: float

    def argv(self, model_path: Path, port: int) -> list[str]:
        """`weir ...` arguments for one replica listening on 127.0.0.1:`port`."""
        out: list[str] = []
        args = iter(self.serve_args)
        for argument in args:
            if argument in ("--host", "--port"):
                next(args, None)
                continue
            out.append(str(model_path) if argument == MODEL_FILE else argument)
        return [*out, "--host", "127.0.0.1", "--port", str(port)]


def _flag(args: list[str], name: str) -> str | None:
    for index, argument in enumerate(args):
        if argument == name and index + 1 < len(args):
            return args[index + 1]
        if argument.startswith(name + "="):
            return argument.split("=", 1)[1]
    return None


def server_template(deployment: Mapping[str, Any]) -> ServerTemplate:
    """The local launch of a rendered Deployment; LaunchError if it cannot run here."""
    template = deployment["spec"]["template"]
    revision = template["metadata"]["labels"][REVISION_LABEL]
    pod = template["spec"]
    init = {c["name"]: c for c in pod.get("initContainers") or []}
    containers = {c["name"]: c for c in pod.get("containers") or []}
    fetch, server = init.get("fetch-model"), containers.get("server")
    if fetch is None or server is None:
        raise LaunchError("the Deployment has no fetch-model or server container")
    fetch_args = list(fetch.get("args") or [])
    uri = _flag(fetch_args, "--uri")
    if uri is None or not uri.startswith(LOCAL_SCHEMES):
        raise LaunchError(
            f"model URI {uri!r} cannot be fetched by weir run "
            "(it reads file:///ABS, http:// and https:// URIs)"
        )
    env = tuple(
        (str(v["name"]), str(v.get("value", "")))
        for v in server.get("env") or []
        if "valueFrom" not in v
    )
    serve_args = tuple(str(a) for a in [*(server.get("command") or []), *server.get("args", [])])
    graceful = float(_flag(list(serve_args), "--graceful-timeout") or 30)
    return ServerTemplate(
        revision=revision,
        source=ModelSource(uri, _flag(fetch_args, "--sha256")),
        serve_args=serve_args,
        env=env,
        graceful_seconds=graceful,
    )
