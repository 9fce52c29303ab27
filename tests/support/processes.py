"""Starting real `weir serve` processes on free loopback ports, and stopping them for sure."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn` for test subprocesses: the kernel sends them SIGTERM when the thread that
    started them ends, so a test run killed hard leaves no server or control plane behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_logged(
    command: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A test subprocess: stdout and stderr appended to `log_path`, no stdin, and ended with
    the test run (die_with_parent)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
        )


# Ports for a process a test starts later. Below the kernel's ephemeral range
# (/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 by default), where every bind to port 0
# and every outgoing connection gets its port: a port chosen there could be taken by such a
# socket (a test's own file server, say) before the process binds it.
TEST_PORTS = range(20000, 32000)


def free_port() -> int:
    """A port free now on 127.0.0.1, outside the ephemeral range, picked at random."""
    for _ in range(200):
        port = random.choice(TEST_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {TEST_PORTS} on 127.0.0.1")


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


def start_server(
    model: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None
) -> ServerProcess:
    port = port or free_port()
    log_fd, log_name = tempfile.mkstemp(prefix="weir-serve-", suffix=".log")
    command = [
        sys.executable,
        "-m",
        "weir_operator.cli",
        "serve",
        str(model),
        "--port",
        str(port),
        *args,
    ]
    process = subprocess.Popen(
        command,
        stdout=log_fd,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    os.close(log_fd)
    return ServerProcess(process, port, Path(log_name))


@contextmanager
def running_server(
    model: Path, *args: str, env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[ServerProcess]:
    server = start_server(model, *args, env=env, port=port)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
