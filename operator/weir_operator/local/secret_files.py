"""The Secrets `weir run` gives the model fetch: files in a folder, as a kubelet mounts them.

Why it exists: on a cluster, the fetch-model init container gets the model store's credentials
from the Secrets that spec.model.auth names (secretKeyRef). `weir run` has no API server, so it
reads the same Secrets from a folder laid out as Kubernetes mounts one: DIR/<secret>/<key>, one
file per key, the value being the file's content (a trailing newline, as `echo` writes it, is
not part of it). DIR is `weir run --secrets-dir`, by default `secrets/` next to the
ModelDeployment files (see `default_secrets_dir`).

A key that is not there (a file missing or unreadable) is what a kubelet reports as
CreateContainerConfigError: the revision cannot start, its condition names the file to
write, and the fetch is tried again when the file appears. Values never appear in a message."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from weir_operator.local.podspec import ModelSource
from weir_server.fetch import HEADER_VALUE_ENV, StoreAccess

MISSING_REASON = "CreateContainerConfigError"  # the kubelet's reason for a missing Secret key
AWS_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
AWS_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
AWS_TOKEN_KEY = "AWS_SESSION_TOKEN"


class SecretMissing(Exception):
    """A key the model fetch needs is not in the secrets folder; the message says which file."""


def default_secrets_dir(paths: Sequence[Path]) -> Path:
    """`secrets/` next to the ModelDeployments: in the first -f folder, or beside the first -f
    file. Manifests are read only from the folder's top level, so this folder is never taken
    for one."""
    first = paths[0].resolve() if paths else Path.cwd()
    return (first if first.is_dir() else first.parent) / "secrets"


def secret_path(secrets_dir: Path, secret: str, key: str) -> Path:
    return secrets_dir / secret / key


def signature(source: ModelSource, secrets_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """What the source's secret files are now (modification time and size; -1 when missing):
    when it changes, a failed fetch is worth trying again at once."""
    found = []
    for ref in source.secrets:
        path = secret_path(secrets_dir, ref.secret, ref.key)
        try:
            stat = path.stat()
        except OSError:
            found.append((str(path), -1, -1))
        else:
            found.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(found)


def store_access(source: ModelSource, secrets_dir: Path) -> StoreAccess:
    """The endpoint, region, credentials and header the fetch-model container would get, with
    its Secret keys read from `secrets_dir`; SecretMissing when a needed key is not there.
    Without spec.model.auth.secretRef, s3:// uses boto3's default chain of this machine (its
    environment, ~/.aws), as a pod uses its ServiceAccount's."""
    environ = dict(source.env)
    where: dict[str, Path] = {}
    for ref in source.secrets:
        path = secret_path(secrets_dir, ref.secret, ref.key)
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            if ref.optional:
                continue
            raise SecretMissing(
                f"no file {path}: weir run reads key {ref.key!r} of Secret {ref.secret!r} from "
                f"--secrets-dir {secrets_dir} (as DIR/<secret>/<key>)"
            ) from None
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise SecretMissing(
                f"cannot read {path} (key {ref.key!r} of Secret {ref.secret!r}): {reason}"
            ) from None
        if not value and not ref.optional:
            raise SecretMissing(f"{path} is empty (key {ref.key!r} of Secret {ref.secret!r})")
        if value:
            environ[ref.env], where[ref.env] = value, path
    access = StoreAccess.from_env(environ)
    if AWS_ACCESS_KEY in where:
        access = dataclasses.replace(
            access,
            aws_access_key_id=environ[AWS_ACCESS_KEY],
            aws_secret_access_key=environ.get(AWS_SECRET_KEY, ""),
            aws_session_token=environ.get(AWS_TOKEN_KEY),
            credentials_from=f"{where[AWS_ACCESS_KEY].parent}/",
        )
    elif HEADER_VALUE_ENV in where:
        access = dataclasses.replace(access, credentials_from=str(where[HEADER_VALUE_ENV]))
    return access
