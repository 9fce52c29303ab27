"""Benchmark: how fast `weir run` takes traffic off a bad canary, over many rollouts.

One `weir run` (real `weir serve` processes, the real router, the operator's rollout engine)
serves the iris classifier (v1, two servers) under steady traffic from two client threads.
Each round ships the bad iris (slower, and failing on about one input in five; built in code by
`weir_server.sample_models`) as a canary with the acceptance configuration of issue #7
(`interval: 5s, failureThreshold: 2`, first step `setWeight: 20`) and measures, by polling the
control API every 50 ms:

  detection  from the first status with canary weight > 0 to the first with weight 0
             (RolledBack): the time the bad version had traffic;
  failed     client requests that failed in that time (the price of the canary).

Round 1 is a `set-model`; later rounds are `weir retry` of the same revision (a new canary).
Usage: `.venv/bin/python bench/rollback.py [--rounds 10]`. Prints progress and a table,
saves bench/results/rollback-*.json (git-ignored); the numbers go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.local_run import LocalRun, Traffic, manifest, write_manifests

from weir_server import sample_models

RESULTS = Path(__file__).resolve().parent / "results"


def one_round(run: LocalRun, traffic: Traffic, timeout: float) -> tuple[float, int]:
    weighted = 0.0
    deadline = time.monotonic() + timeout
    inconclusive: set[str] = set()
    while time.monotonic() < deadline:
        status = run.status("iris")
        weight = (status.get("canary") or {}).get("weight", 0)
        analysis = status.get("lastAnalysis") or {}
        new = analysis.get("at") not in inconclusive
        if weighted and analysis.get("verdict") == "Inconclusive" and new:
            inconclusive.add(analysis["at"])
            print(f"  inconclusive window: {analysis.get('reason')}", flush=True)
        if not weighted and weight > 0:
            weighted = time.monotonic()
        if weighted and status.get("phase") == "RolledBack":
            ended = time.monotonic()
            return ended - weighted, traffic.failures(since=weighted, until=ended)
        time.sleep(0.05)
    raise TimeoutError(f"no rollback within {timeout} s; weir run log: {run.log_path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=90, help="seconds per round at most")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="weir-bench-rollback-"))
    good = sample_models.iris(work / "iris.onnx")
    bad = sample_models.BUILDERS["iris_bad"](work / "iris_bad.onnx")
    analysis = {"interval": "5s", "failureThreshold": 2, "minRequests": 20}
    steps = [{"setWeight": 20}, {"pause": {}}]
    rollout = {"steps": steps, "analysis": analysis}
    write_manifests(work / "manifests", manifest("iris", good, "1", replicas=2, rollout=rollout))
    run = LocalRun(work / "manifests", work / "state")
    traffic = Traffic("", threads=3, limit_seconds=args.rounds * args.timeout + 60)
    results: list[tuple[float, int]] = []
    try:
        run.wait_up()
        run.wait_healthy("iris", "1")
        traffic.url = run.router_url
        traffic.start()
        time.sleep(2)
        for number in range(1, args.rounds + 1):
            if number == 1:
                run.set_model("iris", bad, "3")
            else:
                run.request("iris", "retry")
            took, failed = one_round(run, traffic, args.timeout)
            results.append((took, failed))
            print(f"round {number}/{args.rounds}: weight > 0 -> 0 in {took:.2f} s, "
                  f"{failed} client requests failed", flush=True)  # fmt: skip
            time.sleep(1)
    finally:
        traffic.stop()
        code = run.stop()
    times = [t for t, _ in results]
    failures = [f for _, f in results]
    answered = traffic.counts()
    summary = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rounds": len(results),
        "detection_seconds": times,
        "failed_requests": failures,
        "median_seconds": statistics.median(times),
        "max_seconds": max(times),
        "requests": dict(answered),
        "weir_run_exit": code,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"rollback-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(summary, indent=2))
    print()
    print("| rounds | detection median | detection max | failed requests per round (median, max) |")
    print("|---|---|---|---|")
    print(f"| {len(times)} | {statistics.median(times):.2f} s | {max(times):.2f} s | "
          f"{statistics.median(failures):.0f}, {max(failures)} |")  # fmt: skip
    print(f"\nsaved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
