"""What an operator (or `weir run`) refuses to serve although the spec is valid: rules an
administrator sets for every ModelDeployment it reconciles (`weir operator --require-sha256`,
the chart's `policy.requireSha256`).

Why it exists apart from the schema: the CRD's rules hold in every cluster, while a policy is
one installation's choice. A refused ModelDeployment is Failed with the Ready condition
InvalidSpec naming the rule, exactly like an invalid one, and nothing else is touched: a
stable revision that is already serving keeps serving."""

from __future__ import annotations

from dataclasses import dataclass

from weir_operator.core.spec import ModelDeploymentSpec


@dataclass(frozen=True, slots=True)
class Policy:
    # every spec.model, and every spec.monitoring.reference (fetched and trusted the same
    # way: a reference swapped in a bucket would silence drift), must name its sha256
    require_sha256: bool = False


def refusals(policy: Policy, spec: ModelDeploymentSpec) -> list[str]:
    """Why this policy refuses the spec, one line per rule; empty when it is served."""
    problems = []
    if policy.require_sha256 and spec.model.sha256 is None:
        problems.append(
            "spec.model.sha256: this operator serves only models with a sha256 "
            "(--require-sha256); add the model file's sha256 (sha256sum FILE)"
        )
    monitoring = spec.monitoring
    reference = monitoring.reference if monitoring is not None else None
    if policy.require_sha256 and reference is not None and reference.sha256 is None:
        problems.append(
            "spec.monitoring.reference.sha256: this operator serves only references with a "
            "sha256 (--require-sha256); add the reference file's sha256 (sha256sum FILE)"
        )
    return problems
