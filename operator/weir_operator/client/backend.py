"""What every command needs from the place where ModelDeployments live, and how it fails.

A `Backend` is a narrow door: list, get, apply, set the model, post a request, read events.
Its errors carry the exit code and one line a person can act on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from weir_server.exit_codes import FAILED, OK, TIMED_OUT, USAGE

__all__ = ["FAILED", "OK", "TIMED_OUT", "USAGE"]  # the codes the commands return (exit_codes)

Manifest = dict[str, Any]


class ClientError(Exception):
    """A failure to report in one line on stderr, with its exit code."""

    code = USAGE

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)


class UsageError(ClientError):
    """Bad arguments or input files: nothing was sent."""


class NotFound(ClientError):
    """No such ModelDeployment (or no ModelDeployment API at all)."""


class Unreachable(ClientError):
    """No cluster or local runtime to talk to."""


class Refused(ClientError):
    """The API server or the local runtime answered, and said no."""

    code = FAILED


@dataclass(frozen=True, slots=True)
class Applied:
    name: str
    result: str  # created, configured, unchanged


class Backend(Protocol):
    """Where ModelDeployments live: a Kubernetes namespace or a `weir run` control API."""

    namespace: str
    poll_interval: float  # seconds between two reads while waiting

    def list_all(self) -> list[Manifest]:
        """Every ModelDeployment of the namespace, with status."""
        ...

    def get(self, name: str) -> Manifest:
        """The object with its status; NotFound if there is none."""
        ...

    def apply(self, documents: Sequence[Manifest]) -> list[Applied]:
        """Create or update validated manifests (namespace already set), in order."""
        ...

    def set_model(self, name: str, model: Manifest, reference: Manifest | None = None) -> Manifest:
        """Replace spec.model (`uri`, `sha256`?, `version`?; the served name is kept), and
        with `reference` (`uri`, `sha256`?) spec.monitoring.reference, in one change."""
        ...

    def request(self, name: str, action: str, revision: str | None) -> str:
        """Post a promote/abort/retry/undo request; its id (`status.lastRequest.id` later)."""
        ...

    def events(self, name: str, limit: int) -> list[Manifest]:
        """The newest events about the object, oldest first: `{at, type, reason, message}`."""
        ...

    def close(self) -> None: ...
