"""`weir run`'s state folder: where it keeps what an API server would keep in etcd.

Why it exists: a restarted operator resumes mid-rollout because the rollout lives in
`.status` on the API server. `weir run` has no API server, so it keeps each ModelDeployment
(metadata, spec, status, events, the autoscaler's scale-down windows) in a file of its own,
written whole and atomically (a temporary file, fsync, rename, fsync of the folder) after every
change. A `kill -9` leaves either the old file or the new one, never half of one. A file that
cannot be read is reported and stops the start, so state is never reset behind a user's back.

Layout of the folder (0700, one `weir run` at a time, held by an flock on `lock`):

    objects/<name>.json   one ModelDeployment (FORMAT below)
    models/<revision>/    fetched model files
    logs/                 one log per server process
    control-token         the control API's token (0600), see control_access
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

FORMAT = 1
OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class StateError(Exception):
    """The state folder cannot be used; the message says which file and what to do."""


def default_state_dir(paths: Iterable[Path]) -> Path:
    """Where `weir run -f PATHS` keeps its state without --state-dir: one folder per set of
    manifest paths under $XDG_STATE_HOME (~/.local/state), so a restart with the same files
    resumes, and nothing is left in /tmp."""
    resolved = sorted(str(p.resolve()) for p in paths)
    digest = hashlib.sha256("\0".join(resolved).encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "-", Path(resolved[0]).stem)[:40] if resolved else "run"
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "weir" / "run" / f"{stem}-{digest}"


def write_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` so that a crash at any moment leaves the old or the new
    content: write aside, fsync, rename over, fsync the folder."""
    partial = path.with_name(f".{path.name}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class StateDir:
    """The folder, locked for this process while it is open."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        self.models = root / "models"
        self.logs = root / "logs"
        self.token = root / "control-token"
        self._lock: IO[str] | None = None

    def open(self) -> StateDir:
        """Create the folder (0700) if needed and take its lock; StateError if another
        `weir run` holds it or it cannot be created."""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.objects.mkdir(exist_ok=True, mode=0o700)
            lock = (self.root / "lock").open("a+")
        except OSError as error:
            raise StateError(
                f"cannot use the state folder {self.root}: {error.strerror or error}"
            ) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise StateError(
                f"another weir run (pid {holder}) is using the state folder {self.root}; "
                "stop it, or give this one its own --state-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock
        return self

    def close(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # -- objects ---------------------------------------------------------------------------

    def object_path(self, name: str) -> Path:
        if not OBJECT_NAME.match(name):  # names are validated; this keeps paths inside
            raise ValueError(f"not a ModelDeployment name: {name!r}")
        return self.objects / f"{name}.json"

    def write_object(self, name: str, record: dict[str, Any]) -> None:
        data = json.dumps({"format": FORMAT, **record}, sort_keys=True).encode()
        write_atomically(self.object_path(name), data)

    def remove_object(self, name: str) -> None:
        self.object_path(name).unlink(missing_ok=True)
        _fsync_folder(self.objects)

    def read_objects(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every stored object as (name, record); StateError naming the first file that
        cannot be read (nothing is skipped or reset)."""
        for path in sorted(self.objects.glob("*.json")):
            name = path.stem
            try:
                record = json.loads(path.read_bytes())
            except (OSError, ValueError) as error:
                raise StateError(self._unreadable(path, str(error))) from None
            if not isinstance(record, dict) or record.get("format") != FORMAT:
                raise StateError(
                    self._unreadable(path, f"not a weir run state file of format {FORMAT}")
                )
            if not isinstance(record.get("object"), dict) or not OBJECT_NAME.match(name):
                raise StateError(self._unreadable(path, "it holds no ModelDeployment"))
            yield name, record

    @staticmethod
    def _unreadable(path: Path, why: str) -> str:
        return (
            f"the state file {path} cannot be read ({why}); nothing was changed. Repair it, "
            "or move it away to start that ModelDeployment afresh"
        )
