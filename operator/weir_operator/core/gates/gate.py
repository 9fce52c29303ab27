"""What every pre-traffic gate is (the interface) and what it finds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from weir_operator.core.spec import ModelDeploymentSpec


@dataclass(frozen=True, slots=True)
class GateResult:
    """A gate's outcome; `message` says what differs (a failure) or is empty."""

    passed: bool
    message: str = ""


class PreTrafficGate(Protocol):
    @property
    def name(self) -> str:
        """As in `status` and in the shell's runners: signature, sampleInput."""
        ...

    @property
    def failure_reason(self) -> str:
        """The RolledBack condition's reason when it fails (CamelCase)."""
        ...

    def applies(self, spec: ModelDeploymentSpec) -> bool: ...

    def waiting(self) -> str:
        """What the canary waits for while the result is not known."""
        ...

    def passed(self) -> str:
        """The gate in the PreTrafficChecksPassed event."""
        ...

    def skipped(self) -> str | None:
        """Said in that event when the gate does not apply (None: nothing)."""
        ...

    def failed(self, message: str) -> str:
        """Why the canary was rolled back."""
        ...
