"""Real `weir serve --tls-cert --tls-key` processes for tests (test support): started on a free
127.0.0.1 port with a certificate of `tests.support.certs`, ready once a client that verifies
it with the CA (and the server name as SNI) gets 200 from /v2/health/ready."""

from __future__ import annotations

import os
import signal
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.certs import ServerCert
from tests.support.processes import ServerProcess, start_server


def verifying(ca: bytes) -> ssl.SSLContext:
    """A client context that trusts only `ca` and checks the server's name."""
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca.decode())


def https_client(ca: bytes, server_name: str, timeout: float = 5.0) -> httpx.Client:
    """An httpx client for 127.0.0.1 that verifies the server as `server_name` (sent as SNI)."""

    def name_it(request: httpx.Request) -> None:
        request.extensions["sni_hostname"] = server_name

    return httpx.Client(verify=verifying(ca), timeout=timeout, event_hooks={"request": [name_it]})


def https_url(server: ServerProcess, path: str = "") -> str:
    return f"https://127.0.0.1:{server.port}{path}"


def wait_ready(server: ServerProcess, ca: bytes, server_name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with https_client(ca, server_name, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                code = server.process.returncode
                raise AssertionError(f"server exited with {code}:\n{server.log()}")
            try:
                if client.get(https_url(server, "/v2/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise AssertionError(f"TLS server not ready within {timeout} s:\n{server.log()}")


@contextmanager
def running_tls_server(
    model: Path,
    cert: ServerCert,
    folder: Path,
    server_name: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """`weir serve MODEL --tls-cert ... --tls-key ...` with `cert` (written into `folder`)."""
    cert_file, key_file, _ = cert.write(folder)
    server = start_server(
        model, "--tls-cert", str(cert_file), "--tls-key", str(key_file), *args, env=env
    )
    try:
        wait_ready(server, cert.ca, server_name)
        yield server
    finally:
        server.stop()
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
