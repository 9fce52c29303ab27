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
    intra_op_threads: int = 0  # 0 = the pod's CPU limit divided among the workers
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
    """ONNX Runtime threads per worker: the CPUs shared among the workers, at least one."""
    return max(1, math.floor(cpus / max(1, workers)))
