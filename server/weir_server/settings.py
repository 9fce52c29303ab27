"""The server's settings: one frozen value built by the CLI and handed to `create_app`.

Worker processes (`--workers`, Granian's) receive it through one environment variable, so that no
module parses arguments or reads the environment at import time."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final

SETTINGS_ENV: Final = "WEIR_SERVER_SETTINGS"
REFERENCE_ENV: Final = "WEIR_REFERENCE"  # --reference, when the option is not given
DEFAULT_MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024
# JSON bodies (and the JSON header of a binary one) are decoded by single C calls (orjson,
# numpy) that hold the GIL: measured, 26 ms for 4 MB of nested floats, 96 ms for 8 MB and 408
# ms for 30 MB (docs/benchmarks.md, "One big request"). 4 MiB keeps the longest such stall of
# other requests near 50 ms; larger tensors go in the binary extension, up to the body limit.
DEFAULT_MAX_JSON_BYTES: Final = 4 * 1024 * 1024
# Connections: docs/decisions.md, "`weir serve` under load and abuse".
DEFAULT_BACKLOG: Final = 1024
DEFAULT_MAX_CONNECTIONS: Final = 2048
DEFAULT_BODY_TIMEOUT_SECONDS: Final = 30.0
DEFAULT_KEEP_ALIVE_TIMEOUT_SECONDS: Final = 30.0
# A served model name is one URL path segment (/v2/models/NAME/infer); the same rule as
# spec.model.name (weir_operator.core.spec.MODEL_NAME_PATTERN).
MODEL_NAME_PATTERN: Final = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?")
SHA256_PATTERN: Final = re.compile(r"[a-fA-F0-9]{64}")
DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class ServerSettings:
    model_path: Path
    model_name: str
    model_version: str | None = None
    sha256: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    intra_op_threads: int = 0  # 0 = default_intra_op_threads(the CPU limit, workers)
    max_batch_size: int = 0  # 0 or 1 = no dynamic batching
    max_batch_delay_ms: float = 1.0
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    access_log: bool = True
    graceful_timeout_seconds: float = 30.0
    backlog: int = DEFAULT_BACKLOG
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # per worker (Granian's backpressure)
    body_timeout_seconds: float = DEFAULT_BODY_TIMEOUT_SECONDS
    keep_alive_timeout_seconds: float = DEFAULT_KEEP_ALIVE_TIMEOUT_SECONDS
    revision: str = ""  # WEIR_REVISION
    track: str = ""  # WEIR_TRACK
    log_level: str = "info"
    tls_cert: str | None = None  # PEM certificate (chain) file: HTTPS on the port
    tls_key: str | None = None  # its PEM private key file
    mirror_config: str | None = None  # shadow traffic: where to copy requests (weir_server.shadow)
    reference: str | None = None  # model monitoring: a `weir profile` file (weir_server.monitor)
    workers_dir: str | None = None  # set by the parent of several workers (weir_server.workers)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    @property
    def json_limit(self) -> int:
        """The most bytes of JSON a request may carry (never more than the body limit)."""
        return min(self.max_json_bytes, self.max_request_bytes)

    def problem(self) -> str | None:
        """What is wrong with these settings, as one line naming the option; None if nothing.
        Checked before any work starts (reading the model file, binding the port)."""
        if not MODEL_NAME_PATTERN.fullmatch(self.model_name):
            return (
                f"model name {self.model_name!r} (--name, or the file name without .onnx) "
                "cannot be one URL path segment: use 1-63 letters, digits, '.', '_' or '-', "
                "starting and ending with a letter or digit"
            )
        if self.sha256 is not None and not SHA256_PATTERN.fullmatch(self.sha256):
            return f"--sha256 must be 64 hexadecimal characters, got {self.sha256!r}"
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = (
                ("--tls-cert", "--tls-key") if self.tls_key is None else ("--tls-key", "--tls-cert")
            )
            return f"{given} needs {missing} too: TLS takes a certificate and its private key"
        if not 1 <= self.port <= 65535:
            return f"--port must be from 1 to 65535, got {self.port}"
        # Upper bounds: what the layers below take (listen(2)'s backlog is an int the kernel
        # caps at net.core.somaxconn; Granian's timeouts are milliseconds in 64 bits, asyncio's
        # timers floats uvloop turns into them), far above any sane value.
        counts = [
            ("--workers", self.workers, 1, 1024),
            ("--intra-op-threads", self.intra_op_threads, 0, 1024),
            ("--max-batch-size", self.max_batch_size, 0, 1 << 20),
            ("--max-request-bytes", self.max_request_bytes, 1, 1 << 40),
            ("--max-json-bytes", self.max_json_bytes, 1, 1 << 40),
            ("--backlog", self.backlog, 1, 65535),
            ("--max-connections", self.max_connections, 1, 1_000_000),
        ]
        for option, value, low, high in counts:
            if not low <= value <= high:
                return f"{option} must be from {low} to {high}, got {value}"
        durations: list[tuple[str, float, str, bool, float]] = [
            ("--max-batch-delay-ms", self.max_batch_delay_ms, "milliseconds", True, 60_000.0),
            ("--graceful-timeout", self.graceful_timeout_seconds, "seconds", True, DAY),
            ("--body-timeout", self.body_timeout_seconds, "seconds", False, DAY),
            ("--keep-alive-timeout", self.keep_alive_timeout_seconds, "seconds", False, DAY),
        ]
        for option, number, unit, zero_ok, most in durations:
            low_ok = number >= 0 if zero_ok else number > 0
            if not (math.isfinite(number) and low_ok and number <= most):
                bounds = f"from 0 to {most:g}" if zero_ok else f"more than 0, at most {most:g}"
                return f"{option} must be a number of {unit} {bounds}; got {number:g}"
        return None

    def to_json(self) -> str:
        values = asdict(self)
        values["model_path"] = str(self.model_path)
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> ServerSettings:
        values: dict[str, Any] = json.loads(text)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        values["model_path"] = Path(values["model_path"])
        return cls(**values)


def cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """CPUs this process may use: the cgroup quota (v2 or v1) if set, else the affinity mask."""
    available = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()
        if quota != "max":
            return min(available, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return min(available, quota_us / period_us)
    except (OSError, ValueError):
        pass
    return available


def default_intra_op_threads(cpus: float, workers: int) -> int:
    """ONNX Runtime threads per worker: each worker's share of the CPUs less one core, which its
    HTTP thread and event loop need on every request; at least one.

    With every core given to ONNX Runtime, a pool thread that loses its core to the HTTP side
    mid-run stalls the whole run for a scheduler time slice, and idle pool threads spin on
    cores (and CPU quota) the HTTP side needs. Measured with `weir serve` on mlp on 2 CPUs
    (docs/benchmarks.md): one thread instead of two answered within 5% as many requests, with
    or without batching, at a lower p99 at every concurrency (at 1 client 3.6-3.8 ms instead
    of 8.7-9.8) and on half a core to a core less; it cost 0.6 ms of p50 at 1 client."""
    return max(1, math.floor(cpus / max(1, workers)) - 1)
