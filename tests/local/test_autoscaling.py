"""Weir's own autoscaler in `weir run`: a load ramp adds servers at once, and once the load is
gone and scaleDownDelay has passed, they are drained back to the minimum; no client request
fails on the way up or down."""

from __future__ import annotations

import time
from pathlib import Path

from tests.support.local_run import LocalRun, Traffic, manifest, write_manifests


def test_a_load_ramp_scales_out_and_back_in_without_failing_a_request(
    local_run: LocalRun, iris_versions: dict[str, Path]
) -> None:
    autoscaling = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "metric": "concurrency",
        "target": 0.5,
        "scaleDownDelay": "8s",
    }
    # The slow iris takes ~3 ms a request here: 4 clients without pause keep about 2.3 requests
    # in flight on one server (3 servers at a target of 0.5), and about 1 once three servers
    # share them (2 servers' worth), never 0.5 or less while the traffic runs: the scale-in to 1
    # can only start after it stops. (At a target of 1, those ~1 in flight were 1 server's worth
    # and the scale-in to 1 sometimes began before the traffic stopped.)
    document = manifest("iris", iris_versions["iris_slow"], "1", autoscaling=autoscaling)
    write_manifests(local_run.folder, document)
    local_run.wait_up()
    local_run.wait_healthy("iris", "1")
    assert len(local_run.servers("iris")) == 1
    traffic = Traffic(local_run.router_url, threads=4, pause=0.0, limit_seconds=90).start()
    try:
        started = time.monotonic()
        local_run.eventually(
            lambda: sum(s["ready"] for s in local_run.servers("iris")) == 3,
            within=45,
            what="3 ready servers under load",
        )
        scaled_out = time.monotonic() - started
        status = local_run.status("iris")
        assert status["autoscaler"]["desiredReplicas"] == 3
        assert "in flight" in status["autoscaler"]["reason"]
        # Two more measurements (2 s each) with all three servers: a new server's first scrape
        # only opens its window, and a load that misses a serving server can only add servers,
        # so until then the last full recommendation is the one from before the scale-out.
        time.sleep(6)
    finally:
        counts = traffic.stop()
    stopped = time.monotonic()
    local_run.eventually(
        lambda: len(local_run.servers("iris")) == 1, within=45, what="back to 1 server"
    )
    scaled_in = time.monotonic() - stopped
    print(f"1 -> 3 servers {scaled_out:.1f} s after the load began; back to 1 {scaled_in:.1f} s "
          f"after it stopped (scaleDownDelay 8s); answers {dict(counts)}")  # fmt: skip
    # The last high recommendation came from the load window that ended at most one
    # measurement (2 s) and one tick (0.5 s) before the traffic stopped: the scale-in may
    # come that much sooner than 8 s after the stop, never sooner.
    assert scaled_in >= 8 - 2.5 - 0.5, "scaled in before scaleDownDelay passed"
    assert traffic.failures() == 0, counts
    assert counts[200] > 100, counts
    assert local_run.status("iris")["autoscaler"]["desiredReplicas"] == 1
