"""How a canary weight becomes servers per track and the share of traffic they really give."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weir_operator.core.render import revision_of
from weir_operator.core.routers import ROUTERS, Split, router_named
from weir_operator.core.routers.replicas import replicas_split, replicas_split_beside
from weir_operator.core.routers.split import exact_split as gateway_split
from weir_operator.core.spec import parse_model_deployment


class TestReplicasRouter:
    @pytest.mark.parametrize(
        ("total", "weight", "expected"),
        [
            (10, 10, Split(stable_replicas=9, canary_replicas=1, canary_weight=10)),
            (10, 50, Split(stable_replicas=5, canary_replicas=5, canary_weight=50)),
            (4, 50, Split(stable_replicas=2, canary_replicas=2, canary_weight=50)),
            (3, 75, Split(stable_replicas=1, canary_replicas=2, canary_weight=67)),
        ],
    )
    def test_splits_whole_servers_closest_to_the_weight(
        self, total: int, weight: int, expected: Split
    ) -> None:
        assert replicas_split(total, weight) == expected

    def test_a_weight_below_one_servers_share_still_gets_one_canary_server(self) -> None:
        assert replicas_split(4, 5) == Split(stable_replicas=3, canary_replicas=1, canary_weight=25)

    def test_weight_zero_means_no_canary_server(self) -> None:
        assert replicas_split(4, 0) == Split(stable_replicas=4, canary_replicas=0, canary_weight=0)

    def test_the_stable_keeps_a_server_even_at_weight_100(self) -> None:
        assert replicas_split(4, 100) == Split(
            stable_replicas=1, canary_replicas=3, canary_weight=75
        )

    def test_with_one_server_in_all_the_canary_runs_one_more(self) -> None:
        assert replicas_split(1, 10) == Split(
            stable_replicas=1, canary_replicas=1, canary_weight=50
        )

    def test_a_tie_goes_to_the_smaller_canary(self) -> None:
        # 5 servers at 50%: 2 canary (40%) and 3 canary (60%) are equally far.
        assert replicas_split(5, 50).canary_replicas == 2

    @given(st.integers(1, 200), st.integers(1, 100))
    def test_always_the_closest_possible_share(self, total: int, weight: int) -> None:
        chosen = replicas_split(total, weight)
        assert chosen.canary_replicas >= 1
        assert chosen.stable_replicas >= 1
        assert chosen.stable_replicas + chosen.canary_replicas == max(total, 2)
        servers = chosen.stable_replicas + chosen.canary_replicas
        distance = abs(chosen.canary_replicas / servers - weight / 100)
        for canary in range(1, max(total - 1, 1) + 1):
            other = canary + max(total - canary, 1)
            assert distance <= abs(canary / other - weight / 100) + 1e-12
        assert chosen.canary_weight == round(100 * chosen.canary_replicas / servers + 1e-9)


class TestGatewayRouter:
    def test_weights_exactly_and_keeps_every_stable_server(self) -> None:
        assert gateway_split(4, 10) == Split(stable_replicas=4, canary_replicas=1, canary_weight=10)
        assert gateway_split(4, 60) == Split(stable_replicas=4, canary_replicas=3, canary_weight=60)
        assert gateway_split(4, 0) == Split(stable_replicas=4, canary_replicas=0, canary_weight=0)

    @given(st.integers(1, 200), st.integers(1, 100))
    def test_the_canary_has_servers_for_its_share(self, total: int, weight: int) -> None:
        chosen = router_named("gateway-api").split(total, weight)
        assert chosen.canary_weight == weight
        assert chosen.stable_replicas == total
        assert 1 <= chosen.canary_replicas <= total
        assert chosen.canary_replicas * 100 >= total * weight


class TestCapacityWhileTheCanaryGrows:
    def test_the_stable_gives_up_a_server_only_for_a_ready_canary_server(self) -> None:
        target = replicas_split(4, 50)  # 2 + 2
        assert router_named("replicas").serving_stable_replicas(4, target, canary_ready=0) == 4
        assert router_named("replicas").serving_stable_replicas(4, target, canary_ready=1) == 3
        assert router_named("replicas").serving_stable_replicas(4, target, canary_ready=2) == 2
        assert router_named("replicas").serving_stable_replicas(4, target, canary_ready=4) == 2

    def test_gateway_api_keeps_every_stable_server(self) -> None:
        target = gateway_split(4, 50)
        assert router_named("gateway-api").serving_stable_replicas(4, target, canary_ready=2) == 4

    @given(st.integers(1, 50), st.integers(0, 100), st.integers(0, 60))
    def test_ready_servers_never_drop_below_the_total(
        self, total: int, weight: int, canary_ready: int
    ) -> None:
        target = replicas_split(total, weight)
        stable = router_named("replicas").serving_stable_replicas(total, target, canary_ready)
        assert stable + min(canary_ready, target.canary_replicas) >= total
        assert stable >= target.stable_replicas


class TestTheFactory:
    def test_every_router_is_named_after_its_key_and_the_spec_enum_is_a_subset(self) -> None:
        from typing import get_args

        from weir_operator.core.spec import Traffic

        assert all(router.name == name for name, router in ROUTERS.items())
        spec_routers = get_args(Traffic.model_fields["router"].annotation)
        assert set(spec_routers) <= set(ROUTERS)
        assert set(ROUTERS) - set(spec_routers) == {"local"}, "local is weir run's own"

    def test_only_exact_weight_routers_let_each_track_scale_on_its_own_load(self) -> None:
        assert {n for n, r in ROUTERS.items() if r.exact_weights} == {"gateway-api", "local"}

    def test_gateway_api_owns_the_httproute_it_renders(self) -> None:
        md = parse_model_deployment({
            "apiVersion": "serving.weir.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {"model": {"uri": "https://m.example.com/iris.onnx"},
                     "traffic": {"router": "gateway-api", "gateway": {"parentRefs": [{"name": "gw"}]}}},
        })  # fmt: skip
        assert revision_of(md.spec)
        router = router_named("gateway-api")
        [route] = router.children(md, 30)
        assert route["kind"] in router.owned_kinds
        weights = [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]]
        assert weights == [70, 30]
        assert router_named("replicas").children(md, 30) == []
        assert router_named("local").children(md, 30) == []


class TestBesideAStableTheRolloutDoesNotOwn:
    """With cpu autoscaling the stable's HPA owns its count: the canary is sized beside it."""

    @given(stable=st.integers(1, 20), weight=st.integers(1, 99))
    def test_replicas_gives_the_closest_share_and_keeps_the_stable(
        self, stable: int, weight: int
    ) -> None:
        chosen = replicas_split_beside(stable, weight)
        assert chosen.stable_replicas == stable
        assert chosen.canary_replicas >= 1
        error = abs(chosen.canary_replicas / (stable + chosen.canary_replicas) - weight / 100)
        for other in range(1, 3 * stable + 3):
            assert error <= abs(other / (stable + other) - weight / 100) + 1e-9
        assert chosen.canary_weight == round(
            100 * chosen.canary_replicas / (stable + chosen.canary_replicas) + 1e-9
        )

    def test_examples(self) -> None:
        assert replicas_split_beside(4, 50) == Split(4, 4, 50)
        assert replicas_split_beside(4, 10) == Split(4, 1, 20)
        assert replicas_split_beside(3, 0) == Split(3, 0, 0)
        assert router_named("gateway-api").split_beside(4, 10) == Split(4, 1, 10)
