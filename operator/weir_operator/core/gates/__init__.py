"""Pre-traffic gates: what a canary must pass before it gets any traffic (beside its servers
being ready). Pure descriptions; the shell that runs each one is `probes/gates/<name>.py`.

A gate's result is a `GateResult`; None means not known yet (a server that could not be
reached is asked again), never a failure. Only an answer from the model fails a gate.

Adding a gate touches its module here, its runner in `probes/gates/`, `GATES` in both, and the
spec field that turns it on."""

from __future__ import annotations

from weir_operator.core.gates.gate import GateResult, PreTrafficGate
from weir_operator.core.gates.sample_input import SampleInputGate
from weir_operator.core.gates.signature import SignatureGate

__all__ = ["GATES", "GateResult", "PreTrafficGate"]

GATES: tuple[PreTrafficGate, ...] = (SignatureGate(), SampleInputGate())
