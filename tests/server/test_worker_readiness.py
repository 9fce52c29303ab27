"""With `--workers N`, the server is ready only when every worker has loaded and warmed up its
model: readiness is shared through pid-named marker files, and a dead worker's marker does not
count."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from weir_server.workers import PREFIX, WorkerReadiness


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class TestWorkerReadiness:
    def test_ready_only_when_every_expected_worker_marked_itself(self, tmp_path: Path) -> None:
        mine = WorkerReadiness(tmp_path, expected=2)
        assert not mine.all_ready()
        mine.mark_ready()
        assert mine.ready_workers() == 1
        assert not mine.all_ready(), "the other worker may still be loading"
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            (tmp_path / f"{PREFIX}{other.pid}").touch()
            assert mine.all_ready()
        finally:
            other.kill()
            other.wait()
        assert not mine.all_ready(), "a dead worker's marker does not count"

    def test_a_worker_that_stops_is_no_longer_counted(self, tmp_path: Path) -> None:
        mine = WorkerReadiness(tmp_path, expected=1)
        mine.mark_ready()
        assert mine.all_ready()
        mine.mark_not_ready()
        mine.mark_not_ready()  # twice is harmless (shutdown after a failed start)
        assert not mine.all_ready()

    def test_stale_and_foreign_files_are_ignored(self, tmp_path: Path) -> None:
        (tmp_path / f"{PREFIX}{dead_pid()}").touch()
        (tmp_path / "ready-notapid").touch()
        (tmp_path / "something-else").touch()
        assert WorkerReadiness(tmp_path, expected=1).ready_workers() == 0

    def test_a_missing_directory_reads_as_not_ready(self, tmp_path: Path) -> None:
        assert not WorkerReadiness(tmp_path / "gone", expected=1).all_ready()
