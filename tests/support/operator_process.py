"""`weir operator` as users run it, as a subprocess of the test, with its log kept for failures."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.processes import die_with_parent, free_port


class Operator:
    """`weir operator` as users run it, as a subprocess, with its log kept for failures."""

    def __init__(self, kubeconfig: Path, log_path: Path, *args: str) -> None:
        self.metrics_port = free_port()
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "weir_operator.cli", "operator", "--interval", "1",
             "--metrics-port", str(self.metrics_port), "--liveness-port", str(free_port()), *args],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log_path.open("ab"), stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
        )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    async def stop(self) -> int:
        return await asyncio.to_thread(self.terminate)

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
