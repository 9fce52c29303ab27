"""What held connections do to `weir serve`, and what each one costs (issue 17).

`.venv/bin/python bench/connections.py` (about 2 minutes) builds iris into a temporary folder
and, for each server configuration (`--configs`: `granian-defaults` = backlog and
backpressure 128 each, what `weir serve` ran with before; `weir-defaults` = weir's own
defaults now), starts `weir serve` on 127.0.0.1 and measures, from one asyncio process:

1. held connections: `--held` connections split evenly among idle ones (nothing sent),
   stalled bodies (headers with Content-Length 1000 and 1 byte of body) and partial headers
   (a request line, no blank line); then `--new-clients` infer requests on new connections
   and `--probes` readiness probes (`/v2/health/ready`), each given `--timeout` seconds:
   how many were answered, and their latencies;
2. keep-alive clients: `--keep-alive` clients, each on its own connection sending infer
   requests one after another for `--duration` seconds: how many clients got answers, the
   answers, the requests with no answer, latencies;
3. memory (weir-defaults only): the server's RSS (VmRSS) before and after holding
   `--rss-held` connections of each kind, so the cost of one held connection.

Everything is on loopback and bounded (`--timeout` per request, `--duration`); the server is
stopped at the end. Prints markdown tables (for docs/benchmarks.md) and writes the raw figures
to bench/results/connections-*.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server.connections import (  # noqa: E402
    HOLD_KINDS,
    PARTIAL,
    PROBE,
    STALLED,
    Held,
    hold,
    infer_request,
    keep_alive_clients,
    one_request,
    percentile,
    read_response,
    rss_bytes,
)
from tests.support.processes import running_server  # noqa: E402

from weir_server import sample_models  # noqa: E402

CONFIGS: dict[str, list[str]] = {
    "granian-defaults": ["--backlog", "128", "--max-connections", "128"],
    "weir-defaults": [],
}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


async def held_then_new_clients(port: int, args: argparse.Namespace) -> dict[str, Any]:
    held = Held()
    per_kind = args.held // len(HOLD_KINDS)
    started = time.perf_counter()
    opening = [hold(port, kind, per_kind, held) for kind in HOLD_KINDS]
    await asyncio.gather(*opening)
    await asyncio.sleep(0.5)
    try:
        clients = [
            one_request(port, infer_request(), args.timeout) for _ in range(args.new_clients)
        ]
        probes = [one_request(port, PROBE, args.timeout) for _ in range(args.probes)]
        outcomes = await asyncio.gather(*clients, *probes)
    finally:
        still_open = len(held.readers) - held.closed_by_server()
        await held.close()
    infer, ready = outcomes[: args.new_clients], outcomes[args.new_clients :]
    return {
        "held": len(held.writers),
        "held_still_open": still_open,
        "seconds": time.perf_counter() - started,
        "new_clients": len(infer),
        "new_clients_answered": sum(o.status == 200 for o in infer),
        "new_client_latencies": [o.seconds for o in infer if o.status == 200],
        "probes": len(ready),
        "probes_answered": sum(o.status == 200 for o in ready),
        "probe_latencies": [o.seconds for o in ready if o.status == 200],
    }


async def keep_alive(port: int, args: argparse.Namespace) -> dict[str, Any]:
    results = await keep_alive_clients(port, args.keep_alive, args.duration, args.timeout)
    latencies = [latency for result in results for latency in result.latencies]
    return {
        "clients": len(results),
        "clients_answered": sum(result.answered > 0 for result in results),
        "clients_with_a_failure": sum(result.failed > 0 for result in results),
        "answers": sum(result.answered for result in results),
        "unanswered": sum(result.failed for result in results),
        "duration": args.duration,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "max": max(latencies, default=float("nan")),
    }


async def memory(pid: int, port: int, args: argparse.Namespace) -> dict[str, Any]:
    for _ in range(20):  # warm the request path up, so that its first allocations are counted
        await one_request(port, infer_request(), args.timeout)
    figures: dict[str, Any] = {}
    for kind in HOLD_KINDS:
        await asyncio.sleep(0.5)
        before = rss_bytes(pid)
        held = await hold(port, kind, args.rss_held)
        await asyncio.sleep(1.0)
        after = rss_bytes(pid)
        await held.close()
        figures[kind] = {
            "connections": args.rss_held,
            "rss_before": before,
            "rss_after": after,
            "bytes_per_connection": (after - before) / args.rss_held,
        }
    return figures


async def closed_after(port: int, kind: str, wait: float) -> tuple[float, int]:
    """Seconds until the server closes a connection of `kind` (`idle-after-request`: one
    request answered, then nothing), and the status it answered before closing (0: none)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    status = 0
    started = time.perf_counter()
    try:
        if kind == "idle-after-request":
            writer.write(infer_request())
            status, _ = await read_response(reader)
            started = time.perf_counter()
        else:
            if kind == "stalled-body":
                writer.write(STALLED)
            elif kind == "partial-headers":
                writer.write(PARTIAL)
        async with asyncio.timeout(wait):
            data = await reader.read()  # to the end: what is left of an answer, then EOF
        if data.startswith(b"HTTP/1.1 "):
            status = int(data.split()[1])
        return time.perf_counter() - started, status
    except TimeoutError:
        return float("inf"), status
    finally:
        writer.close()


async def timeouts(model: Path, args: argparse.Namespace) -> dict[str, Any]:
    options = ["--name", "iris", "--no-access-log", "--keep-alive-timeout", "2"]
    options += ["--body-timeout", "2"]
    kinds = ("idle", "idle-after-request", "partial-headers", "stalled-body")
    with running_server(model, *options) as server:
        closed = await asyncio.gather(*(closed_after(server.port, k, 15.0) for k in kinds))
    return {
        "options": options,
        "closed_after": {
            k: {"seconds": s, "status": st} for k, (s, st) in zip(kinds, closed, strict=True)
        },
    }


async def measure(config: str, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    options = [*CONFIGS[config], "--name", "iris", "--no-access-log"]
    result: dict[str, Any] = {"config": config, "options": options}
    with running_server(model, *options) as server:
        result["held_then_new_clients"] = await held_then_new_clients(server.port, args)
        await asyncio.sleep(1.0)
    with running_server(model, *options) as server:
        result["keep_alive"] = await keep_alive(server.port, args)
    if config == "weir-defaults":
        with running_server(model, *options) as server:
            result["memory"] = await memory(server.process.pid, server.port, args)
        result["timeouts"] = await timeouts(model, args)
    return result


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.held} held connections ({args.held // 3} idle, {args.held // 3} stalled "
        f"bodies, {args.held // 3} partial headers), then {args.new_clients} new clients and "
        f"{args.probes} readiness probes, each given {args.timeout:g} s:",
        "",
        "| configuration | new clients answered | latency p50 / max ms | probes answered "
        "| probe latency max ms | held still open |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        held = result["held_then_new_clients"]
        client, probe = held["new_client_latencies"], held["probe_latencies"]
        lines.append(
            f"| {result['config']} | {held['new_clients_answered']} of {held['new_clients']} "
            f"| {ms(percentile(client, 0.5)) if client else '–'} / "
            f"{ms(max(client)) if client else '–'} "
            f"| {held['probes_answered']} of {held['probes']} "
            f"| {ms(max(probe)) if probe else '–'} | {held['held_still_open']} of {held['held']} |"
        )
    lines += [
        "",
        f"{args.keep_alive} keep-alive clients, requests one after another for "
        f"{args.duration:g} s:",
        "",
        "| configuration | clients answered | answers | requests with no answer "
        "| p50 ms | p99 ms | max ms |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for result in results:
        ka = result["keep_alive"]
        lines.append(
            f"| {result['config']} | {ka['clients_answered']} of {ka['clients']} | "
            f"{ka['answers']:,} | {ka['unanswered']} | {ms(ka['p50'])} | {ms(ka['p99'])} | "
            f"{ms(ka['max'])} |"
        )
    for result in results:
        if "memory" not in result:
            continue
        lines += [
            "",
            f"Memory ({result['config']}), server RSS before and after holding "
            f"{args.rss_held} connections of one kind:",
            "",
            "| held connection | RSS before MiB | RSS after MiB | KiB per connection |",
            "|---|--:|--:|--:|",
        ]
        for kind, figures in result["memory"].items():
            lines.append(
                f"| {kind} | {figures['rss_before'] / 2**20:.1f} | "
                f"{figures['rss_after'] / 2**20:.1f} | "
                f"{figures['bytes_per_connection'] / 1024:.1f} |"
            )
    for result in results:
        if "timeouts" not in result:
            continue
        lines += [
            "",
            f"Timeouts (`{' '.join(result['timeouts']['options'][3:])}`): when the server "
            "closes a connection that",
            "",
            "| connection | closed after s | answered before closing |",
            "|---|--:|--:|",
        ]
        for kind, figures in result["timeouts"]["closed_after"].items():
            lines.append(f"| {kind} | {figures['seconds']:.2f} | {figures['status'] or '–'} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated")
    parser.add_argument("--held", type=int, default=300)
    parser.add_argument("--new-clients", type=int, default=25)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--keep-alive", type=int, default=250)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--rss-held", type=int, default=600, help="per kind, for memory")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    with tempfile.TemporaryDirectory(prefix="weir-bench-connections-") as tmp:
        model = sample_models.iris(Path(tmp) / "iris.onnx")
        results = [asyncio.run(measure(config, model, args)) for config in configs]
    text = report(results, args)
    print(text)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "bench" / "results" / f"connections-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "python": platform.python_version()}
    out.write_text(
        json.dumps(
            {"machine": machine, "args": vars(args) | {"out": str(out)}, "results": results},
            indent=1,
            default=str,
        )
    )
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
