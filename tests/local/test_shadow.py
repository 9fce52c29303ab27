"""Shadow steps in `weir run`, end to end: the stable's real servers copy live requests to the
canary's (weir_server.shadow), the canary's answers are compared with the stable's, and the
rollout is decided on them (core/checks/agreement.py) while every client answer comes from the
stable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.local_run import LocalRun, Traffic, manifest, write_manifests
from weir_server import sample_models

SHADOW_STEPS = [{"shadow": {"percent": 50, "duration": "4s"}}, {"setWeight": 50}]
ANALYSIS = {
    "interval": "2s",
    "failureThreshold": 2,
    "minRequests": 5,
    "agreement": {"output": "probabilities", "compare": "top1", "minRate": 0.95, "minSamples": 10},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shadow-versions")
    return {
        "v1": sample_models.iris(folder / "v1.onnx"),
        "same": sample_models.iris(folder / "same.onnx"),  # the same weights: agrees
        "wrong": sample_models.iris(folder / "wrong.onnx", seed=99),  # fast, 200, wrong
        "erroring": sample_models.BUILDERS["iris_erroring"](folder / "erroring.onnx"),
    }


def iris(model: Path, version: str, examples: int = 0) -> dict[str, Any]:
    agreement: dict[str, Any] = {**ANALYSIS["agreement"], "examples": examples}  # type: ignore[dict-item]
    analysis = {**ANALYSIS, "agreement": agreement}
    rollout = {"steps": SHADOW_STEPS, "analysis": analysis}
    return manifest("iris", model, version, replicas=1, rollout=rollout)


def serving_v1(run: LocalRun, model: Path, examples: int = 0) -> Traffic:
    """Version 1 served and healthy, with traffic running (stop it)."""
    write_manifests(run.folder, iris(model, "1", examples))
    run.wait_up()
    run.wait_healthy("iris", "1")
    return Traffic(run.router_url).start()


def _if_rolled_back(status: dict[str, Any]) -> dict[str, Any] | None:
    return status if status.get("phase") == "RolledBack" else None


class TestAShadowStep:
    def test_a_wrong_model_is_rolled_back_in_shadow_and_no_client_ever_saw_it(
        self, local_run: LocalRun, models: dict[str, Path]
    ) -> None:
        traffic = serving_v1(local_run, models["v1"], examples=3)
        weights: set[int] = set()
        try:
            time.sleep(1)
            local_run.set_model("iris", models["wrong"], "2")

            def rolled_back() -> dict[str, Any] | None:
                status = local_run.status("iris")
                weights.add((status.get("canary") or {}).get("weight", 0))
                return status if status.get("phase") == "RolledBack" else None

            status = local_run.eventually(rolled_back, within=90, what="the rollback")
        finally:
            counts = traffic.stop()
        assert traffic.failures() == 0, counts
        assert weights == {0}, "the canary never had weight: no client got its answer"
        last = status["history"][0]
        assert (last["outcome"], last["version"]) == ("RolledBack", "2")
        assert "mirrored rows agreed (top1 on probabilities)" in last["reason"], last
        agreement = status["lastAnalysis"]["agreement"]
        assert agreement["samples"] >= 10
        assert agreement["rate"] < 0.95
        rolled = next(c for c in status["conditions"] if c["type"] == "RolledBack")
        assert rolled["reason"] == "AgreementFailed"
        # Asked for (examples: 3): what the canary got wrong, with both answers.
        examples = agreement["examples"]
        assert 1 <= len(examples) <= 3, examples
        for example in examples:
            assert example["output"] == "probabilities"
            assert example["stable"] != example["canary"]
            assert example["request"]["inputs"][0]["name"] == "input"

    def test_no_examples_are_kept_unless_asked(
        self, local_run: LocalRun, models: dict[str, Path]
    ) -> None:
        traffic = serving_v1(local_run, models["v1"])
        try:
            time.sleep(1)
            local_run.set_model("iris", models["wrong"], "2")
            status = local_run.eventually(
                lambda: _if_rolled_back(local_run.status("iris")), within=90, what="the rollback"
            )
        finally:
            traffic.stop()
        assert status["lastAnalysis"]["agreement"].get("examples", []) == []

    def test_an_agreeing_model_goes_on_to_weight_and_is_promoted(
        self, local_run: LocalRun, models: dict[str, Path]
    ) -> None:
        traffic = serving_v1(local_run, models["v1"])
        compared: list[float] = []
        try:
            time.sleep(1)
            local_run.set_model("iris", models["same"], "2")

            def in_shadow_with_samples() -> dict[str, Any] | None:
                status = local_run.status("iris")
                agreement = (status.get("lastAnalysis") or {}).get("agreement") or {}
                if agreement.get("samples"):
                    compared.append(agreement["rate"])
                return status if compared else None

            local_run.eventually(in_shadow_with_samples, within=60, what="a compared window")
            status = local_run.wait_healthy("iris", "2", within=90)
        finally:
            counts = traffic.stop()
        assert traffic.failures() == 0, counts
        assert compared, "no window compared answers"
        assert min(compared) == 1.0, compared
        assert status["history"][0]["outcome"] == "Promoted"


class TestTheCanarysOwnHealthInTheShadow:
    def test_a_canary_failing_one_request_in_five_is_rolled_back_with_no_client_failed(
        self, local_run: LocalRun, models: dict[str, Path]
    ) -> None:
        traffic = serving_v1(local_run, models["v1"])
        weights: set[int] = set()
        try:
            time.sleep(1)
            local_run.set_model("iris", models["erroring"], "2")

            def rolled_back() -> dict[str, Any] | None:
                status = local_run.status("iris")
                weights.add((status.get("canary") or {}).get("weight", 0))
                return _if_rolled_back(status)

            status = local_run.eventually(rolled_back, within=90, what="the rollback")
        finally:
            counts = traffic.stop()
        assert traffic.failures() == 0, counts
        assert weights == {0}
        assert "error rate" in status["history"][0]["reason"], status["history"][0]

    def test_with_no_traffic_a_shadow_step_holds_never_promoted_never_failed(
        self, local_run: LocalRun, models: dict[str, Path]
    ) -> None:
        write_manifests(local_run.folder, iris(models["v1"], "1"))
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        local_run.set_model("iris", models["wrong"], "2")  # wrong, but nothing to compare

        def paused() -> dict[str, Any] | None:
            status = local_run.status("iris")
            return status if status.get("phase") == "Paused" else None

        local_run.eventually(paused, within=60, what="held in shadow")
        time.sleep(6)  # several more intervals: still held
        status = local_run.status("iris")
        assert status["phase"] == "Paused"
        assert (status["canary"]["weight"], status["canary"]["shadowPercent"]) == (0, 50)
        assert status["stable"]["version"] == "1"
        held = next(c for c in status["conditions"] if c["type"] == "Paused")
        assert "held in shadow" in held["message"], held
