"""The sample-input gate: with `server.sampleInput`, a canary server must answer that infer
request without an error before the canary gets traffic."""

from __future__ import annotations

from weir_operator.core.spec import ModelDeploymentSpec


class SampleInputGate:
    name = "sampleInput"
    failure_reason = "SampleInferenceFailed"

    def applies(self, spec: ModelDeploymentSpec) -> bool:
        return spec.server.sample_input is not None

    def waiting(self) -> str:
        return "sample inference not run yet"

    def passed(self) -> str:
        return "sample inference succeeded"

    def skipped(self) -> str | None:
        return None

    def failed(self, message: str) -> str:
        return f"sample inference failed: {message}"
