"""Readiness shared by the worker processes of one `weir serve --workers N`.

Why it exists: each Granian worker loads and warms up its own copy of the model, and the
kernel hands a new connection to whichever worker accepts first. If `/v2/health/ready` only
spoke for the worker that answered it, a pod would turn Ready while another worker still
loads and answers 503 to the inference requests it accepts (the rollout analysis would count
them as the model's errors). So a worker marks itself ready with a file named after its pid
in a directory the parent made, and every worker answers ready only when `expected` live
workers have marked themselves. A worker that died (its pid is gone) does not count, so while
Granian replaces it the pod is not ready."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PREFIX = "ready-"


class WorkerReadiness:
    def __init__(self, directory: Path, expected: int) -> None:
        self.directory = directory
        self.expected = expected
        self._mine = directory / f"{PREFIX}{os.getpid()}"

    def mark_ready(self) -> None:
        self._mine.touch()

    def mark_not_ready(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._mine.unlink()

    def ready_workers(self) -> int:
        count = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                pid = entry.name.removeprefix(PREFIX)
                if entry.name.startswith(PREFIX) and pid.isdigit() and _alive(int(pid)):
                    count += 1
        return count

    def all_ready(self) -> bool:
        return self.ready_workers() >= self.expected


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, though not ours
        return True
    return True
