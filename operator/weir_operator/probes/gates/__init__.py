"""The runners of the pre-traffic gates (core/gates): each asks a ready canary server (and, for
the signature, a stable one) and returns a `GateResult`, or None when it could not tell yet (a
server that did not answer is asked again at the next reconcile). They reach the servers through
`ServerClients`, so a server that speaks HTTPS is verified; one that cannot be raises
`TrustError`, which the prober reports.

One runner per gate, by the gate's name; adding a gate adds its runner here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from weir_operator.core.gates import GateResult
from weir_operator.core.spec import ModelDeployment
from weir_operator.probes.gates import sample_input, signature
from weir_operator.providers import PodTarget, ServerClients

Runner = Callable[
    [ServerClients, ModelDeployment, PodTarget, PodTarget | None], Awaitable[GateResult | None]
]

RUNNERS: dict[str, Runner] = {
    "signature": signature.run,
    "sampleInput": sample_input.run,
}
