"""Who may write to `weir run`'s control API: the holder of a token only its user can read.

Why it exists: the control API listens on 127.0.0.1, which every user of the machine (and,
through the browser, every web page it opens) can reach. A write there starts server processes
as the user running `weir run`, so writes need a secret. `weir run` makes a new token at every
start and writes it, 0600, to its state folder (`control-token`) and to a discovery file per
control address in the user's own runtime folder; the `weir` CLI of the same user finds it there
by the URL it talks to, with no flag. `WEIR_RUN_TOKEN` overrides the lookup.

Shared by the runtime (which writes it) and the CLI (which reads it); no I/O at import."""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

TOKEN_ENV = "WEIR_RUN_TOKEN"
SCHEME = "Bearer"


def new_token() -> str:
    return secrets.token_urlsafe(32)


def runtime_dir() -> Path:
    """The user's own folder for discovery files: $XDG_RUNTIME_DIR/weir (a per-user tmpfs),
    else ~/.local/state/weir."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "weir"


def discovery_path(host: str, port: int) -> Path:
    return runtime_dir() / f"run-{host.strip('[]')}-{port}.token"


def write_secret(path: Path, token: str) -> None:
    """Write `token` to a file only this user can read (created 0600, then renamed over)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    os.replace(partial, path)


def publish(token: str, state_token_file: Path, host: str, port: int) -> None:
    write_secret(state_token_file, token)
    write_secret(discovery_path(host, port), token)


def withdraw(token: str, host: str, port: int) -> None:
    """Remove the discovery file at stop, unless a newer `weir run` has replaced it."""
    path = discovery_path(host, port)
    with contextlib.suppress(OSError):
        if path.read_text().strip() == token:
            path.unlink()


def find_token(url: str) -> str | None:
    """The token for the control API at `url`: WEIR_RUN_TOKEN, else the discovery file that
    `weir run` wrote for that address, else None."""
    explicit = os.environ.get(TOKEN_ENV)
    if explicit:
        return explicit.strip()
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.hostname is None or parts.port is None:
        return None
    hosts = [parts.hostname]
    if parts.hostname == "localhost":
        hosts.append("127.0.0.1")
    for host in hosts:
        with contextlib.suppress(OSError):
            token = discovery_path(host, parts.port).read_text().strip()
            if token:
                return token
    return None


def authorized(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` (compared in constant time)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != SCHEME.lower():
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())
