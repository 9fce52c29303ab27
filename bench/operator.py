"""Benchmark of `weir operator` reconciling many ModelDeployments, against the emulator.

One run: a `WeirEmulator` (tests/support/emulator.py: kmock's Kubernetes emulator, pure Python,
served by this process on 127.0.0.1) and the real `weir operator --interval 5` as a subprocess
with a kubeconfig for it. After the operator has opened its watches, the benchmark creates
`--count` ModelDeployments (the `manifest()` of tests/emulator/test_operator.py: one replica,
default rollout) and measures three phases:

  reconcile  from the first create until every ModelDeployment has `status.stable` (its first
             reconcile is done: children created, status written);
  ready      the benchmark plays the Deployment controller (every Deployment's status patched
             to all replicas ready) until every ModelDeployment is Healthy;
  steady     `--steady` seconds (default 30) with nothing changing: the cost at rest of N
             objects whose convergence timers fire every 5 s;

each with its wall time, the operator's CPU seconds (/proc/PID/stat utime+stime) and final and
peak RSS (/proc/PID/status VmRSS, VmHWM), the emulator's CPU (this process:
time.process_time(), the benchmark's own requests included) and every other process's (from
/proc/stat), and the operator's API requests by kind (told by User-Agent). Then it sends SIGTERM
and times the stop (SIGKILL after `--stop-timeout`).

kmock 0.8 matches each request against its reactions by iterating over every request recorded
so far (quadratic: 50 ModelDeployments take minutes); by default the benchmark swaps in a
constant-time membership test for plain filters (`_sees`, same answers), so that the operator,
not the emulator's bookkeeping, is measured. `--kmock-matching` keeps kmock's.

Usage: `.venv/bin/python bench/operator.py [--count 200] [--steady 30] [--timeout 900]`.
Prints progress and a summary table, and saves the numbers as bench/results/operator-*.json
(git-ignored). Results are recorded by hand in docs/benchmarks.md ("## Operator").
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib.metadata
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # the repository, not bench/ (whose operator.py shadows the stdlib's)

import aiohttp.web  # noqa: E402
from kmock._internal import apps, dsl, rendering  # noqa: E402
from tests.emulator.test_operator import DEPLOYMENTS, MD, manifest  # noqa: E402
from tests.support.emulator import EmulatorApi, WeirEmulator, serve, write_kubeconfig  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")  # kopf's aiohttp, the `kubernetes` client
# The operator has started when it watches ModelDeployments and each of its caches.
WATCHED = {"modeldeployments", "deployments", "services", "poddisruptionbudgets",
           "horizontalpodautoscalers", "pods"}  # fmt: skip


def _sees(view: dsl.View, request: rendering.Request) -> bool:
    """`request in view`, in constant time for plain filters (criteria, priorities): kmock
    tests membership by iterating over every request recorded so far, which makes serving
    quadratic in the number of requests. Slices, groups and exclusions keep kmock's way."""
    if isinstance(view, dsl.Root):
        return True
    if type(view) is dsl.Filter:
        return bool(view.criteria(request)) and _sees(view._source, request)
    if type(view) is dsl.Priority:
        return _sees(view._source, request)
    return request in view


async def _handle_in_constant_time(
    self: WeirEmulator, request: rendering.Request
) -> aiohttp.web.StreamResponse:
    """kmock's RawHandler._handle (0.8) with `_sees` for its membership test; what
    WeirEmulator._handle calls, so the emulator's conventions and error answers stay."""
    priorities = [payload.priorities for payload in self._payloads]
    length = max((len(priority) for priority in priorities), default=0)
    keys = [tuple(-p for p in pri) + (0,) * (length - len(pri)) for pri in priorities]
    for index in sorted(range(len(keys)), key=keys.__getitem__):
        payload = self._payloads[index]
        if _sees(payload._source, request) and not payload._disabled.is_set():
            try:
                return await payload(request)
            except rendering.ReactionMismatchError:
                payload._disabled.set()
            except NotImplementedError:
                pass
    raise NotImplementedError("no reaction matches the request")


def use_constant_time_matching() -> None:
    apps.RawHandler._handle = _handle_in_constant_time  # type: ignore[method-assign,assignment]


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads), from /proc (Linux)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_memory_mib(pid: int | str) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak RSS so far) in MiB, from /proc/PID/status."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return {"rss": found["VmRSS"], "peak": found["VmHWM"]}


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy (user, nice, system, irq, softirq, steal), from /proc."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8)) / os.sysconf("SC_CLK_TCK")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip()


class Meter:
    """CPU and memory of the operator (a subprocess), the emulator (this process) and the rest
    of the machine, between two marks."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def mark(self) -> dict[str, float]:
        return {
            "wall": time.monotonic(),
            "operator_cpu": process_cpu_seconds(self.pid),
            "emulator_cpu": time.process_time(),
            "machine_busy": machine_busy_seconds(),
            **{f"operator_{k}": v for k, v in process_memory_mib(self.pid).items()},
            **{f"emulator_{k}": v for k, v in process_memory_mib("self").items()},
        }

    @staticmethod
    def between(start: dict[str, float], end: dict[str, float]) -> dict[str, float]:
        wall = end["wall"] - start["wall"]
        operator = end["operator_cpu"] - start["operator_cpu"]
        emulator = end["emulator_cpu"] - start["emulator_cpu"]
        other = max(0.0, end["machine_busy"] - start["machine_busy"] - operator - emulator)
        return {
            "wall_s": round(wall, 2),
            "operator_cpu_s": round(operator, 2),
            "operator_cores": round(operator / wall, 3),
            "emulator_cpu_s": round(emulator, 2),
            "emulator_cores": round(emulator / wall, 3),
            "other_cores": round(other / wall, 3),
            "operator_rss_mib": round(end["operator_rss"], 1),
            "operator_peak_rss_mib": round(end["operator_peak"], 1),
            "emulator_rss_mib": round(end["emulator_rss"], 1),
            "emulator_peak_rss_mib": round(end["emulator_peak"], 1),
        }


def operator_requests(emulator: WeirEmulator, since: int) -> tuple[int, collections.Counter[str]]:
    """How many requests the emulator has recorded, and the operator's since `since` by kind."""
    requests = list(emulator)
    kinds: collections.Counter[str] = collections.Counter()
    for request in requests[since:]:
        agent = {k.lower(): v for k, v in request.headers.items()}.get("user-agent", "")
        if not agent.startswith(OPERATOR_AGENTS):
            continue
        plural = request.resource.plural if request.resource else request.url.path
        sub = f"/{request.subresource}" if request.subresource else ""
        action = request.action.value.lower() if request.action else request.method.value
        kinds[f"{action} {plural}{sub}"] += 1
    return len(requests), kinds


async def wait_for_watches(emulator: WeirEmulator, process: subprocess.Popen[bytes]) -> None:
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the operator exited with {process.returncode}")
        watched = {
            request.resource.plural
            for request in list(emulator)
            if request.resource is not None and request.params.get("watch") == "true"
        }
        if watched >= WATCHED:
            return
        await asyncio.sleep(0.2)


async def count_status(api: EmulatorApi, key: str, value: Any = None) -> int:
    """ModelDeployments whose status has `key` (equal to `value`, when given)."""
    items = await api.list(MD, "default")
    statuses = [item.get("status") or {} for item in items]
    return sum(1 for st in statuses if (st.get(key) if value is None else st.get(key) == value))


async def make_all_ready(api: EmulatorApi) -> int:
    """Play the Deployment controller: every Deployment's replicas updated and ready."""
    deployments = await api.list(DEPLOYMENTS, "default")
    for deployment in deployments:
        replicas = deployment["spec"].get("replicas", 1)
        status = {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                  "availableReplicas": replicas, "observedGeneration": 1}  # fmt: skip
        name = deployment["metadata"]["name"]
        await api.patch(DEPLOYMENTS, "default", name, {"status": status}, subresource="status")
    return len(deployments)


async def reconcile_metrics(port: int) -> dict[str, float]:
    """The operator's own reconcile count and mean time (from its /metrics)."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("weir_reconcile_duration_seconds_count", "weir_reconcile_duration_seconds_sum"):
            values[name.rsplit("_", 1)[1]] = float(value)
    return values


def start_operator(
    kubeconfig: Path, interval: float, metrics_port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """`weir operator` as users run it (all namespaces), on the emulator."""
    command = [
        sys.executable, "-m", "weir_operator.cli", "operator", "--interval", f"{interval:g}",
        "--metrics-port", str(metrics_port), "--liveness-port", str(free_port()),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "count": args.count,
        "interval": args.interval,
        "matching": "kmock" if args.kmock_matching else "constant-time",
    }
    deadline = time.monotonic() + args.timeout

    def check_deadline(what: str) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done within --timeout {args.timeout:g} s")

    async with serve() as emulator:
        api = EmulatorApi(emulator)
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", str(emulator.url).rstrip("/"))
        metrics_port = free_port()
        operator_log = workdir / "operator.log"
        process = start_operator(kubeconfig, args.interval, metrics_port, operator_log)
        try:
            meter = Meter(process.pid)
            start = meter.mark()
            await asyncio.wait_for(wait_for_watches(emulator, process), 60)
            started = meter.mark()
            result["startup"] = meter.between(start, started)
            log(
                f"operator {process.pid} watching after {result['startup']['wall_s']:.1f} s, "
                f"RSS {started['operator_rss']:.0f} MiB"
            )
            seen, _ = operator_requests(emulator, 0)

            async def phase(
                name: str, since: dict[str, float], key: str, value: Any
            ) -> dict[str, float]:
                """Wait until every ModelDeployment's status has `key` (= `value`)."""
                nonlocal seen
                last_print = 0.0
                while True:
                    done = await count_status(api, key, value)
                    now = meter.mark()
                    if done == args.count:
                        break
                    if process.poll() is not None:
                        raise RuntimeError(f"the operator exited with {process.returncode}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{name}: {done}/{args.count} after {now['wall'] - since['wall']:.0f}"
                            f" s, not done within --timeout {args.timeout:g} s"
                        )
                    if now["wall"] - last_print >= 5:
                        last_print = now["wall"]
                        so_far = meter.between(since, now)
                        log(
                            f"{name}: {done}/{args.count} after {so_far['wall_s']:.0f} s; "
                            f"CPU: operator {so_far['operator_cpu_s']:.1f} s, "
                            f"emulator {so_far['emulator_cpu_s']:.1f} s; "
                            f"operator RSS {now['operator_rss']:.0f} MiB"
                        )
                    await asyncio.sleep(args.poll)
                result[name] = meter.between(since, now)
                seen, kinds = operator_requests(emulator, seen)
                result[name]["operator_requests"] = dict(kinds.most_common())
                log(f"{name}: done: " + ", ".join(f"{k} {v}" for k, v in result[name].items()))
                return now

            for index in range(args.count):
                await api.create(MD, manifest(name=f"model-{index}"))
            result["create_s"] = round(time.monotonic() - started["wall"], 2)
            log(f"created {args.count} ModelDeployments in {result['create_s']:.1f} s")
            await phase("reconcile", started, "stable", None)

            ready = meter.mark()
            log(f"made {await make_all_ready(api)} Deployments ready")
            await phase("ready", ready, "phase", "Healthy")

            log(f"steady state for {args.steady:g} s ...")
            metrics_before = await reconcile_metrics(metrics_port)
            rest = meter.mark()
            await asyncio.sleep(args.steady)
            if process.poll() is not None:
                raise RuntimeError(f"the operator exited with {process.returncode}")
            result["steady"] = meter.between(rest, meter.mark())
            seen, kinds = operator_requests(emulator, seen)
            result["steady"]["operator_requests"] = dict(kinds.most_common())
            metrics = await reconcile_metrics(metrics_port)
            reconciles = metrics["count"] - metrics_before["count"]
            result["steady"]["reconciles_per_s"] = round(reconciles / result["steady"]["wall_s"], 1)
            result["steady"]["reconcile_mean_ms"] = round(
                1000 * (metrics["sum"] - metrics_before["sum"]) / max(reconciles, 1), 1
            )
            result["steady"]["healthy"] = await count_status(api, "phase", "Healthy")
            log("steady: " + ", ".join(f"{k} {v}" for k, v in result["steady"].items()))
        except BaseException:
            print(operator_log.read_text(errors="replace")[-3000:], file=sys.stderr)
            raise
        finally:
            if process.poll() is None:
                stopping = time.monotonic()
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.to_thread(process.wait), args.stop_timeout)
                    result["stop_s"] = round(time.monotonic() - stopping, 1)
                    log(f"the operator stopped {result['stop_s']:.1f} s after SIGTERM")
                except TimeoutError:
                    result["stop_s"] = None
                    log(f"the operator did not stop within {args.stop_timeout:g} s: killed")
                    process.kill()
                    await asyncio.to_thread(process.wait)
    return result


def summary(result: dict[str, Any]) -> str:
    """The phases as a Markdown table (the one docs/benchmarks.md shows)."""
    rows = [
        "| phase | wall s | operator CPU s (cores) | emulator CPU s (cores) | other cores "
        "| operator RSS MiB, final (peak) | operator API requests |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name in ("startup", "reconcile", "ready", "steady"):
        m = result[name]
        requests = sum(m.get("operator_requests", {}).values()) if name != "startup" else "–"
        rows.append(
            f"| {name} | {m['wall_s']:.1f} | {m['operator_cpu_s']:.1f} ({m['operator_cores']:.2f})"
            f" | {m['emulator_cpu_s']:.1f} ({m['emulator_cores']:.2f}) | {m['other_cores']:.2f}"
            f" | {m['operator_rss_mib']:.0f} ({m['operator_peak_rss_mib']:.0f}) | {requests} |"
        )
    steady = result["steady"]
    rows.append(
        f"\nAt rest: {steady['reconciles_per_s']} reconciles/s "
        f"(mean {steady['reconcile_mean_ms']} ms each, from the operator's /metrics); "
        f"{steady['healthy']}/{result['count']} Healthy. Stopped "
        + (
            f"{result['stop_s']} s after SIGTERM."
            if result.get("stop_s") is not None
            else "only by SIGKILL (--stop-timeout)."
        )
    )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--count", type=int, default=200, help="ModelDeployments to create")
    parser.add_argument("--steady", type=float, default=30, help="seconds measured at rest")
    parser.add_argument("--interval", type=float, default=5, help="the operator's --interval")
    parser.add_argument("--poll", type=float, default=2, help="seconds between status checks")
    parser.add_argument("--timeout", type=float, default=900, help="give up after this long")
    parser.add_argument(
        "--stop-timeout", type=float, default=60, help="seconds from SIGTERM to SIGKILL"
    )
    parser.add_argument("--out", type=Path, help="JSON results (default: bench/results/)")
    parser.add_argument(
        "--kmock-matching",
        action="store_true",
        help="keep kmock's request matching, which is quadratic in the number of requests "
        "(what the test tier runs); by default the emulator matches each request in constant "
        "time, with the same answers",
    )
    args = parser.parse_args()
    if not args.kmock_matching:
        use_constant_time_matching()

    machine = {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "kopf": importlib.metadata.version("kopf"),
        "kubernetes": importlib.metadata.version("kubernetes"),
        "kmock": importlib.metadata.version("kmock"),
        "commit": commit(),
    }
    log(f"{args.count} ModelDeployments; machine: {machine}")
    with tempfile.TemporaryDirectory(prefix="weir-bench-operator-") as tmp:
        try:
            result = asyncio.run(run(args, Path(tmp)))
        except (TimeoutError, RuntimeError) as error:
            log(f"FAILED: {error}")
            return 1
    result["machine"] = machine
    result["command"] = " ".join([".venv/bin/python", "bench/operator.py", *sys.argv[1:]])
    result["at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = args.out or RESULTS_DIR / f"operator-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(summary(result))
    log(f"results in {out}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
