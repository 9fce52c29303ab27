"""The server's settings: one frozen value built by the CLI and handed to `create_app`.

Worker processes (`--workers`, Granian's) receive it through one environment variable, so that no
module parses arguments or reads the environment at import time."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final

SETTINGS_ENV: Final = "WEIR_SERVER_SETTINGS"
DEFAULT_MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024


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
    access_log: bool = True
    graceful_timeout_seconds: float = 30.0
    revision: str = ""  # WEIR_REVISION
    track: str = ""  # WEIR_TRACK
    log_level: str = "info"
    workers_dir: str | None = None  # set by the parent of several workers (weir_server.workers)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

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
