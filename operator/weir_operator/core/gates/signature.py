"""The signature gate: the canary's model takes and returns the same tensors as the stable's
(V2 model metadata: names, datatypes, shapes), unless `rollout.allowSignatureChange`. A model
whose inputs changed would answer every client request with 400."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from weir_operator.core.spec import ModelDeploymentSpec


def same_signature(canary: Mapping[str, Any], stable: Mapping[str, Any]) -> tuple[bool, str]:
    """Compare two V2 model metadata answers by their inputs and outputs: (same, differences)."""

    def tensors(meta: Mapping[str, Any], kind: str) -> list[tuple[Any, Any, Any]]:
        found = meta.get(kind) or []
        return sorted(
            (str(t.get("name")), t.get("datatype"), list(t.get("shape") or [])) for t in found
        )

    differences = [
        f"{kind}: canary {tensors(canary, kind)} != stable {tensors(stable, kind)}"
        for kind in ("inputs", "outputs")
        if tensors(canary, kind) != tensors(stable, kind)
    ]
    return not differences, "; ".join(differences)


class SignatureGate:
    name = "signature"
    failure_reason = "SignatureMismatch"

    def applies(self, spec: ModelDeploymentSpec) -> bool:
        return not spec.rollout.allow_signature_change

    def waiting(self) -> str:
        return "model signature not compared with stable's yet"

    def passed(self) -> str:
        return "model signature matches stable's"

    def skipped(self) -> str | None:
        return "signature not compared (allowSignatureChange)"

    def failed(self, message: str) -> str:
        return f"model signature differs from stable's: {message}"
