"""The pure reconcile step: from a ModelDeployment, its status and what the cluster shows, the
children to apply and delete, the next status and the events — over a whole life cycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from weir_operator.core.gates import GateResult
from weir_operator.core.observe import observe, pod_problem
from weir_operator.core.reconcile import (
    DRAIN_SECONDS,
    Measurements,
    Observed,
    Plan,
    RevisionState,
    reconcile,
    status_patch,
)
from weir_operator.core.render import revision_of
from weir_operator.core.requests import Request
from weir_operator.core.spec import ModelDeployment, parse_model_deployment
from weir_operator.core.status import AnalysisResult, ModelDeploymentStatus, Verdict, timestamp

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ROLLOUT = {"steps": [{"setWeight": 50}], "analysis": {"interval": "5s", "failureThreshold": 2}}
REVISION = "serving.weir.dev/revision"
INSTANCE = {"app.kubernetes.io/name": "weir-server", "app.kubernetes.io/instance": "iris"}


def md(version: str = "1", replicas: int = 2, **spec: Any) -> ModelDeployment:
    return parse_model_deployment(
        {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 3},
            "spec": {
                "model": {"uri": f"https://m.example.com/iris-{version}.onnx", "version": version},
                "replicas": replicas,
                **spec,
            },
        }
    )


def ready(
    model: ModelDeployment, replicas: int | None = None, revision: str | None = None, **extra: Any
) -> RevisionState:
    revision = revision or revision_of(model.spec)
    count = model.spec.replicas if replicas is None else replicas
    return RevisionState(
        revision=revision,
        name=f"iris-{revision[:10]}",
        replicas=count,
        ready_replicas=count,
        updated_replicas=count,
        **extra,
    )


def seen(*states: RevisionState) -> Observed:
    return Observed(
        revisions={s.revision: s for s in states},
        children=frozenset(("Deployment", s.name) for s in states),
    )


def passed(revision: str) -> Measurements:
    """The pre-traffic checks of `revision` passed."""
    return Measurements(gates={revision: {"signature": GateResult(True)}})


def result(verdict: Verdict, since: datetime, at: datetime) -> AnalysisResult:
    return AnalysisResult(
        at=timestamp(at), since=timestamp(since), verdict=verdict, reason=f"{verdict} window"
    )


def deployment(plan: Plan, revision: str) -> dict[str, Any]:
    return next(c for c in plan.apply if c["metadata"]["name"] == f"iris-{revision[:10]}")


def serving_selector(plan: Plan) -> dict[str, str]:
    service = next(c for c in plan.apply if c["metadata"]["name"] == "iris")
    selector: dict[str, str] = service["spec"]["selector"]
    return selector


def kinds(plan_apply: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["kind"], c["metadata"]["name"]) for c in plan_apply]


class TestFirstRevision:
    def test_becomes_stable_directly_and_children_are_created(self) -> None:
        model = md()
        plan = reconcile(model, ModelDeploymentStatus(), Observed(), T0)
        revision = revision_of(model.spec)
        assert plan.status.stable is not None
        assert plan.status.stable.revision == revision
        assert plan.status.canary is None
        assert plan.status.phase == "Pending"
        assert kinds(plan.apply) == [
            ("Deployment", f"iris-{revision[:10]}"),
            ("Service", "iris"),
            ("Service", "iris-stable"),
            ("Service", "iris-canary"),
            ("PodDisruptionBudget", "iris"),
            ("ConfigMap", "iris-shadow"),
        ]
        assert [e.reason for e in plan.events] == ["Created"]
        assert plan.status.observed_generation == 3
        assert (
            plan.status.selector
            == "app.kubernetes.io/name=weir-server,app.kubernetes.io/instance=iris"
        )

    def test_is_healthy_once_every_server_is_ready(self) -> None:
        model = md()
        first = reconcile(model, ModelDeploymentStatus(), Observed(), T0)
        revision = revision_of(model.spec)
        half = RevisionState(
            revision=revision,
            name=f"iris-{revision[:10]}",
            replicas=2,
            ready_replicas=1,
            updated_replicas=2,
        )
        starting = reconcile(model, first.status, seen(half), T0)
        assert starting.status.phase == "Progressing"
        healthy = reconcile(model, starting.status, seen(ready(model)), T0 + timedelta(seconds=5))
        assert healthy.status.phase == "Healthy"
        assert healthy.status.ready_text == "2/2"
        (condition,) = [c for c in healthy.status.conditions if c.type == "Ready"]
        assert condition.status == "True"
        assert [e.reason for e in healthy.events] == ["Healthy"]
        again = reconcile(model, healthy.status, seen(ready(model)), T0 + timedelta(seconds=10))
        assert again.status == healthy.status, "a converged object needs no status write"
        assert again.events == []


class TestNewRevision:
    def settled(self) -> tuple[ModelDeployment, ModelDeploymentStatus]:
        model = md("1")
        status = reconcile(model, ModelDeploymentStatus(), Observed(), T0).status
        status = reconcile(model, status, seen(ready(model)), T0).status
        return model, status

    def test_a_canary_gets_traffic_after_its_checks_moves_on_a_pass_and_is_promoted(
        self,
    ) -> None:
        old_model, status = self.settled()
        new_model = md("2", rollout=ROLLOUT)
        old, new = revision_of(old_model.spec), revision_of(new_model.spec)
        started = reconcile(new_model, status, seen(ready(old_model)), T0)
        assert started.status.canary is not None
        assert started.status.canary.revision == new
        assert started.status.phase == "Progressing"
        assert deployment(started, new)["spec"]["replicas"] == 1, "one server to verify"
        assert [e.reason for e in started.events] == ["RolloutStarted"]
        assert serving_selector(started) == {**INSTANCE, REVISION: old}, "no canary traffic"

        one_ready = seen(ready(old_model), ready(new_model, 1))
        unchecked = reconcile(new_model, started.status, one_ready, T0 + timedelta(seconds=2))
        assert unchecked.status.canary is not None
        assert unchecked.status.canary.weight == 0, "ready is not enough: the signature is unknown"
        assert serving_selector(unchecked) == {**INSTANCE, REVISION: old}

        t1 = T0 + timedelta(seconds=3)
        checked = reconcile(new_model, unchecked.status, one_ready, t1, measured=passed(new))
        assert checked.status.canary is not None
        assert checked.status.canary.weight == 50
        assert serving_selector(checked) == INSTANCE, "weight > 0: both revisions serve"
        assert deployment(checked, old)["spec"]["replicas"] == 1
        assert deployment(checked, new)["spec"]["replicas"] == 1
        assert "template" not in deployment(checked, old)["spec"], "the old template is kept"

        t2 = t1 + timedelta(seconds=6)
        window = Measurements(gates=passed(new).gates, analysis=result("Pass", t1, t2))
        stepped = reconcile(new_model, checked.status, one_ready, t2, measured=window)
        assert stepped.status.canary is not None, "promoted only once all canary servers are ready"
        assert deployment(stepped, new)["spec"]["replicas"] == 2

        both = seen(ready(old_model, 1), ready(new_model))
        t3 = t2 + timedelta(seconds=2)
        promoted = reconcile(new_model, stepped.status, both, t3, measured=window)
        assert promoted.status.stable is not None
        assert promoted.status.stable.revision == new
        assert promoted.status.canary is None
        assert promoted.status.phase == "Healthy"
        assert promoted.status.history[0].outcome == "Promoted"
        assert "Promoted" in [e.reason for e in promoted.events]
        assert promoted.ended
        assert promoted.delete == [], "the old revision drains before it goes"
        stable_service = next(c for c in promoted.apply if c["metadata"]["name"] == "iris-stable")
        assert stable_service["spec"]["selector"][REVISION] == new
        assert serving_selector(promoted) == {**INSTANCE, REVISION: new}

        later = reconcile(new_model, promoted.status, both, t3 + timedelta(seconds=DRAIN_SECONDS))
        assert later.delete == [("Deployment", f"iris-{old[:10]}")]

    def test_failing_analyses_roll_back_to_weight_zero_after_the_threshold(self) -> None:
        old_model, status = self.settled()
        new_model = md("2", rollout=ROLLOUT)
        new = revision_of(new_model.spec)
        one_ready = seen(ready(old_model), ready(new_model, 1))
        status = reconcile(new_model, status, one_ready, T0, measured=passed(new)).status
        assert status.canary is not None
        assert status.canary.weight == 50
        t1 = T0 + timedelta(seconds=6)
        first = reconcile(
            new_model, status, one_ready, t1, measured=Measurements(analysis=result("Fail", T0, t1))
        )
        assert first.status.canary is not None
        assert first.status.canary.failed_checks == 1
        t2 = t1 + timedelta(seconds=6)
        rolled = reconcile(
            new_model,
            first.status,
            one_ready,
            t2,
            measured=Measurements(analysis=result("Fail", t1, t2)),
        )
        assert rolled.status.canary is None
        assert rolled.status.phase == "RolledBack"
        assert rolled.status.rolled_back_revision == new
        assert serving_selector(rolled) == {**INSTANCE, REVISION: revision_of(old_model.spec)}
        assert ("Deployment", f"iris-{new[:10]}") not in kinds(rolled.apply)
        assert rolled.ended
        assert any(e.reason == "RolledBack" for e in rolled.events)
        again = reconcile(new_model, rolled.status, one_ready, t2 + timedelta(seconds=30))
        assert again.status.canary is None, "the rolled-back spec is held until retry"

    def test_a_spec_change_mid_rollout_never_touches_the_stable_template(self) -> None:
        old_model, status = self.settled()
        started = reconcile(md("2"), status, seen(ready(old_model)), T0)
        third = md("3")
        plan = reconcile(third, started.status, seen(ready(old_model)), T0)
        old = revision_of(old_model.spec)
        stable = deployment(plan, old)
        assert stable["spec"] == {"replicas": 2}
        assert stable["metadata"]["labels"]["serving.weir.dev/track"] == "stable"
        assert plan.status.canary is not None
        canary = deployment(plan, revision_of(third.spec))
        assert "iris-3.onnx" in str(canary["spec"]["template"])

    def test_an_undo_request_restores_the_stable_model_into_the_spec(self) -> None:
        old_model, status = self.settled()
        started = reconcile(md("2"), status, seen(ready(old_model)), T0)
        undo = Measurements(request=Request(id="r-1", action="undo"))
        plan = reconcile(md("2"), started.status, seen(ready(old_model)), T0, measured=undo)
        assert plan.restore is not None
        assert plan.restore.revision == revision_of(old_model.spec)
        assert plan.restore.uri == old_model.spec.model.uri
        assert plan.status.last_request is not None
        assert plan.status.last_request.accepted

    def test_a_canary_whose_model_cannot_be_fetched_is_rolled_back(self) -> None:
        old_model, status = self.settled()
        new_model = md("2")
        started = reconcile(new_model, status, seen(ready(old_model)), T0)
        broken = RevisionState(
            revision=revision_of(new_model.spec),
            name="iris-new",
            replicas=2,
            problem=("ModelFetchFailed", "sha256 mismatch"),
        )
        rolled = reconcile(new_model, started.status, seen(ready(old_model), broken), T0)
        assert rolled.status.canary is None
        assert rolled.status.stable == status.stable
        assert rolled.status.history[0].outcome == "Failed"
        assert "sha256 mismatch" in rolled.status.history[0].reason
        assert any(e.type == "Warning" and e.reason == "RolledBack" for e in rolled.events)
        assert ("Deployment", "iris-new") in rolled.delete

    def test_a_replica_change_is_not_a_new_revision(self) -> None:
        old_model, status = self.settled()
        scaled = md("1", replicas=5)
        plan = reconcile(scaled, status, seen(ready(old_model)), T0)
        assert plan.status.canary is None
        deployment = next(c for c in plan.apply if c["kind"] == "Deployment")
        assert deployment["spec"]["replicas"] == 5

    def test_going_back_to_the_stable_spec_aborts_the_canary(self) -> None:
        old_model, status = self.settled()
        started = reconcile(md("2"), status, seen(ready(old_model)), T0)
        back = reconcile(old_model, started.status, seen(ready(old_model)), T0)
        assert back.status.canary is None
        assert back.status.history[0].outcome == "Aborted"


def test_cpu_autoscaling_leaves_replicas_to_the_hpa() -> None:
    model = md(autoscaling={"metric": "cpu", "minReplicas": 2, "maxReplicas": 4, "target": 60})
    plan = reconcile(model, ModelDeploymentStatus(), Observed(), T0)
    deployment = next(c for c in plan.apply if c["kind"] == "Deployment")
    assert "replicas" not in deployment["spec"]
    assert any(c["kind"] == "HorizontalPodAutoscaler" for c in plan.apply)


def test_leaving_gateway_api_deletes_the_httproute_once() -> None:
    gateway = md(traffic={"router": "gateway-api", "gateway": {"parentRefs": [{"name": "gw"}]}})
    routed = reconcile(gateway, ModelDeploymentStatus(), seen(ready(gateway)), T0)
    assert ("HTTPRoute", "iris") in kinds(routed.apply)
    assert routed.status.router == "gateway-api"
    again = reconcile(gateway, routed.status, seen(ready(gateway)), T0)
    assert ("HTTPRoute", "iris") not in again.delete

    replicas = md()  # same model and server: the same revision, no rollout
    left = reconcile(replicas, again.status, seen(ready(replicas)), T0)
    assert ("HTTPRoute", "iris") not in kinds(left.apply)
    assert ("HTTPRoute", "iris") in left.delete
    assert left.status.router == "replicas"
    after = reconcile(replicas, left.status, seen(ready(replicas)), T0)
    assert ("HTTPRoute", "iris") not in after.delete, "deleted once, not on every reconcile"
    assert reconcile(replicas, ModelDeploymentStatus(), Observed(), T0).delete == []


def test_a_crash_looping_stable_revision_is_reported_with_its_reason() -> None:
    model = md()
    status = reconcile(model, ModelDeploymentStatus(), Observed(), T0).status
    crashing = RevisionState(
        revision=revision_of(model.spec),
        name="x",
        replicas=2,
        problem=("CrashLoopBackOff", "model failed to load"),
    )
    plan = reconcile(model, status, seen(crashing), T0)
    assert plan.status.phase == "Failed"
    ready_condition = next(c for c in plan.status.conditions if c.type == "Ready")
    assert (ready_condition.status, ready_condition.reason, ready_condition.message) == (
        "False",
        "CrashLoopBackOff",
        "model failed to load",
    )


class TestObserve:
    def test_a_failed_fetch_model_init_container_is_a_model_fetch_failure(self) -> None:
        pod = {
            "status": {
                "initContainerStatuses": [
                    {
                        "name": "fetch-model",
                        "state": {
                            "terminated": {
                                "exitCode": 1,
                                "message": "downloading\nweir fetch-model: error: sha256 mismatch",
                            }
                        },
                    }
                ]
            }
        }
        assert pod_problem(pod) == ("ModelFetchFailed", "weir fetch-model: error: sha256 mismatch")

    def test_crash_loops_and_image_pull_errors_are_problems_but_starting_is_not(self) -> None:
        crash = {
            "status": {
                "containerStatuses": [
                    {
                        "name": "server",
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"message": "boom"}},
                    }
                ]
            }
        }
        assert pod_problem(crash) == ("CrashLoopBackOff", "boom")
        starting = {
            "status": {
                "containerStatuses": [
                    {"name": "server", "state": {"waiting": {"reason": "ContainerCreating"}}}
                ]
            }
        }
        assert pod_problem(starting) is None

    def test_deployments_are_summarised_by_revision(self) -> None:
        deployment = {
            "metadata": {"name": "iris-abc", "labels": {"serving.weir.dev/revision": "abc"}},
            "spec": {"replicas": 3},
            "status": {"readyReplicas": 2, "updatedReplicas": 3},
        }
        observed = observe(
            [deployment],
            [],
            [{"kind": "HorizontalPodAutoscaler", "metadata": {"name": "iris-abc"}}],
        )
        assert observed.revisions["abc"] == RevisionState("abc", "iris-abc", 3, 2, 3)
        assert observed.children == {
            ("Deployment", "iris-abc"),
            ("HorizontalPodAutoscaler", "iris-abc"),
        }


def test_status_patch_sets_changes_and_nulls_removed_keys() -> None:
    assert status_patch({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"b": None, "c": 3}
    assert status_patch({"a": 1}, {"a": 1}) == {}


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["1", "2", "3"]), st.integers(0, 4), st.integers(0, 4), st.booleans()
        ),
        min_size=1,
        max_size=12,
    )
)
def test_any_sequence_of_specs_and_observations_keeps_a_valid_status(
    steps: list[tuple[str, int, int, bool]],
) -> None:
    status = ModelDeploymentStatus()
    now = T0
    for version, replicas, ready_count, broken in steps:
        model = md(version, replicas=replicas)
        revision = revision_of(model.spec)
        state = RevisionState(
            revision=revision,
            name=f"iris-{revision[:10]}",
            replicas=replicas,
            ready_replicas=min(ready_count, replicas),
            updated_replicas=replicas,
            problem=("CrashLoopBackOff", "x") if broken else None,
        )
        plan = reconcile(model, status, seen(state), now)
        ModelDeploymentStatus.model_validate(plan.status.model_dump(by_alias=True))
        assert plan.status.stable is not None
        assert (
            plan.status.canary is None or plan.status.canary.revision != plan.status.stable.revision
        )
        assert plan.status.ready_replicas <= plan.status.replicas + replicas
        names = [(c["kind"], c["metadata"]["name"]) for c in plan.apply]
        assert len(names) == len(set(names)), "each child rendered once"
        assert not set(plan.delete) & set(names), "never delete what is applied"
        status = plan.status
        now += timedelta(seconds=7)
