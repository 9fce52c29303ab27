"""The one reconcile driver (weir_operator/driver.py) with a port that records what it is asked:
the steps in order, one `now` per reconcile, the router's rules from the port, what a rollout's
end makes the probes forget, and what an invalid spec becomes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from weir_operator.core.policy import Policy, refusals
from weir_operator.core.reconcile import Observed, Plan
from weir_operator.core.render import revision_of
from weir_operator.core.routers import RouterName
from weir_operator.core.spec import ModelDeployment, parse_model_deployment
from weir_operator.core.status import Event, ModelDeploymentStatus, RevisionRef
from weir_operator.driver import ReconcileDriver, Superseded, World
from weir_operator.probes.autoscaler import Autoscalers
from weir_operator.probes.rollout import RolloutProber

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def md(version: str) -> ModelDeployment:
    return parse_model_deployment({
        "apiVersion": "serving.weir.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "iris", "generation": 2},
        "spec": {"model": {"uri": f"https://m.example.com/iris-{version}.onnx", "version": version}},
    })  # fmt: skip


class RecordingPort:
    def __init__(self, router: RouterName | None = None, supersede: bool = False) -> None:
        self.router = router
        self.supersede = supersede
        self.calls: list[str] = []
        self.events: list[Event] = []

    async def observe(self, md: ModelDeployment) -> World:
        self.calls.append("observe")
        return World(Observed(), [])

    async def apply(self, md: ModelDeployment, plan: Plan) -> None:
        self.calls.append("apply")
        if self.supersede:
            raise Superseded(md.name)

    def post(self, md: ModelDeployment, events: Sequence[Event]) -> None:
        self.calls.append("post")
        self.events += events


class ForgetfulProber(RolloutProber):
    def __init__(self) -> None:
        super().__init__()
        self.forgotten: list[tuple[str, str]] = []

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))
        super().forget(namespace, name)


@pytest.fixture
async def driver() -> Any:
    clock_calls: list[datetime] = []

    def clock() -> datetime:
        clock_calls.append(T0 + timedelta(seconds=len(clock_calls)))
        return clock_calls[-1]

    prober = ForgetfulProber()
    made = ReconcileDriver(prober, Autoscalers(prober.providers.direct), clock=clock)
    made.clock_calls = clock_calls  # type: ignore[attr-defined]
    yield made
    await made.aclose()


async def test_observe_measure_decide_apply_then_post_with_one_now(driver: Any) -> None:
    port = RecordingPort()
    plan = await driver.reconcile(port, md("1"), ModelDeploymentStatus(), None)
    assert port.calls == ["observe", "apply", "post"]
    assert len(driver.clock_calls) == 1, "one now per reconcile"
    assert plan.status.history[0].at == "2026-03-01T12:00:00Z"
    assert [e.reason for e in port.events] == ["Created"]


async def test_the_ports_router_is_the_one_the_rollout_follows(driver: Any) -> None:
    cluster = await driver.reconcile(RecordingPort(), md("1"), ModelDeploymentStatus(), None)
    local = await driver.reconcile(RecordingPort("local"), md("1"), ModelDeploymentStatus(), None)
    assert (cluster.status.router, local.status.router) == ("replicas", "local")


async def test_the_end_of_a_rollout_makes_the_probes_forget_it(driver: Any) -> None:
    v1, v2 = md("1"), md("2")
    stable = RevisionRef(revision=revision_of(v1.spec), uri=v1.spec.model.uri, version="1")
    rolling = ModelDeploymentStatus.model_validate({
        "phase": "Progressing", "stable": stable.model_dump(by_alias=True),
        "canary": {"revision": revision_of(v2.spec), "uri": v2.spec.model.uri, "weight": 0},
    })  # fmt: skip
    await driver.reconcile(RecordingPort(), v2, rolling, None)
    assert driver.prober.forgotten == [], "the rollout goes on"
    back = await driver.reconcile(RecordingPort(), v1, rolling, None)  # the spec went back
    assert back.ended
    assert driver.prober.forgotten == [("default", "iris")]


async def test_a_superseded_reconcile_posts_nothing(driver: Any) -> None:
    port = RecordingPort(supersede=True)
    with pytest.raises(Superseded):
        await driver.reconcile(port, md("1"), ModelDeploymentStatus(), None)
    assert port.calls == ["observe", "apply"]


def test_an_invalid_spec_is_failed_with_ready_invalid_spec(driver: Any) -> None:
    status = driver.invalid(ModelDeploymentStatus(), ["spec.replicas: must be >= 0"], 4)
    assert (status.phase, status.observed_generation) == ("Failed", 4)
    ready = status.conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", "InvalidSpec")
    assert ready.message == "spec.replicas: must be >= 0"


class TestRequireSha256Policy:
    @pytest.fixture
    async def strict(self) -> Any:
        prober = RolloutProber()
        made = ReconcileDriver(
            prober, Autoscalers(prober.providers.direct), policy=Policy(require_sha256=True)
        )
        yield made
        await made.aclose()

    async def test_a_model_without_sha256_is_failed_and_nothing_is_applied(
        self, strict: Any
    ) -> None:
        port = RecordingPort()
        serving = ModelDeploymentStatus.model_validate({"phase": "Healthy"})
        plan = await strict.reconcile(port, md("2"), serving, None)
        assert port.calls == [], "nothing observed, applied or deleted: the stable keeps serving"
        assert (plan.apply, plan.delete) == ([], [])
        ready = plan.status.conditions[0]
        assert (plan.status.phase, ready.reason) == ("Failed", "InvalidSpec")
        assert "spec.model.sha256" in ready.message
        assert "--require-sha256" in ready.message

    async def test_a_model_with_its_sha256_is_served(self, strict: Any) -> None:
        pinned = md("1").spec.model.model_copy(update={"sha256": "a" * 64})
        spec = md("1").spec.model_copy(update={"model": pinned})
        port = RecordingPort()
        plan = await strict.reconcile(
            port, md("1").model_copy(update={"spec": spec}), ModelDeploymentStatus(), None
        )
        assert port.calls == ["observe", "apply", "post"]
        assert plan.status.phase != "Failed"

    def test_by_default_no_sha256_is_required(self) -> None:
        assert refusals(Policy(), md("1").spec) == []

    def test_a_reference_without_sha256_is_refused_too_naming_it(self) -> None:
        pinned = md("1").spec.model.model_copy(update={"sha256": "a" * 64})
        document = {
            **md("1").spec.model_dump(by_alias=True, exclude_none=True),
            "model": pinned.model_dump(by_alias=True, exclude_none=True),
            "monitoring": {"reference": {"uri": "https://m.example.com/iris-1.reference.json"}},
        }
        spec = type(md("1").spec).model_validate(document)
        (problem,) = refusals(Policy(require_sha256=True), spec)
        assert problem.startswith("spec.monitoring.reference.sha256: ")
        assert "--require-sha256" in problem
        document["monitoring"]["reference"]["sha256"] = "b" * 64
        assert refusals(Policy(require_sha256=True), type(spec).model_validate(document)) == []
        assert refusals(Policy(), spec) == []
