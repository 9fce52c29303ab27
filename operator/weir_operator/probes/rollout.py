"""The rollout's I/O shell: what `reconcile` needs measured before it can decide.

Why it exists: the rollout state machine is pure, so someone must talk to the servers for it.
Once per reconcile, for one ModelDeployment, this module
- runs the pre-traffic gates (core/gates, probes/gates) of a canary that has not passed them
  yet: its model signature (V2 metadata, against a ready stable pod) and, when
  `server.sampleInput` is set, a sample inference on a ready canary pod;
- runs the analysis when one is due (`interval` after the last one), through the metric
  providers, with the canary pods' restarts and readiness as a problem;
- reads the request annotation (`serving.weir.dev/request`) that `weir promote|abort|...` write.

Only answers from the model count as a failed check (a different signature, an error answer to
the sample); a server that cannot be reached is "not known yet" and is asked again at the next
reconcile. Known check results are kept in memory per revision: they are not read once the
canary is verified (`verifiedAt` is in the status), so an operator restart loses nothing.

Servers that speak HTTPS (`spec.server.tls`) are verified (`providers.servers`); one that
cannot be verified is not known yet either, and a Warning event (`TLSNotVerified`) says why,
once per reason."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx

from weir_operator import providers as metric_providers
from weir_operator.core.analysis import canary_pod_problem, pod_health
from weir_operator.core.gates import GATES, GateResult
from weir_operator.core.reconcile import Measurements
from weir_operator.core.render import REVISION_LABEL
from weir_operator.core.requests import parse_request
from weir_operator.core.spec import ModelDeployment, duration_seconds
from weir_operator.core.status import (
    AnalysisResult,
    DisagreementExample,
    Event,
    ModelDeploymentStatus,
    parse_timestamp,
)
from weir_operator.probes.gates import RUNNERS
from weir_operator.providers import (
    PodTarget,
    Providers,
    RevisionTarget,
    TrustError,
    TrustSource,
    pod_target,
)

Gates = dict[str, GateResult | None]
EXAMPLES_TIMEOUT = httpx.Timeout(2.0, connect=1.0)


def _revision_pods(pods: Iterable[Mapping[str, Any]], revision: str) -> list[Mapping[str, Any]]:
    return [
        p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL)
        == revision
    ]  # fmt: skip


def _targets(pods: Iterable[Mapping[str, Any]]) -> list[PodTarget]:
    return [t for t in (pod_target(p) for p in pods) if t is not None]


class RolloutProber:
    """The probes of one operator process (one set of metric providers and their clients;
    `trust` gives the CA of a TLS server's Secret)."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        trust: TrustSource | None = None,
    ) -> None:
        self.providers = Providers(transport, trust)
        self._gates: dict[tuple[str, str, str], Gates] = {}
        self._warned: dict[tuple[str, str], str] = {}
        self._untrusted: dict[tuple[str, str], str] = {}

    async def probe(
        self,
        md: ModelDeployment,
        status: ModelDeploymentStatus,
        pods: list[Mapping[str, Any]],
        request_text: str | None,
        now: datetime,
    ) -> tuple[Measurements, list[Event]]:
        """Everything `reconcile` needs measured now, and events about the request annotation."""
        events: list[Event] = []
        key = (md.namespace, md.name)
        request = parse_request(request_text)
        if isinstance(request, str):
            if self._warned.get(key) != request_text:
                events.append(Event("Warning", "InvalidRequest", request))
                self._warned[key] = request_text or ""
            request = None
        gates: dict[str, Gates] = {}
        analysis = None
        canary, stable = status.canary, status.stable
        if canary is not None and stable is not None:
            canary_pods = _revision_pods(pods, canary.revision)
            stable_pods = _revision_pods(pods, stable.revision)
            canary_targets = RevisionTarget(canary.revision, tuple(_targets(canary_pods)))
            stable_targets = RevisionTarget(stable.revision, tuple(_targets(stable_pods)))
            if canary.verified_at is None:
                gates[canary.revision], untrusted = await self._pre_traffic(
                    md, canary.revision, list(canary_targets.pods), list(stable_targets.pods)
                )
                if untrusted is not None and self._untrusted.get(key) != untrusted:
                    events.append(Event("Warning", "TLSNotVerified", untrusted))
                    self._untrusted[key] = untrusted
            elif self._analysis_due(md, status, now):
                since = parse_timestamp(canary.verified_at)
                if status.last_analysis is not None:
                    since = max(since, parse_timestamp(status.last_analysis.at))
                problem = canary_pod_problem([pod_health(p) for p in canary_pods], since=since)
                analysis = await metric_providers.analyse(
                    self.providers.for_deployment(md),
                    md,
                    canary_targets,
                    stable_targets,
                    problem,
                    now,
                    mirroring=canary.shadow_percent > 0,
                )
                analysis = await self._with_examples(md, analysis, canary.revision, stable_targets)
        return Measurements(gates=gates, analysis=analysis, request=request), events

    async def _with_examples(
        self,
        md: ModelDeployment,
        analysis: AnalysisResult,
        canary: str,
        stable: RevisionTarget,
    ) -> AnalysisResult:
        """The analysis with the stable servers' latest disagreeing requests, when the spec
        asks for them (analysis.agreement.examples) and answers were compared. Best effort:
        a server that does not answer adds none (the verdict does not depend on them)."""
        rule = md.spec.rollout.analysis.agreement
        if rule is None or not rule.examples or analysis.agreement is None:
            return analysis
        found: list[DisagreementExample] = []
        for pod in stable.pods:
            try:
                response = await self.providers.servers.get(
                    pod, "/shadow/examples", timeout=EXAMPLES_TIMEOUT
                )
                listed = response.json().get("examples") if response.status_code == 200 else []
                found += [
                    DisagreementExample.model_validate(e)
                    for e in listed or []
                    if isinstance(e, dict) and e.get("canaryRevision") == canary
                ]
            except (httpx.HTTPError, ValueError, AttributeError, TrustError):
                continue
        latest = sorted(found, key=lambda e: e.at)[-rule.examples :]
        agreement = analysis.agreement.model_copy(update={"examples": latest})
        return analysis.model_copy(update={"agreement": agreement})

    async def settle(
        self,
        md: ModelDeployment,
        old: ModelDeploymentStatus,
        new: ModelDeploymentStatus,
        pods: list[Mapping[str, Any]],
    ) -> None:
        """After a reconcile: a canary verified by it gets traffic from now on, so its first
        analysis window opens now (the direct provider scrapes), and the analysis due one
        interval later counts instead of only opening windows."""
        canary, stable = new.canary, new.stable
        if canary is None or stable is None or canary.verified_at is None:
            return
        if old.canary is not None and old.canary.verified_at == canary.verified_at:
            return
        await self.providers.for_deployment(md).open_window(
            md,
            RevisionTarget(canary.revision, tuple(_targets(_revision_pods(pods, canary.revision)))),
            RevisionTarget(stable.revision, tuple(_targets(_revision_pods(pods, stable.revision)))),
        )

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is kept for a ModelDeployment (deleted, or its rollout ended)."""
        self.providers.forget(namespace, name)
        self._untrusted.pop((namespace, name), None)
        for key in [k for k in self._gates if k[:2] == (namespace, name)]:
            del self._gates[key]

    async def aclose(self) -> None:
        await self.providers.aclose()

    @staticmethod
    def _analysis_due(md: ModelDeployment, status: ModelDeploymentStatus, now: datetime) -> bool:
        """An interval has passed since the last analysis, or since the canary was verified:
        the window that ends now then begins after the gate, and counts."""
        canary = status.canary
        assert canary is not None
        assert canary.verified_at is not None
        since = parse_timestamp(canary.verified_at)
        if status.last_analysis is not None:
            since = max(since, parse_timestamp(status.last_analysis.at))
        interval = timedelta(seconds=duration_seconds(md.spec.rollout.analysis.interval))
        return now - since >= interval

    async def _pre_traffic(
        self, md: ModelDeployment, revision: str, canary: list[PodTarget], stable: list[PodTarget]
    ) -> tuple[Gates, str | None]:
        """Each gate that applies and has no result yet, run on a ready canary server; and why
        a server could not be verified over TLS, if one could not."""
        key = (md.namespace, md.name, revision)
        known = self._gates.get(key, {})
        found: Gates = {}
        untrusted = None
        for gate in GATES:
            if not gate.applies(md.spec):
                continue
            result = known.get(gate.name)
            if result is None and canary:
                runner = RUNNERS[gate.name]
                try:
                    result = await runner(
                        self.providers.servers, md, canary[0], stable[0] if stable else None
                    )
                except TrustError as error:
                    untrusted = f"pre-traffic check {gate.name} cannot trust a server: {error}"
            found[gate.name] = result
        self._gates[key] = found
        return found, untrusted
