"""The autoscaler's shell (`Autoscalers`), as a specification: it measures the serving pods
(here a scraper stand-in with counters the test sets and a clock the test moves) and decides one
count for the whole load; during a rollout behind an exact-weight router it also decides each
revision's own count from that revision's pods alone, each with its own scale-down window."""

from __future__ import annotations

import math
from typing import Any, cast

import pytest

from weir_operator.core.analysis import PodSample
from weir_operator.core.render import REVISION_LABEL
from weir_operator.core.spec import ModelDeployment, parse_model_deployment
from weir_operator.core.status import CanaryStatus, ModelDeploymentStatus, RevisionRef
from weir_operator.probes.autoscaler import Autoscalers
from weir_operator.providers.base import PodTarget
from weir_operator.providers.direct import DirectProvider

STABLE, CANARY = "a" * 16, "b" * 16
DELAY = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Scraper:
    """Pods whose request counters grow at the rates set, read at the clock's time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.rps: dict[str, float] = {}
        self.requests: dict[str, float] = {}
        self.read_at: dict[str, float] = {}
        self.silent: set[str] = set()

    async def scrape(self, targets: list[tuple[str, PodTarget]]) -> list[PodSample | str]:
        out: list[PodSample | str] = []
        for revision, target in targets:
            if target.name in self.silent:
                out.append(f"{target.name}: timed out")
                continue
            now = self.clock()
            since = self.read_at.get(target.name, now)
            count = self.requests.get(target.name, 0.0) + self.rps.get(target.name, 0.0) * (
                now - since
            )
            self.requests[target.name], self.read_at[target.name] = count, now
            out.append(PodSample(target.name, revision, now, count, 0.0, {math.inf: count}))
        return out


def model(router: str) -> ModelDeployment:
    traffic: dict[str, Any] = {"router": router}
    if router == "gateway-api":
        traffic["gateway"] = {"parentRefs": [{"name": "public"}]}
    return parse_model_deployment(
        {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "generation": 1},
            "spec": {
                "model": {"uri": "https://m.example.com/iris.onnx"},
                "traffic": traffic,
                "autoscaling": {
                    "metric": "rps",
                    "target": 10,
                    "minReplicas": 1,
                    "maxReplicas": 8,
                    "scaleDownDelay": f"{DELAY:g}s",
                },
            },
        }
    )


def rolling_out() -> ModelDeploymentStatus:
    stable = RevisionRef(revision=STABLE, uri="file:///v1.onnx")
    canary = CanaryStatus(revision=CANARY, uri="file:///v2.onnx", weight=50, set_weight=50)
    return ModelDeploymentStatus(stable=stable, canary=canary, replicas=5)


def pod(name: str, revision: str, index: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {REVISION_LABEL: revision}},
        "status": {
            "podIP": f"127.0.9.{index}",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


class World:
    def __init__(self, router: str = "gateway-api") -> None:
        self.per_track = router == "gateway-api"
        self.clock = Clock()
        self.scraper = Scraper(self.clock)
        self.autoscalers = Autoscalers(
            cast(DirectProvider, self.scraper), min_seconds=2.0, clock=self.clock
        )
        self.md = model(router)
        self.status = rolling_out()
        self.pods = [pod("s0", STABLE, 1), pod("s1", STABLE, 2), pod("c0", CANARY, 3)]
        self.counts: dict[str, int | None] = {STABLE: 4, CANARY: 1}

    def load(self, stable: float, canary: float) -> None:
        self.scraper.rps.update({"s0": stable / 2, "s1": stable / 2, "c0": canary})

    async def after(self, seconds: float) -> dict[str, int]:
        """The decision `seconds` from now, per revision ("total" for the whole load); the
        counts it decides become the counts in force, as the shells apply them."""
        self.clock.now += seconds
        decision = await self.autoscalers.decision_for(
            self.md, self.status, self.pods, counts=self.counts, per_track=self.per_track
        )
        assert decision is not None
        self.counts.update({r: d.replicas for r, d in decision.tracks.items()})
        return {"total": decision.replicas, **{r: d.replicas for r, d in decision.tracks.items()}}


class TestEachTrackOnItsOwnLoad:
    async def test_each_revision_gets_the_count_its_own_pods_load_asks_for(self) -> None:
        world = World()
        world.load(stable=25, canary=45)  # a slow canary: busier than its 50% share suggests
        await world.after(0)  # opens the windows: nothing to compare yet
        decided = await world.after(2)
        assert decided == {"total": 7, STABLE: 4, CANARY: 5}  # 70 rps; 25 -> 3 but 4 stay

    async def test_up_at_once_down_after_the_delay_each_with_its_own_window(self) -> None:
        world = World()
        world.load(stable=25, canary=45)
        await world.after(0)
        assert (await world.after(2))[STABLE] == 4  # t=2: 3 would do; waits out the delay
        for _ in range(5):  # the canary's last high reading: t=12
            await world.after(2)
        world.load(stable=25, canary=5)
        for _ in range(9):  # t=14..30
            decided = await world.after(2)
            assert (decided[STABLE], decided[CANARY]) == (4, 5), "no scale-down within the delay"
        decided = await world.after(2)  # t=32: a whole delay of lower readings for the stable
        assert (decided[STABLE], decided[CANARY]) == (3, 5)
        for _ in range(4):  # t=34..40
            assert (await world.after(2))[CANARY] == 5
        assert (await world.after(2))[CANARY] == 1  # t=42: 30 s after its last high reading
        world.load(stable=70, canary=5)
        assert (await world.after(2))[STABLE] == 7, "up at once"

    async def test_a_track_without_a_measurement_keeps_its_count(self) -> None:
        world = World()
        world.load(stable=25, canary=45)
        await world.after(0)
        await world.after(2)
        world.scraper.silent.add("c0")
        for _ in range(int(DELAY // 2) + 2):
            decided = await world.after(2)
        assert decided[CANARY] == 5, "no data, no action"

    async def test_between_measurements_the_last_decision_stands(self) -> None:
        world = World()
        world.load(stable=25, canary=45)
        await world.after(0)
        first = await world.after(2)
        world.load(stable=80, canary=80)
        assert await world.after(0.5) == first


class TestOneCountForTheWholeLoad:
    @pytest.mark.parametrize("router", ["replicas", "gateway-api"])
    async def test_without_a_canary_or_with_the_replicas_router_there_are_no_track_counts(
        self, router: str
    ) -> None:
        world = World(router)
        world.load(stable=25, canary=45)
        world.status = world.status.model_copy(update={"replicas": 1})
        if router == "gateway-api":
            world.status = world.status.model_copy(update={"canary": None})
        await world.after(0)
        decided = await world.after(2)
        assert list(decided) == ["total"], "no track counts"
        assert decided["total"] == (7 if router == "replicas" else 3)  # canary pods not serving
