"""How long one big request makes other clients' small requests wait (issue 17).

`.venv/bin/python bench/big_requests.py` (about a minute) builds the sample models into a
temporary folder and, for each case, starts `weir serve` (defaults, `--no-access-log`) on
127.0.0.1, starts a client that sends small requests one after another on a keep-alive
connection, sends the big request once from a second client, and reports the big request's
status and time and the small requests' latencies while it was in the server (the slowest is
the stall). Issue 17's goal: under the limits, no small request delayed by more than about
250 ms. Prints a markdown table (docs/benchmarks.md, "One big request").

Run it against other code with PYTHONPATH (e.g. a `git worktree` of an older commit:
`PYTHONPATH=WT/server:WT/operator`): the servers it starts inherit it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server import bigload  # noqa: E402
from tests.server.connections import percentile  # noqa: E402
from tests.support.processes import running_server  # noqa: E402

from weir_server import sample_models  # noqa: E402

# name -> (model builder, served name, small request, big request)
Case = tuple[Callable[[Path], Path], str, bytes, Callable[[], bigload.Big]]
CASES: dict[str, Case] = {
    "json-near-limit": (
        sample_models.iris,
        "iris",
        bigload.SMALL_IRIS,
        lambda: bigload.iris_json(45_000),
    ),
    "json-30mb": (
        sample_models.iris,
        "iris",
        bigload.SMALL_IRIS,
        lambda: bigload.iris_json_over_limit(30),
    ),
    "binary-62mb-binary-answer": (
        sample_models.iris,
        "iris",
        bigload.SMALL_IRIS,
        lambda: bigload.iris_binary(3_900_000, binary_out=True),
    ),
    "binary-16mb-json-answer": (
        sample_models.iris,
        "iris",
        bigload.SMALL_IRIS,
        lambda: bigload.iris_binary(1_000_000, binary_out=False),
    ),
    "tiny-heavy-100k-rows": (
        lambda path: sample_models.iris_degraded(path, slow_layers=16, width=256),
        "iris",
        bigload.SMALL_IRIS,
        lambda: bigload.iris_binary(100_000, binary_out=True),
    ),
    "bytes-4mb": (
        sample_models.scaled,
        "scaled",
        bigload.SMALL_SCALED,
        lambda: bigload.scaled_bytes(800_000),
    ),
    "bytes-15mb": (
        sample_models.scaled,
        "scaled",
        bigload.SMALL_SCALED,
        lambda: bigload.scaled_bytes(3_000_000),
    ),
    "bytes-64mb": (
        sample_models.scaled,
        "scaled",
        bigload.SMALL_SCALED,
        lambda: bigload.scaled_bytes(12_700_000),
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    args = parser.parse_args(argv)
    rows = [
        "| big request | body MB | its status | its seconds | small requests during it "
        "| small p50 ms | slowest small ms |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    with tempfile.TemporaryDirectory(prefix="weir-bench-big-") as tmp:
        for name in args.cases.split(","):
            build, served, small, make_big = CASES[name]
            model = build(Path(tmp) / f"{name}.onnx")
            big = make_big()
            with running_server(model, "--name", served, "--no-access-log") as server:
                measured = bigload.small_latencies_during(server.url, served, small, big)
            latencies = measured.small_latencies
            rows.append(
                f"| {measured.big} | {measured.body_bytes / 1e6:.1f} | {measured.big_status} | "
                f"{measured.big_seconds:.2f} | {len(latencies)} "
                f"({measured.small_failures} failed) | {percentile(latencies, 0.5) * 1000:.1f} "
                f"| {measured.small_max * 1000:.0f} |"
            )
            print(rows[-1], flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
