"""Benchmark of the latency `weir run`'s local router adds (goal of issue #9: under 1 ms at p50).

It builds the iris model (`weir_server.sample_models.iris`) into a temporary folder, starts the
real `weir run` (a subprocess: `python -m weir_operator.cli run -f FOLDER ...`, free 127.0.0.1
ports) on a ModelDeployment with `replicas: 1` and a file:// URI, waits until it is Healthy
(control API), finds its one `weir serve` process's own port (`.../servers`), and then sends
the same V2 JSON infer request (one row, FP32 [1, 4]) along two paths:

  direct   straight to the `weir serve` port;
  router   to the router port (`--port`), which forwards it to that same server.

Both paths end at the same server process, so the difference is what the router costs: one
more HTTP hop through loopback, and the router's own work in the `weir run` event loop.

Two loads, each a closed loop with keep-alive connections:

  concurrency 1   one `httpx.Client`, requests one after another;
  concurrency 8   8 asyncio connections (a minimal HTTP/1.1 client on raw streams, so that
                  the load generator spends little CPU: it shares the machine with both).

The paths are interleaved in rounds (direct then router, router then direct in the next round,
each with a short unmeasured warm-up), so a slow minute on a shared machine hits both alike.
Every answer is checked (status 200, the same bytes as the first answer). The CPU of
`weir run`, of the server, of this process and of everything else on the machine is measured
during each measurement. The run is bounded (`--requests` per path per round, `--rounds`,
`--time-limit` seconds of measuring, shared equally by every measurement, so the two paths
get the same time even when one is slow); `weir run` is always stopped (SIGINT) at the end.

Usage: `make bench-router` (= `.venv/bin/python bench/router.py`; 2 minutes at most). Prints a
markdown table and writes it to bench/results/router.md (git-ignored). `--help` for the knobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.metadata
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "bench" / "results" / "router.md"
MODEL = "iris"
INFER_PATH = f"/v2/models/{MODEL}/infer"
ROW = [5.1, 3.5, 1.4, 0.2]
BODY = orjson.dumps(
    {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
)
HEADERS = {"content-type": "application/json"}
PACKAGES = ("httpx", "httpcore", "h11", "uvicorn", "httptools", "uvloop", "onnxruntime")
PR_SET_PDEATHSIG = 1
GOAL_MS = 1.0  # issue #9: the router adds under 1 ms at p50
PATHS = ("direct", "router")
STOP = threading.Event()  # set by SIGTERM: the load loops end, then `weir run` is stopped
PATH_LABELS = {"direct": "direct to `weir serve`", "router": "through the router"}


# --------------------------------------------------------------------------------------------
# Small helpers


def log(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile_ms(sorted_seconds: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_seconds:
        return math.nan
    index = min(len(sorted_seconds) - 1, max(0, math.ceil(q / 100 * len(sorted_seconds)) - 1))
    return sorted_seconds[index] * 1000


def median(values: Sequence[float]) -> float:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def process_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a live process (all its threads), from /proc (Linux)."""
    if pid is None:
        return math.nan
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent busy (user, nice, system, irq, softirq, steal), from /proc."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return math.nan
    return sum(int(fields[i]) for i in (1, 2, 3, 6, 7, 8)) / os.sysconf("SC_CLK_TCK")


def die_with_parent() -> None:
    """`preexec_fn`: the kernel sends SIGTERM to `weir run` if this benchmark dies hard."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return math.nan


def machine_info() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "nproc": len(os.sched_getaffinity(0)),  # what `nproc` prints
        "cpu_model": cpu_model(),
        "memory_gib": round(memory_gib(), 1),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "packages": versions,
        "commit": commit,
    }


# --------------------------------------------------------------------------------------------
# `weir run`


class WeirRun:
    """One `weir run -f FOLDER` subprocess on free ports; `stop()` sends SIGINT (Ctrl-C)."""

    def __init__(self, folder: Path, state_dir: Path) -> None:
        self.port, self.control_port = free_port(), free_port()
        self.log_path = state_dir / "weir-run.log"
        self.argv = [
            sys.executable, "-m", "weir_operator.cli", "run", "-f", str(folder),
            "--port", str(self.port), "--control-port", str(self.control_port),
            "--state-dir", str(state_dir),
        ]  # fmt: skip
        with self.log_path.open("wb") as output:
            # Its own session: a Ctrl-C at the terminal reaches this benchmark only, which then
            # stops `weir run` once, in order (and `weir run` stops its servers).
            self.process = subprocess.Popen(
                self.argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.control = httpx.Client(base_url=f"http://127.0.0.1:{self.control_port}", timeout=10)

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    {line}" for line in text) or "    (no output)"

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"weir run exited with {self.process.returncode}:\n{self.tail()}")

    def wait_healthy(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        phase = None
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(httpx.TransportError):
                response = self.control.get(f"/api/v1/modeldeployments/{name}")
                if response.status_code == 200:
                    phase = (response.json().get("status") or {}).get("phase")
                    if phase == "Healthy":
                        return
            time.sleep(0.2)
        raise RuntimeError(
            f"{name} not Healthy after {timeout:.0f} s (phase {phase}):\n{self.tail()}"
        )

    def servers(self, name: str) -> list[dict[str, Any]]:
        response = self.control.get(f"/api/v1/modeldeployments/{name}/servers")
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def stop(self, timeout: float = 30) -> int | None:
        self.control.close()
        if self.process.poll() is None:
            log("stopping weir run (SIGINT)")
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log(f"weir run did not stop within {timeout:.0f} s: killing its process group")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode


def write_manifest(folder: Path, model_path: Path) -> Path:
    document = {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": MODEL},
        "spec": {"model": {"uri": model_path.as_uri(), "version": "1"}, "replicas": 1},
    }
    path = folder / f"{MODEL}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------
# Load


@dataclass
class Sample:
    """One measurement: one path at one concurrency, in one round."""

    path: str
    concurrency: int
    round: int
    latencies: list[float]  # seconds, one per answered request
    wall: float
    errors: int
    cpu: dict[str, float]  # cores: weir run, server, client (this process), other

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall if self.wall else math.nan

    def p(self, q: float) -> float:
        return percentile_ms(sorted(self.latencies), q)


class Reference:
    """The first answer's bytes: every later answer must be the same."""

    def __init__(self) -> None:
        self.body: bytes | None = None

    def ok(self, status: int, body: bytes) -> bool:
        if status != 200:
            return False
        if self.body is None:
            self.body = body
        return body == self.body


def run_sequential(
    client: httpx.Client, url: str, count: int, deadline: float, reference: Reference
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    clock = time.perf_counter
    for _ in range(count):
        if time.monotonic() > deadline or STOP.is_set():
            break
        started = clock()
        try:
            response = client.post(url, content=BODY, headers=HEADERS)
        except httpx.HTTPError:
            errors += 1
            continue
        elapsed = clock() - started
        if reference.ok(response.status_code, response.content):
            latencies.append(elapsed)
        else:
            errors += 1
    return latencies, errors


def raw_request(port: int) -> bytes:
    head = (
        f"POST {INFER_PATH} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


class Connection:
    """One keep-alive connection of the concurrent load."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.request = raw_request(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        with contextlib.suppress(OSError, AttributeError):
            self.writer.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def exchange(self) -> tuple[int, bytes]:
        """One request and its answer (the servers here always send Content-Length)."""
        if self.reader is None or self.writer is None:
            await self.open()
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return status, await self.reader.readexactly(int(value))
        raise ConnectionError("answer without Content-Length")

    async def loop(
        self,
        budget: list[int],
        deadline: float,
        reference: Reference,
        latencies: list[float] | None,
        errors: list[int],
    ) -> None:
        """Requests one after another while `budget` (shared by all connections) lasts."""
        clock = time.perf_counter
        while budget[0] > 0 and time.monotonic() < deadline and not STOP.is_set():
            budget[0] -= 1
            started = clock()
            try:
                status, body = await self.exchange()
            except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError):
                errors[0] += 1
                await self.close()  # the next request opens a new connection
                continue
            elapsed = clock() - started
            if not reference.ok(status, body):
                errors[0] += 1
            elif latencies is not None:
                latencies.append(elapsed)


async def _run_concurrent(
    port: int,
    concurrency: int,
    count: int,
    warmup: int,
    deadline: float,
    reference: Reference,
) -> tuple[list[float], int, float]:
    connections = [Connection(port) for _ in range(concurrency)]
    try:
        # Connect and warm up every connection (unmeasured), then measure them together.
        await asyncio.gather(*(c.open() for c in connections))
        warm_budget, warm_errors = [warmup], [0]
        await asyncio.gather(
            *(c.loop(warm_budget, deadline, reference, None, warm_errors) for c in connections)
        )
        budget, errors = [count], [0]
        latencies: list[float] = []
        started = time.perf_counter()
        await asyncio.gather(
            *(c.loop(budget, deadline, reference, latencies, errors) for c in connections)
        )
        return latencies, errors[0], time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in connections))


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


@dataclass
class Target:
    path: str
    port: int
    client: httpx.Client
    reference: Reference = field(default_factory=Reference)


@dataclass
class Watched:
    """The processes whose CPU each measurement reports."""

    weir_run_pid: int
    server_pid: int | None

    @contextlib.contextmanager
    def measure(self, into: dict[str, float]) -> Iterator[None]:
        run0, server0 = process_cpu_seconds(self.weir_run_pid), process_cpu_seconds(self.server_pid)
        client0, busy0 = time.process_time(), machine_busy_seconds()
        started = time.perf_counter()
        yield
        wall = time.perf_counter() - started
        run = process_cpu_seconds(self.weir_run_pid) - run0
        server = process_cpu_seconds(self.server_pid) - server0
        client = time.process_time() - client0
        busy = machine_busy_seconds() - busy0
        into.update(
            weir_run=run / wall,
            server=server / wall,
            client=client / wall,
            other=max(0.0, busy - run - server - client) / wall,
        )


def measure(
    target: Target,
    concurrency: int,
    count: int,
    warmup: int,
    deadline: float,
    round_index: int,
    watched: Watched,
) -> Sample:
    cpu: dict[str, float] = {}
    if concurrency == 1:
        url = f"http://127.0.0.1:{target.port}{INFER_PATH}"
        run_sequential(target.client, url, warmup, deadline, target.reference)
        with watched.measure(cpu):
            started = time.perf_counter()
            latencies, errors = run_sequential(
                target.client, url, count, deadline, target.reference
            )
            wall = time.perf_counter() - started
    else:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            latencies, errors, wall = runner.run(
                _warm_then_measure(target, concurrency, count, warmup, deadline, watched, cpu)
            )
    return Sample(target.path, concurrency, round_index, latencies, wall, errors, cpu)


async def _warm_then_measure(
    target: Target,
    concurrency: int,
    count: int,
    warmup: int,
    deadline: float,
    watched: Watched,
    cpu: dict[str, float],
) -> tuple[list[float], int, float]:
    # The CPU window covers the warm-up too (a few % of the requests): close enough for
    # "cores busy", and it keeps the connections' set-up out of the latencies.
    with watched.measure(cpu):
        return await _run_concurrent(
            target.port, concurrency, count, warmup, deadline, target.reference
        )


# --------------------------------------------------------------------------------------------
# Report


@dataclass
class Row:
    concurrency: int
    path: str
    samples: list[Sample]

    @property
    def latencies(self) -> list[float]:
        return sorted(x for s in self.samples for x in s.latencies)

    @property
    def requests(self) -> int:
        return sum(len(s.latencies) for s in self.samples)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.samples)

    @property
    def rps(self) -> float:
        wall = sum(s.wall for s in self.samples)
        return self.requests / wall if wall else math.nan

    def cpu(self, what: str) -> float:
        return median([s.cpu.get(what, math.nan) for s in self.samples])


def fmt(value: float, digits: int = 2, sign: bool = False) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def report(samples: list[Sample], settings: dict[str, Any], info: dict[str, Any]) -> str:
    concurrencies = sorted({s.concurrency for s in samples})
    lines = [
        "| concurrency | path | requests | p50 ms | p90 ms | p99 ms | req/s "
        "| weir run CPU | server CPU | client CPU | other CPU | errors |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    verdicts = []
    for concurrency in concurrencies:
        rows = {
            path: Row(
                concurrency,
                path,
                [s for s in samples if (s.concurrency, s.path) == (concurrency, path)],
            )
            for path in PATHS
        }
        if not all(r.samples for r in rows.values()):
            continue
        pct: dict[str, dict[float, float]] = {}
        for path, row in rows.items():
            ordered = row.latencies
            pct[path] = {q: percentile_ms(ordered, q) for q in (50, 90, 99)}
            lines.append(
                f"| {concurrency} | {PATH_LABELS[path]} | {row.requests:,} | {fmt(pct[path][50])} "
                f"| {fmt(pct[path][90])} | {fmt(pct[path][99])} | {row.rps:,.0f} "
                f"| {fmt(row.cpu('weir_run'))} | {fmt(row.cpu('server'))} "
                f"| {fmt(row.cpu('client'))} | {fmt(row.cpu('other'))} | {row.errors} |"
            )
        added = {q: pct["router"][q] - pct["direct"][q] for q in (50, 90, 99)}
        per_round = [
            r.p(50) - d.p(50)
            for d, r in zip(rows["direct"].samples, rows["router"].samples, strict=False)
        ]
        rps_ratio = rows["router"].rps / rows["direct"].rps if rows["direct"].rps else math.nan
        lines.append(
            f"| {concurrency} | **added by the router** | | **{fmt(added[50], sign=True)}** "
            f"| {fmt(added[90], sign=True)} | **{fmt(added[99], sign=True)}** "
            f"| {fmt(rps_ratio)}× | | | | | |"
        )
        verdicts.append(
            f"- concurrency {concurrency}: the router adds {fmt(added[50])} ms at p50 "
            f"(per round: {fmt(min(per_round))} to {fmt(max(per_round))} ms) and "
            f"{fmt(added[99])} ms at p99; requests/s through the router = {fmt(rps_ratio)}× direct"
            + (
                f"; goal p50 < {GOAL_MS:g} ms: **{'met' if added[50] < GOAL_MS else 'missed'}**"
                if concurrency == 1
                else ""
            )
        )
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    header = [
        f"## `weir run` router overhead, {settings['date']}",
        "",
        f'Machine: `nproc` {info["nproc"]}, CPU model name "{info["cpu_model"]}", '
        f"{info['memory_gib']} GiB, {info['kernel']}; Python {info['python']}; {packages}; "
        f"weir commit {info['commit']}.",
        "",
        f"Settings: {settings['rounds']} rounds; in each, per path and concurrency, "
        f"{settings['requests']:,} requests or {settings['slot']:.1f} s, whichever ends first "
        f"({settings['capped']} of {len(samples)} measurements ended on time), after "
        f"{settings['warmup']} warm-up requests; paths interleaved (the order alternates every "
        f"round); {settings['seconds']:.0f} s of measuring. Request: V2 JSON, "
        f"{len(BODY)} B, one row FP32 [1, 4]; concurrency 1 = one `httpx.Client`, "
        f"concurrency {max(concurrencies)} = raw asyncio keep-alive connections. "
        'CPU columns: cores busy (median over rounds); "client" is this benchmark.',
        "",
    ]
    return "\n".join([*header, *lines, "", *verdicts, ""])


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Latency the local router of `weir run` adds (issue #9: < 1 ms at p50)."
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds (default 4)")
    parser.add_argument(
        "--requests",
        type=int,
        default=3000,
        help="requests per path per round at each concurrency (default 3000)",
    )
    parser.add_argument(
        "--warmup", type=int, default=200, help="unmeasured requests before each measurement"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="the concurrent load's connections (default 8)"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=100,
        help="seconds of measuring at most (default 100), shared equally by the measurements",
    )
    parser.add_argument("--out", type=Path, default=RESULTS_FILE, help="markdown result file")
    return parser.parse_args(argv)


def _stop_soon(signum: int, frame: FrameType | None) -> None:
    # Not an exception here: an event loop's callback could swallow it. The load loops end at
    # once and the main loop raises, so `finally` stops `weir run`.
    STOP.set()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_soon)
    from weir_server import sample_models

    info = machine_info()
    log(f"machine: nproc {info['nproc']}, {info['cpu_model']}, Python {info['python']}")
    with tempfile.TemporaryDirectory(prefix="weir-bench-router-") as tmp:
        folder, state_dir = Path(tmp) / "manifests", Path(tmp) / "state"
        folder.mkdir()
        state_dir.mkdir()
        model_path = sample_models.iris(Path(tmp) / "iris.onnx")
        write_manifest(folder, model_path)
        run = WeirRun(folder, state_dir)
        clients: list[httpx.Client] = []
        try:
            log(f"starting: {' '.join(run.argv)}")
            run.wait_healthy(MODEL, timeout=90)
            servers = [s for s in run.servers(MODEL) if s.get("ready") and s.get("port")]
            if len(servers) != 1:
                raise RuntimeError(f"expected one ready server, got {servers}")
            server = servers[0]
            log(
                f"{MODEL} is Healthy: router on port {run.port}, its server {server['name']} "
                f"(pid {server['pid']}) on port {server['port']}"
            )
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            targets = {}
            for path, port in (("direct", int(server["port"])), ("router", run.port)):
                client = httpx.Client(timeout=10, limits=limits)
                clients.append(client)
                targets[path] = Target(path, port, client)
            outputs = []
            for target in targets.values():
                url = f"http://127.0.0.1:{target.port}{INFER_PATH}"
                response = target.client.post(url, content=BODY, headers=HEADERS)
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text}")
                outputs.append(response.json()["outputs"])
            if outputs[0] != outputs[1]:
                raise RuntimeError("the router's answer differs from the server's")
            watched = Watched(run.process.pid, server.get("pid"))
            samples: list[Sample] = []
            started = time.monotonic()
            # Every measurement gets the same share of the time limit, so every round finishes
            # and both paths get equal time even when the router is slow.
            slot = args.time_limit / (args.rounds * 2 * 2)
            for index in range(args.rounds):
                order = PATHS if index % 2 == 0 else PATHS[::-1]
                for concurrency in (1, args.concurrency):
                    for path in order:
                        sample = measure(
                            targets[path],
                            concurrency,
                            args.requests,
                            args.warmup,
                            time.monotonic() + slot,
                            index,
                            watched,
                        )
                        if STOP.is_set():
                            raise KeyboardInterrupt("SIGTERM")
                        samples.append(sample)
                        log(
                            f"round {index + 1}/{args.rounds}  c={concurrency:<2} {path:<6} "
                            f"{len(sample.latencies):5d} req  p50 {fmt(sample.p(50))} ms  "
                            f"p99 {fmt(sample.p(99))} ms  {sample.rps:6,.0f} req/s  "
                            f"errors {sample.errors}  cpu: weir run "
                            f"{fmt(sample.cpu['weir_run'])} server {fmt(sample.cpu['server'])} "
                            f"client {fmt(sample.cpu['client'])} other {fmt(sample.cpu['other'])}"
                        )
            settings = {
                "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "rounds": args.rounds,
                "requests": args.requests,
                "slot": slot,
                "capped": sum(len(x.latencies) + x.errors < args.requests for x in samples),
                "warmup": args.warmup,
                "seconds": time.monotonic() - started,
            }
            text = report(samples, settings, info)
        finally:
            for client in clients:
                client.close()
            code = run.stop()
            log(f"weir run exited with {code}")
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    log(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
