"""What a rendered Deployment asks a local server process to be.

Why it exists: `weir run` runs the very Deployments the operator renders, so that a server's
settings (threads, batching, version, revision label, environment) have one source. On a
cluster, the `fetch-model` init container copies the model and the `server` container runs
`weir serve` on it; here the model is fetched once per revision into a local folder and each
replica is a `weir serve` process on its own 127.0.0.1 port. The fetch-model container's
environment comes along: its plain values (S3 endpoint and region, the header's name and
prefix) as they are, its Secret keys as references that `weir_operator.local.secret_files`
reads from the secrets folder at fetch time. Pure: manifests in, a launch description out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weir_operator.core.render import (
    MIRROR_FILE,
    MODEL_FILE,
    REFERENCE_FILE,
    REVISION_LABEL,
    SHADOW_DIR,
)
from weir_operator.core.spec import ModelDeploymentSpec

LOCAL_SCHEMES = ("file://", "http://", "https://", "s3://")


class LaunchError(ValueError):
    """The Deployment cannot run locally; the message says why (for the status)."""


@dataclass(frozen=True, slots=True)
class SecretKeyEnv:
    """A variable of the fetch-model container whose value is a key of a Secret."""

    env: str
    secret: str
    key: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class ModelSource:
    uri: str
    sha256: str | None
    env: tuple[tuple[str, str], ...] = ()  # the fetch-model container's plain values
    secrets: tuple[SecretKeyEnv, ...] = ()  # and those from Secrets, read when fetching
    # spec.monitoring.reference (fetch-model --reference-uri): fetched next to the model.
    reference_uri: str | None = None
    reference_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class ServerTemplate:
    """One revision's servers: where the model comes from and how `weir serve` is run."""

    revision: str
    source: ModelSource
    serve_args: tuple[str, ...]  # after `weir`, with MODEL_FILE where the model path goes
    env: tuple[tuple[str, str], ...]
    graceful_seconds: float
    mirror_file: Path | None = None  # where weir run writes what a shadow step mirrors

    def argv(self, model_path: Path, port: int) -> list[str]:
        """`weir ...` arguments for one replica listening on 127.0.0.1:`port`."""
        out: list[str] = []
        args = iter(self.serve_args)
        for argument in args:
            if argument in ("--host", "--port"):
                next(args, None)
                continue
            if argument in ("--tls-cert", "--tls-key"):
                next(args, None)  # weir run's servers speak plain HTTP on 127.0.0.1
                continue
            if argument == "--mirror-config":
                path = next(args, None)
                if self.mirror_file is not None and path == f"{SHADOW_DIR}/{MIRROR_FILE}":
                    out += [argument, str(self.mirror_file)]
                continue
            if argument == MODEL_FILE:
                argument = str(model_path)
            elif argument == REFERENCE_FILE:
                argument = str(reference_path(model_path))
            out.append(argument)
        return [*out, "--host", "127.0.0.1", "--port", str(port)]


def reference_path(model_path: Path) -> Path:
    """Where a revision's reference is fetched: next to its model (as fetch-model does)."""
    return model_path.parent / Path(REFERENCE_FILE).name


# spec.server fields that mean nothing for processes on this machine (by their API names).
IGNORED_SERVER_FIELDS = (
    "image", "imagePullPolicy", "imagePullSecrets", "serviceAccountName", "nodeSelector",
    "tolerations", "affinity", "topologySpreadConstraints", "priorityClassName",
    "podAnnotations", "podLabels", "tls", "envFrom",
)  # fmt: skip


def ignored_fields(spec: ModelDeploymentSpec) -> list[str]:
    """The fields of a spec that `weir run` does not use, as `spec.server.<name>`: pod
    scheduling, images, TLS (its servers speak HTTP on 127.0.0.1), extended resources, and
    environment taken from Secrets or ConfigMaps for the server (the model's fetch reads
    Secrets from --secrets-dir)."""
    server = spec.server.to_manifest()
    found = [f"spec.server.{name}" for name in IGNORED_SERVER_FIELDS if server.get(name)]
    if any("valueFrom" in e for e in server.get("env") or []):
        found.append("spec.server.env[].valueFrom")
    resources = server.get("resources") or {}
    extended = sorted(
        {n for part in ("requests", "limits") for n in resources.get(part) or {} if "/" in n}
    )
    if extended:
        found.append(f"spec.server.resources ({', '.join(extended)})")
    return found


def _flag(args: list[str], name: str) -> str | None:
    for index, argument in enumerate(args):
        if argument == name and index + 1 < len(args):
            return args[index + 1]
        if argument.startswith(name + "="):
            return argument.split("=", 1)[1]
    return None


def server_template(
    deployment: Mapping[str, Any], mirror_file: Path | None = None
) -> ServerTemplate:
    """The local launch of a rendered Deployment; LaunchError if it cannot run here.
    `mirror_file` stands for the shadow ConfigMap's file (core/shadow.py)."""
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
    reference_uri = _flag(fetch_args, "--reference-uri")  # spec.monitoring.reference
    if uri is None or not _fetchable(pod, fetch, uri):
        raise _unfetchable("model", pod, fetch, uri)
    if reference_uri is not None and not _fetchable(pod, fetch, reference_uri):
        raise _unfetchable("reference", pod, fetch, reference_uri)
    env = tuple(
        (str(v["name"]), str(v.get("value", "")))
        for v in server.get("env") or []
        if "valueFrom" not in v
    )
    serve_args = tuple(str(a) for a in [*(server.get("command") or []), *server.get("args", [])])
    graceful = float(_flag(list(serve_args), "--graceful-timeout") or 30)
    return ServerTemplate(
        revision=revision,
        source=ModelSource(
            uri,
            _flag(fetch_args, "--sha256"),
            *_fetch_env(fetch),
            reference_uri=reference_uri,
            reference_sha256=_flag(fetch_args, "--reference-sha256"),
        ),
        serve_args=serve_args,
        env=env,
        graceful_seconds=graceful,
        mirror_file=mirror_file,
    )


def _claims(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    """The PersistentVolumeClaims the container mounts (a pvc:// model's or reference's
    source), by where they are mounted."""
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    found = {}
    for mount in container.get("volumeMounts") or []:
        claim = (volumes.get(mount.get("name")) or {}).get("persistentVolumeClaim")
        if claim:
            found[str(mount.get("mountPath", ""))] = str(claim.get("claimName", ""))
    return found


def _fetchable(pod: Mapping[str, Any], container: Mapping[str, Any], uri: str) -> bool:
    """weir run reads the URI: a local scheme, and not a claim's (pvc://) mount."""
    on_claim = any(uri.startswith(f"file://{path}/") for path in _claims(pod, container))
    return uri.startswith(LOCAL_SCHEMES) and not on_claim


def _unfetchable(
    what: str, pod: Mapping[str, Any], container: Mapping[str, Any], uri: str | None
) -> LaunchError:
    return LaunchError(
        f"{what} URI {_source_uri(pod, container, uri)!r} cannot be fetched by weir run "
        "(it reads file:///ABS, http://, https:// and s3:// URIs)"
    )


def _source_uri(pod: Mapping[str, Any], container: Mapping[str, Any], uri: str | None) -> str:
    """The URI as the spec wrote it: pvc://CLAIM/PATH arrives as file:// under its mount."""
    for path, claim in _claims(pod, container).items():
        if uri is not None and uri.startswith(f"file://{path}/"):
            return f"pvc://{claim}/{uri.removeprefix(f'file://{path}/')}"
    return str(uri)


def _fetch_env(
    fetch: Mapping[str, Any],
) -> tuple[tuple[tuple[str, str], ...], tuple[SecretKeyEnv, ...]]:
    """The fetch-model container's environment: plain values, and keys of Secrets."""
    plain: list[tuple[str, str]] = []
    secrets: list[SecretKeyEnv] = []
    for variable in fetch.get("env") or []:
        name = str(variable["name"])
        source = variable.get("valueFrom")
        if source is None:
            plain.append((name, str(variable.get("value", ""))))
            continue
        ref = source.get("secretKeyRef")
        if ref is None:
            raise LaunchError(
                f"fetch-model's {name} comes from {sorted(source)}; weir run reads only Secret keys"
            )
        secrets.append(
            SecretKeyEnv(name, str(ref["name"]), str(ref["key"]), bool(ref.get("optional")))
        )
    return tuple(plain), tuple(secrets)
