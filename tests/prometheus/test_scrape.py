"""A real Prometheus scrapes the real `weir serve` processes of `weir run` as it would scrape
pods through the chart's PodMonitor: every server is a target that is up, and its series carry
the server's own labels (model, version, revision, track) and the pod's (namespace, pod, job)
that the analysis queries and the dashboard select on."""

from __future__ import annotations

from tests.prometheus.conftest import NAME, NAMESPACE, SERVED_MODEL, Story
from tests.support.prometheus import (
    OPERATOR_JOB,
    OPERATOR_JOB_LABEL,
    SERVERS_JOB,
    SERVERS_JOB_LABEL,
)


def running_servers(story: Story) -> dict[str, dict[str, object]]:
    """The stable's two servers, once the old and the rolled-back revisions' are gone."""

    def settled() -> dict[str, dict[str, object]] | None:
        servers = {s["name"]: s for s in story.run.servers(NAME) if s.get("state") == "running"}
        revisions = {s["revision"] for s in servers.values()}
        return servers if len(servers) == 2 and revisions == {story.stable_revision} else None

    return story.run.eventually(settled, 30, "only the stable's 2 servers run")


class TestEveryServer:
    def test_is_a_target_that_is_up_with_its_pods_labels(self, story: Story) -> None:
        servers = running_servers(story)
        targets = story.prometheus.wait_targets_up(SERVERS_JOB, len(servers))
        by_pod = {t["labels"]["pod"]: t for t in targets}
        assert by_pod.keys() == servers.keys()
        for pod, target in by_pod.items():
            assert target["scrapeUrl"] == f"http://127.0.0.1:{servers[pod]['port']}/metrics"
            assert target["labels"]["namespace"] == NAMESPACE
            assert target["labels"]["job"] == SERVERS_JOB_LABEL
            assert target["labels"]["container"] == "server"

    def test_exports_its_inference_series_with_the_labels_the_queries_select_on(
        self, story: Story
    ) -> None:
        revision = story.stable_revision
        selector = f'namespace="{NAMESPACE}", model="{SERVED_MODEL}", revision="{revision}"'
        pods = set(running_servers(story))

        def answered() -> dict[tuple[tuple[str, str], ...], float] | None:
            found = story.prometheus.values(
                f"sum by (pod, version) (increase(weir_inference_requests_total{{{selector}, "
                'code="200"}[10s]))'
            )
            return found if {dict(k)["pod"] for k, v in found.items() if v > 0} == pods else None

        counts = story.prometheus.eventually(
            answered, 20, f"both stable pods count requests: {pods}"
        )
        assert {dict(labels)["version"] for labels in counts} == {"2"}
        for series in (
            "weir_inference_request_duration_seconds_bucket",
            "weir_inference_in_flight_requests",
            "weir_inference_model_ready",
            "weir_drift_rows_total",
            "weir_drift_feature_rows_total",
            "weir_drift_feature_reference_share",
        ):
            found = story.prometheus.query(f"count by (pod) ({series}{{{selector}}})")
            assert {item["metric"]["pod"] for item in found} == pods, series


class TestTheOperatorsMetrics:
    def test_keep_their_own_namespace_label_as_with_honor_labels(self, story: Story) -> None:
        [target] = story.prometheus.wait_targets_up(OPERATOR_JOB, 1)
        assert target["labels"]["job"] == OPERATOR_JOB_LABEL
        found = story.prometheus.query(f'weir_rollout_phase{{name="{NAME}", phase="Healthy"}}')
        assert [item["metric"]["namespace"] for item in found] == [NAMESPACE]

    def test_join_each_serving_revision_to_its_modeldeployment(self, story: Story) -> None:
        found = story.prometheus.query(f'weir_rollout_revision_info{{name="{NAME}"}}')
        assert [
            (i["metric"]["revision"], i["metric"]["track"], i["metric"]["model"]) for i in found
        ] == [(story.stable_revision, "stable", SERVED_MODEL)]
