"""What shadow traffic (`weir serve --mirror-config FILE`) costs the stable, on one machine.

For each model (iris: HTTP and encoding dominate; mlp: compute dominates) it starts, on free
127.0.0.1 ports (all `--no-access-log`, JSON tensors, one row per request):

  stable      `weir serve MODEL --mirror-config FILE`: the server under load;
  no-flag     `weir serve MODEL` without the flag: the same server with no mirror at all;
  canary      a second `weir serve MODEL` (the copies' real destination);
  echo        a bare Granian RSGI server that answers every request with the stable's own JSON
              answer, precomputed (bench/server.py's (b') echo): a canary that answers almost
              instantly, so that what the stable pays for mirroring (queueing, the
              weir_server.upstream client, decoding and comparing the canary's answer, all on
              the stable's event loop) can be told apart from CPU the canary takes from the
              stable.

and measures, with wrk (1 thread, `--concurrency` keep-alive connections, a closed loop),
requests/s and p50/p99 client latency of the stable with the mirror file set to:

  off         `{"percent": 0}` (the flag given, nothing mirrored);
  canary 10%  / canary 100%: to the canary, `agreement: top1` on the model's first output;
  echo 10%    / echo 100%: the same, to the echo;
  echo 100% uncapped: the same with `"maxPerSecond": 100000` (the most the file accepts; the
              others leave it out, so the stable's default cap of 100 copies/s applies): what
              each copy costs when nothing bounds the copies a second;
  no flag     the no-flag server instead of the stable (what giving the flag costs).

Measurements are interleaved: off, X, off, Y, ... off, so that every mirrored measurement has
an off measurement just before and just after it, and its ratio to their mean cancels drift on
a shared machine; each ratio is the median over `--rounds` rounds. Between measurements the
mirror queue is drained (the stable's `weir_shadow_mirrored_requests_total` stops moving) and
the file is rewritten at least a second after the stable last looked at it, then one request
makes the stable re-read it. For every measurement the stable's shadow counters are read from
its /metrics (copies mirrored, dropped by reason: `rate` over maxPerSecond, `queue` the queue
full; canary errors, rows compared and agreed) and the CPU of the stable, the canary, the echo,
wrk and everything else.

Every weir server and the echo are checked to answer what in-process ONNX Runtime answers
before any load, and always stopped at the end. On a small machine the canary and wrk compete
with the stable for the same cores: the CPU columns say by how much.

Usage: `make bench-shadow` (= `.venv/bin/python bench/shadow.py`: about 4 minutes on 2 cores);
prints markdown tables and writes them, with the raw figures, to bench/results/shadow-*.{md,json}
(git-ignored). `--help` for the knobs.

`--detection` (`make bench-shadow-detection`: about 15 minutes on 2 cores) measures instead what
a shadow step decides, end to end in `weir run` (tests/support/local_run.py: real servers,
router and rollout engine; iris v1, one server, two client threads of uniform iris rows): steps
`shadow 100 % for 5s, setWeight 50, pause 5s`, analysis `interval: 5s, failureThreshold: 2`,
`agreement: top1 on probabilities, minRate 0.95, minSamples 20`. `--runs` times each (a new
version from `set-model`, the status polled every 50 ms): `iris_swapped` (labels swapped, 0 %
agreement; one weir run, the stable stays v1), which must reach RolledBack with reason
AgreementFailed and canary weight 0 throughout; and `iris_retrained` (about 98 % agreement,
measured first with in-process ONNX Runtime on 10,000 rows drawn as the traffic draws them),
which must be promoted (a fresh weir run serving v1 each time); `iris_erroring` (HTTP 500 on
about one row in five; one weir run), which must be rolled back in the shadow with weight 0
throughout; and, with no traffic at all, `iris_swapped` again (one weir run), which must be
held in the shadow (Paused, weight 0) for IDLE_SECONDS, neither promoted nor failed. Every
client request must succeed. Writes bench/results/shadow-detection-*.{md,json}; exits 1 if a
run did not end as it must.

`--latency` (`make bench-shadow-latency` = `--latency --concurrency 8 --duration 3 --rounds 2`:
about 3 minutes on 2 cores) measures instead the stable's client latency (p50, p99, req/s,
failed client requests and its shadow counters) on iris with mirroring off, at 10 % and at
100 % to each of: a healthy weir canary, a slow one (answers after SLOW_SECONDS), a dead one
(nothing listens on its port) and a hanging one (accepts, never answers); the last three are
FakeCanary servers in this process, or a free port. A fresh stable per kind of canary (copies
queued for a slow one keep being sent to it after the file changes), interleaved with off as
above. Writes bench/results/shadow-latency-*.{md,json}; exits 1 if a client request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def _load_server_bench() -> ModuleType:
    """bench/server.py, for its servers, models, payloads and wrk (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("weir_bench_server", BENCH / "server.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load bench/server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sb = _load_server_bench()
log, median, fmt = sb.log, sb.median, sb.fmt

CANARY_REVISION = "c1"
ECHO_REVISION = "echo"
UNCAPPED = 100000  # the largest maxPerSecond the mirror file accepts
# configuration -> (label, server the load goes to, mirror destination or None, percent,
# maxPerSecond or None: the file leaves it out, so the stable's default applies)
CONFIGS: dict[str, tuple[str, str, str | None, float, int | None]] = {
    "off": ("off (`percent: 0`)", "stable", None, 0, None),
    "canary10": ("10 % to a weir canary", "stable", "canary", 10, None),
    "canary100": ("100 % to a weir canary", "stable", "canary", 100, None),
    "echo10": ("10 % to an instant echo", "stable", "echo", 10, None),
    "echo100": ("100 % to an instant echo", "stable", "echo", 100, None),
    "echo100u": (
        f"100 % to an instant echo, `maxPerSecond: {UNCAPPED}`",
        "stable",
        "echo",
        100,
        UNCAPPED,
    ),
    "noflag": ("no `--mirror-config` at all", "noflag", None, 0, None),
}
MIRRORED = ("canary10", "canary100", "echo10", "echo100", "echo100u", "noflag")
# --latency: the stable's latency with a healthy, a slow (answers after SLOW_SECONDS), a dead
# (nothing listens) and a hanging (accepts, never answers) canary, at 10 and 100 %
for _key, _what in (
    ("canary", "a healthy weir canary"),
    ("slow", "a slow canary (answers after 10 s)"),
    ("dead", "a dead canary (nothing listens)"),
    ("hang", "a hanging canary (accepts, never answers)"),
):
    for _percent in (10, 100):
        CONFIGS.setdefault(
            f"{_key}{_percent}", (f"{_percent} % to {_what}", "stable", _key, _percent, None)
        )
LATENCY_MIRRORED = tuple(f"{k}{p}" for k in ("canary", "slow", "dead", "hang") for p in (10, 100))
SLOW_SECONDS = 10.0
DROP_REASONS = ("rate", "queue")
SHADOW_METRICS = {
    "mirrored": "weir_shadow_mirrored_requests_total",
    "dropped": "weir_shadow_dropped_requests_total",
    "errors": "weir_shadow_canary_errors_total",
    "compared": "weir_shadow_compared_samples_total",
    "agreed": "weir_shadow_agreed_samples_total",
}
RELOAD_AFTER = 1.05  # s after the stable's last look at the file (it looks at most once a second)


# --------------------------------------------------------------------------------------------
# Servers and the mirror file


def shadow_counts(server: Any) -> dict[str, float]:
    """The stable's shadow counters, summed over every canary revision (0 before the first);
    the dropped ones also by reason (`dropped_rate`, `dropped_queue`)."""
    totals = dict.fromkeys([*SHADOW_METRICS, *(f"dropped_{r}" for r in DROP_REASONS)], 0.0)
    names = {v: k for k, v in SHADOW_METRICS.items()}
    status, _, body = sb.http(server.base + "/metrics", timeout=5)
    if status != 200:
        raise RuntimeError(f"{server.label}: /metrics answered {status}")
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        key = names.get(line.split("{", 1)[0].split(" ", 1)[0])
        if key is None:
            continue
        value = float(line.rsplit(" ", 1)[1])
        totals[key] += value
        if key == "dropped":
            for reason in DROP_REASONS:
                if f'reason="{reason}"' in line:
                    totals[f"dropped_{reason}"] += value
    return totals


def write_mirror(path: Path, config: str, urls: dict[str, str], output: str) -> None:
    _, _, destination, percent, rate = CONFIGS[config]
    if destination is None:
        document: dict[str, Any] = {"percent": 0}
    else:
        document = {
            "url": urls[destination],
            "percent": percent,
            "revision": ECHO_REVISION if destination == "echo" else CANARY_REVISION,
            "agreement": {"compare": "top1", "output": output},
        }
        if rate is not None:
            document["maxPerSecond"] = rate
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(document))
    os.replace(scratch, path)  # the stable never reads half a file


def wait_drained(stable: Any, timeout: float = 15.0) -> float:
    """Wait until the stable sends no more copies (its queue is empty); the seconds waited."""
    started = time.monotonic()
    last = shadow_counts(stable)["mirrored"]
    while time.monotonic() - started < timeout:
        time.sleep(0.2)
        now = shadow_counts(stable)["mirrored"]
        if now == last:
            break
        last = now
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Cell(sb.RoundCell):
    """cpu: stable (the loaded server), canary, echo, wrk, other."""

    shadow: dict[str, float] = field(default_factory=dict)  # the stable's shadow counters' deltas
    p50_ratio: float = math.nan  # --latency: p50 / p99 over the off ones' mean either side,
    p99_ratio: float = math.nan  # and the difference to it
    p50_added_ms: float = math.nan
    p99_added_ms: float = math.nan


@dataclass
class Rig:
    """The four servers of one model, the mirror file and the wrk script."""

    model: Any
    servers: dict[str, Any]
    mirror_file: Path
    script: Path
    output: str
    last_infer: float = field(default_factory=time.monotonic)
    extra_urls: dict[str, str] = field(default_factory=dict)  # --latency: slow, dead, hang

    @property
    def urls(self) -> dict[str, str]:
        return {**{name: server.base for name, server in self.servers.items()}, **self.extra_urls}


def measure(rig: Rig, config: str, round_: int, opts: argparse.Namespace) -> Cell:
    stable = rig.servers["stable"]
    loaded = rig.servers[CONFIGS[config][1]]
    wait_drained(stable)
    if loaded is stable:
        write_mirror(rig.mirror_file, config, rig.urls, rig.output)
        # The stable looks at the file on an infer request at least a second after its last
        # look: wait for that, then make one request to have it read the new file.
        time.sleep(max(0.0, rig.last_infer + RELOAD_AFTER - time.monotonic()))
        payload = rig.model.payloads["json"]
        status, _, body = sb.http(stable.base + rig.model.infer_path, payload.body, payload.headers)
        if status != 200:
            raise RuntimeError(f"stable answered {status}: {body[:300]!r}")
    before = shadow_counts(stable)
    watched = {"stable": loaded}
    watched.update({k: rig.servers[k] for k in ("canary", "echo") if k in rig.servers})
    result, cpu = sb.wrk_round(
        opts.wrk,
        loaded,
        watched,
        rig.model.infer_path,
        rig.script,
        opts.concurrency,
        opts.duration,
    )
    if loaded is stable:
        rig.last_infer = time.monotonic()
    wait_drained(stable)  # copies still queued when wrk stopped belong to this measurement
    after = shadow_counts(stable)
    return Cell(
        model=rig.model.name,
        config=config,
        round=round_,
        cpu=cpu,
        shadow={k: after[k] - before[k] for k in after},
        **sb.round_fields(result),
    )


def start_rig(name: str, path: Path, work: Path, stack: contextlib.ExitStack) -> Rig:
    model, _ = sb.prepare_model(name, path, 1, 1)
    mirror_file = work / f"{name}-mirror.json"
    mirror_file.write_text(json.dumps({"percent": 0}))
    payload = model.payloads["json"]
    servers: dict[str, Any] = {}
    response_file = work / f"{name}-response.json"
    for key, extra in (
        ("stable", ["--mirror-config", str(mirror_file)]),
        ("noflag", []),
        ("canary", []),
    ):
        servers[key], body = sb.start_checked(model, f"{key} ({name})", extra, work, stack)
        if key == "stable":
            response_file.write_bytes(body)
    port = sb.free_port()
    echo = sb.Server(f"echo ({name})", sb.echo_command(port, response_file, rsgi=True), port, work)
    servers["echo"] = stack.enter_context(sb.running(echo))
    status, _, body = sb.http(echo.base + model.infer_path, payload.body, payload.headers)
    if status != 200 or body != response_file.read_bytes():
        raise RuntimeError(f"{echo.label} did not answer the stable's response")
    log("  every server answers what in-process ONNX Runtime answers")
    script = sb.write_wrk_script(payload, work, f"{name}-json")
    output = next(iter(model.expected))  # the model's first output: what `top1` compares
    return Rig(model, servers, mirror_file, script, output)


def schedule(rounds: int, mirrored: Sequence[str] = MIRRORED) -> list[tuple[str, int]]:
    """off, X, off, Y, ..., off: every mirrored measurement between two off ones; the order of
    the others turns by one each round."""
    order: list[tuple[str, int]] = []
    for r in range(rounds):
        shifted = (*mirrored[r % len(mirrored) :], *mirrored[: r % len(mirrored)])
        for config in shifted:
            order += [("off", r + 1), (config, r + 1)]
    return [*order, ("off", rounds)]


def run_model(name: str, path: Path, work: Path, opts: argparse.Namespace) -> list[Cell]:
    log(f"\n== {name}: starting the stable, the no-flag server, the canary and the echo")
    with contextlib.ExitStack() as stack:
        rig = start_rig(name, path, work, stack)
        sb.run_wrk(
            opts.wrk, rig.servers["stable"], rig.model.infer_path, rig.script, opts.concurrency, 1
        )
        rig.last_infer = time.monotonic()
        cells = []
        plan = schedule(opts.rounds)
        for index, (config, round_) in enumerate(plan, 1):
            cell = measure(rig, config, round_, opts)
            cells.append(cell)
            share = cell.shadow["mirrored"] / cell.requests if cell.requests else math.nan
            log(
                f"  [{index:2d}/{len(plan)}] r{round_} {name:4s} {config:9s} {cell.rps:7.0f} req/s"
                f"  p50 {cell.p50_ms:6.2f} ms  p99 {cell.p99_ms:6.2f} ms  mirrored {share:4.2f}"
                f"  dropped rate {cell.shadow['dropped_rate']:.0f}"
                f" queue {cell.shadow['dropped_queue']:.0f}  CPU "
                + " ".join(f"{k} {v:.2f}" for k, v in cell.cpu.items())
                + (f"  ERRORS {cell.errors}" if cell.errors else "")
            )
    sb.interleaved_ratios(cells)
    return cells


# --------------------------------------------------------------------------------------------
# Report


def summarize(cells: list[Cell], mirrored: Sequence[str] = MIRRORED) -> list[dict[str, Any]]:
    rows = []
    for config in ("off", *mirrored):
        runs = [c for c in cells if c.config == config]
        if not runs:
            continue
        requests = sum(c.requests for c in runs)
        compared = sum(c.shadow["compared"] for c in runs)
        rows.append(
            {
                "config": config,
                "label": CONFIGS[config][0],
                "measurements": len(runs),
                "requests_per_s": median([c.rps for c in runs]),
                "requests_per_s_min": min(c.rps for c in runs),
                "requests_per_s_max": max(c.rps for c in runs),
                "ratio_to_off": median([c.ratio for c in runs]),
                "p50_ratio_to_off": median([c.p50_ratio for c in runs]),
                "p99_ratio_to_off": median([c.p99_ratio for c in runs]),
                "p50_added_ms": median([c.p50_added_ms for c in runs]),
                "p99_added_ms": median([c.p99_added_ms for c in runs]),
                "p99_ms_max": max(c.p99_ms for c in runs),
                "ratio_min": min((c.ratio for c in runs), default=math.nan),
                "ratio_max": max((c.ratio for c in runs), default=math.nan),
                "p50_ms": median([c.p50_ms for c in runs]),
                "p99_ms": median([c.p99_ms for c in runs]),
                "requests": requests,
                "errors": sum(c.errors for c in runs),
                "mirrored_share": sum(c.shadow["mirrored"] for c in runs) / requests,
                "dropped": sum(c.shadow["dropped"] for c in runs),
                **{
                    f"dropped_{r}": sum(c.shadow[f"dropped_{r}"] for c in runs)
                    for r in DROP_REASONS
                },
                "copies_per_s": median([c.shadow["mirrored"] / c.seconds for c in runs]),
                "canary_errors": sum(c.shadow["errors"] for c in runs),
                "agreed_share": (sum(c.shadow["agreed"] for c in runs) / compared)
                if compared
                else math.nan,
                "cpu": {k: median([c.cpu[k] for c in runs]) for k in runs[0].cpu},
                "stable_cpu_us_per_request": median(
                    [c.cpu["stable"] / c.rps * 1e6 if c.rps else math.nan for c in runs]
                ),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| stable's mirror | req/s (median) | min–max | vs off (median, min–max) | p50 ms "
        "| p99 ms | mirrored / answered | copies/s | dropped: rate | dropped: queue "
        "| canary errors | agreed | CPU stable "
        "| stable CPU µs / request | canary | echo | wrk | other |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        cpu = row["cpu"]
        ratio = (
            "1 (reference)"
            if row["config"] == "off"
            else f"{row['ratio_to_off']:.3f} ({row['ratio_min']:.3f}–{row['ratio_max']:.3f})"
        )
        agreed = "–" if math.isnan(row["agreed_share"]) else f"{row['agreed_share']:.0%}"
        lines.append(
            f"| {row['label']} | {row['requests_per_s']:,.0f} "
            f"| {row['requests_per_s_min']:,.0f}–{row['requests_per_s_max']:,.0f} | {ratio} "
            f"| {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | {row['mirrored_share']:.3f} "
            f"| {row['copies_per_s']:,.0f} "
            f"| {row['dropped_rate']:,.0f} | {row['dropped_queue']:,.0f} "
            f"| {row['canary_errors']:,.0f} | {agreed} "
            f"| {fmt(cpu['stable'])} | {fmt(row['stable_cpu_us_per_request'], 0)} "
            f"| {fmt(cpu['canary'])} | {fmt(cpu['echo'])} "
            f"| {fmt(cpu['wrk'])} | {fmt(cpu['other'])} |"
        )
    return lines


def render(report: dict[str, Any]) -> str:
    machine = report["machine"]
    out = [
        f"Run of {report['finished_at']}: `{report['command']}`",
        "",
        f"Machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['memory_gib']} GiB;"
        f" two CPU-bound processes do {machine['parallel_capacity']:.2f}x the work of one; "
        f"background load {machine['background_cpu']:.2f} cores before the run; Python "
        f"{machine['python']}; {machine['wrk']}; commit {machine['commit']}.",
        "",
        f"Load: wrk, 1 thread, {report['settings']['concurrency']} keep-alive connections, "
        f"{report['settings']['duration']:g} s per measurement, {report['settings']['rounds']} "
        "rounds; `vs off` = req/s over the mean of the off measurements just before and after.",
    ]
    for model, rows in report["summaries"].items():
        out += ["", f"### {model}", "", *table(rows)]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# --latency: the stable's latency with a healthy, slow, dead and hanging canary


class FakeCanary:
    """A canary on 127.0.0.1 in a thread of this process: `slow` reads each request and answers
    `response` after `delay` s (keep-alive); `hang` accepts connections and never reads nor
    answers. Stopped with the process (a daemon thread)."""

    def __init__(self, mode: str, response: bytes, delay: float = SLOW_SECONDS) -> None:
        self.mode, self.response, self.delay = mode, response, delay
        self._ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._main, name=f"fake-{mode}", daemon=True).start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{mode} canary did not start")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _main(self) -> None:
        async def serve() -> None:
            server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await asyncio.Event().wait()

        asyncio.run(serve())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "hang":
                await reader.read()  # until the stable closes the connection
                return
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            head += f"content-length: {len(self.response)}\r\n\r\n".encode()
            while True:
                headers = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in headers.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                await asyncio.sleep(self.delay)
                writer.write(head + self.response)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


def start_stable(rig: Rig, work: Path, stack: contextlib.ExitStack, tag: str) -> None:
    """A fresh stable (`weir serve --mirror-config`) into rig.servers["stable"], checked."""
    model, payload = rig.model, rig.model.payloads["json"]
    write_mirror(rig.mirror_file, "off", rig.urls, rig.output)
    port = sb.free_port()
    argv = sb.weir_command(
        model, port, ["--no-access-log", "--mirror-config", str(rig.mirror_file)]
    )
    server = stack.enter_context(sb.running(sb.Server(f"stable {tag}", argv, port, work)))
    status, headers, body = sb.http(server.base + model.infer_path, payload.body, payload.headers)
    if status != 200:
        raise RuntimeError(f"{server.label}: got {status}: {body[:300]!r}")
    sb.check_response(model, "json", headers, body)
    rig.servers["stable"] = server


def start_latency_rig(name: str, path: Path, work: Path, stack: contextlib.ExitStack) -> Rig:
    """A healthy weir canary (`weir serve`), a slow and a hanging canary (FakeCanary) and a dead
    one (a free port nothing listens on); the stables come later (start_stable)."""
    model, _ = sb.prepare_model(name, path, 1, 1)
    mirror_file = work / f"{name}-latency-mirror.json"
    mirror_file.write_text(json.dumps({"percent": 0}))
    payload = model.payloads["json"]
    port = sb.free_port()
    argv = sb.weir_command(model, port, ["--no-access-log"])
    canary = stack.enter_context(sb.running(sb.Server(f"canary ({name})", argv, port, work)))
    status, headers, answer = sb.http(canary.base + model.infer_path, payload.body, payload.headers)
    if status != 200:
        raise RuntimeError(f"{canary.label}: got {status}: {answer[:300]!r}")
    sb.check_response(model, "json", headers, answer)
    extra_urls = {mode: FakeCanary(mode, answer).base for mode in ("slow", "hang")}
    extra_urls["dead"] = f"http://127.0.0.1:{sb.free_port()}"
    log(f"  the canary answers what in-process ONNX Runtime answers; {extra_urls}")
    script = sb.write_wrk_script(payload, work, f"{name}-latency-json")
    output = next(iter(model.expected))
    return Rig(model, {"canary": canary}, mirror_file, script, output, extra_urls=extra_urls)


def run_latency(name: str, path: Path, work: Path, opts: argparse.Namespace) -> list[Cell]:
    """One fresh stable per kind of canary: copies still queued for a slow or hanging canary
    when the file changes are still sent to it (minutes, at SENDERS per READ_TIMEOUT), and
    would fill the next measurement's queue."""
    log(f"\n== {name} --latency: a healthy canary, slow / hanging / dead ones")
    cells: list[Cell] = []
    with contextlib.ExitStack() as stack:
        rig = start_latency_rig(name, path, work, stack)
        for kind in ("canary", "dead", "slow", "hang"):
            with contextlib.ExitStack() as per_kind:
                start_stable(rig, work, per_kind, f"for {kind} ({name})")
                stable = rig.servers["stable"]
                sb.run_wrk(opts.wrk, stable, rig.model.infer_path, rig.script, opts.concurrency, 1)
                rig.last_infer = time.monotonic()
                plan = schedule(opts.rounds, (f"{kind}10", f"{kind}100"))
                mine: list[Cell] = []
                for index, (config, round_) in enumerate(plan, 1):
                    cell = measure(rig, config, round_, opts)
                    mine.append(cell)
                    log(
                        f"  [{index:2d}/{len(plan)}] r{round_} {config:9s} {cell.rps:7.0f} req/s"
                        f"  p50 {cell.p50_ms:6.2f} ms  p99 {cell.p99_ms:6.2f} ms"
                        f"  sent {cell.shadow['mirrored']:.0f}  dropped rate"
                        f" {cell.shadow['dropped_rate']:.0f} queue"
                        f" {cell.shadow['dropped_queue']:.0f}  canary errors"
                        f" {cell.shadow['errors']:.0f}  client errors {cell.errors}"
                    )
            for i, cell in enumerate(mine):
                if cell.config != "off":
                    before, after = mine[i - 1], mine[i + 1]
                    cell.ratio = cell.rps / ((before.rps + after.rps) / 2)
                    for q in ("p50", "p99"):
                        off = (getattr(before, f"{q}_ms") + getattr(after, f"{q}_ms")) / 2
                        setattr(cell, f"{q}_ratio", getattr(cell, f"{q}_ms") / off)
                        setattr(cell, f"{q}_added_ms", getattr(cell, f"{q}_ms") - off)
            cells += mine
    return cells


def latency_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| stable's mirror | req/s (median) | vs off | p50 ms | vs off | added p50 ms | p99 ms "
        "| vs off | added p99 ms | worst p99 ms | client requests failed | copies sent "
        "| dropped: rate | dropped: queue | canary errors | CPU stable | canary |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        off = row["config"] == "off"
        lines.append(
            f"| {row['label']} | {row['requests_per_s']:,.0f} "
            f"| {'1' if off else fmt(row['ratio_to_off'], 3)} | {fmt(row['p50_ms'])} "
            f"| {'1' if off else fmt(row['p50_ratio_to_off'], 3)} "
            f"| {'–' if off else fmt(row['p50_added_ms'], 3)} | {fmt(row['p99_ms'])} "
            f"| {'1' if off else fmt(row['p99_ratio_to_off'], 3)} "
            f"| {'–' if off else fmt(row['p99_added_ms'], 3)} | {fmt(row['p99_ms_max'])} "
            f"| {row['errors']} of {row['requests']:,} "
            f"| {row['mirrored_share'] * row['requests']:,.0f} "
            f"| {row['dropped_rate']:,.0f} | {row['dropped_queue']:,.0f} "
            f"| {row['canary_errors']:,.0f} | {fmt(row['cpu']['stable'])} "
            f"| {fmt(row['cpu'].get('canary', math.nan))} |"
        )
    return lines


def main_latency(opts: argparse.Namespace, argv: Sequence[str]) -> int:
    machine = sb.machine_info(opts.wrk)
    machine["background_cpu"] = round(sb.background_load(), 2)
    paths = sb.ensure_models()
    started = datetime.now(UTC)
    try:
        with tempfile.TemporaryDirectory(prefix="weir-bench-shadow-latency-") as folder:
            cells = run_latency("iris", paths["iris"], Path(folder), opts)
    finally:
        sb.Server.stop_all()
    rows = summarize(cells, LATENCY_MIRRORED)
    report: dict[str, Any] = {
        **report_header(argv, started, machine, opts, slow_seconds=SLOW_SECONDS),
        "summary": rows,
        "cells": [c.to_json() for c in cells],
    }
    out = opts.out or sb.RESULTS_DIR / f"shadow-latency-{started:%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = "\n".join(
        [
            f"Run of {report['finished_at']}: `{report['command']}`",
            "",
            f"Machine: nproc {machine['nproc']}, {machine['cpu_model']}, "
            f"{machine['memory_gib']} GiB; background load {machine['background_cpu']:.2f} cores "
            f"before the run; Python {machine['python']}; {machine['wrk']}; commit "
            f"{machine['commit']}.",
            "",
            f"Load: iris, JSON one row, wrk 1 thread, {opts.concurrency} keep-alive connections, "
            f"{opts.duration} s per measurement, {opts.rounds} rounds; `vs off` and `added` = "
            "against the mean of the off measurements just before and after (median over rounds).",
            "",
            *latency_table(rows),
        ]
    )
    out.with_suffix(".md").write_text(text + "\n")
    log("\n" + text)
    log(f"raw results: {out}; table: {out.with_suffix('.md')}")
    failed = sum(row["errors"] for row in rows)
    return 0 if failed == 0 else 1


# --------------------------------------------------------------------------------------------
# --detection: what a shadow step decides, end to end in `weir run`

DETECTION_STEPS: list[dict[str, Any]] = [
    {"shadow": {"percent": 100, "duration": "5s"}},
    {"setWeight": 50},
    {"pause": {"duration": "5s"}},
]
DETECTION_ANALYSIS: dict[str, Any] = {
    "interval": "5s",
    "failureThreshold": 2,
    "minRequests": 20,
    "agreement": {"output": "probabilities", "compare": "top1", "minRate": 0.95, "minSamples": 20},
}
OFFLINE_ROWS = 10_000
KINDS = ("swapped", "erroring", "retrained", "idle")


def _local_run() -> ModuleType:
    """tests/support/local_run.py (weir run in a child process, its control API, Traffic)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import tests.support.local_run as local_run

    return local_run


def offline_agreement(stable: Path, canary: Path, rows: int = OFFLINE_ROWS) -> float:
    """Top-1 agreement of two iris models in in-process ONNX Runtime, on `rows` rows drawn as
    the benchmark's Traffic draws them (tests.support.local_run.iris_row, uniform)."""
    import random

    import numpy as np
    import onnxruntime as ort

    rng = random.Random(0)
    batch = np.array([_local_run().iris_row(rng) for _ in range(rows)], dtype=np.float32)
    labels = []
    for model in (stable, canary):
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        labels.append(session.run(["probabilities"], {"input": batch})[0].argmax(axis=1))
    return float((labels[0] == labels[1]).mean())


@dataclass
class Rollout:
    """One canary shipped with `set-model` and followed to its end, polled every 50 ms."""

    # "swapped", "erroring" (must be rolled back in the shadow), "retrained" (must be
    # promoted) or "idle" (no traffic: must be held in the shadow, neither promoted nor failed)
    kind: str
    round: int
    seconds: float = math.nan  # set-model -> RolledBack seen / Healthy on it / held (idle)
    outcome: str = ""  # RolledBack, Promoted, Held (idle, watched for IDLE_SECONDS) or Timeout
    reason: str = ""  # the RolledBack condition's reason (AgreementFailed), or ""
    max_weight: int = 0
    client_requests: int = 0
    client_failures: int = 0
    windows: list[dict[str, Any]] = field(default_factory=list)  # agreement of each window

    @property
    def ok(self) -> bool:
        if self.client_failures:
            return False
        if self.kind == "swapped":
            return (self.outcome, self.reason, self.max_weight) == (
                "RolledBack",
                "AgreementFailed",
                0,
            )
        if self.kind == "erroring":
            return (self.outcome, self.max_weight) == ("RolledBack", 0)
        if self.kind == "idle":
            return (self.outcome, self.max_weight) == ("Held", 0)
        return self.outcome == "Promoted"


IDLE_SECONDS = 20.0  # an idle canary is watched this long once held: 4 analysis intervals


def _paused_reason(status: dict[str, Any]) -> str:
    paused = [c for c in status.get("conditions", []) if c.get("type") == "Paused"]
    return str(paused[0].get("message", "")) if paused else ""


def _held_in_shadow(status: dict[str, Any], version: str) -> bool | None:
    """For an idle canary: True while it is held in its shadow step (Paused, weight 0, the
    stable still v1), None before the status shows it, False once anything else happened to
    it (promoted, rolled back, given weight)."""
    canary = status.get("canary") or {}
    if canary.get("version") != version:
        last = (status.get("history") or [{}])[0]
        if last.get("version") == version or (status.get("stable") or {}).get("version") == version:
            return False
        return None
    if int(canary.get("weight", 0)) > 0 or status.get("phase") not in ("Paused", "Progressing"):
        return False
    return True if status.get("phase") == "Paused" and "shadow" in _paused_reason(status) else None


def follow(run: Any, rollout: Rollout, version: str, timeout: float) -> None:
    """Poll the status until the canary `version` is rolled back or promoted; an idle one
    (no traffic) is watched for IDLE_SECONDS instead, and must stay held in the shadow."""
    seen: set[str] = set()
    mine = False
    started = time.monotonic()
    held_since: float | None = None
    while time.monotonic() - started < timeout:
        status = run.status("iris")
        if rollout.kind == "idle":
            held = _held_in_shadow(status, version)
            if held is None:
                held_since = None
            elif held_since is None:
                held_since = time.monotonic()
            if held is False or (
                held_since is not None and time.monotonic() - held_since >= IDLE_SECONDS
            ):
                rollout.max_weight = max(
                    rollout.max_weight, int((status.get("canary") or {}).get("weight", 0))
                )
                rollout.outcome = "Held" if held else str(status.get("phase"))
                rollout.reason = _paused_reason(status)
                rollout.seconds = time.monotonic() - started
                return
            time.sleep(0.05)
            continue
        canary = status.get("canary") or {}
        if canary.get("version") == version:
            mine = True  # the status is this canary's from now on (not the last one's)
            rollout.max_weight = max(rollout.max_weight, int(canary.get("weight", 0)))
        analysis = status.get("lastAnalysis") or {}
        agreement = analysis.get("agreement") or {}
        at = analysis.get("at")
        if mine and at and at not in seen and agreement.get("samples"):
            seen.add(at)
            rollout.windows.append({"samples": agreement["samples"], "rate": agreement.get("rate")})
        stable = status.get("stable") or {}
        last = (status.get("history") or [{}])[0]
        if status.get("phase") == "RolledBack" and last.get("version") == version:
            rollout.outcome = "RolledBack"
            rolled = [c for c in status.get("conditions", []) if c.get("type") == "RolledBack"]
            rollout.reason = rolled[0].get("reason", "") if rolled else ""
        elif status.get("phase") == "Healthy" and stable.get("version") == version:
            rollout.outcome = "Promoted"
        if rollout.outcome:
            rollout.seconds = time.monotonic() - started
            return
        time.sleep(0.05)
    rollout.outcome = "Timeout"


def detection(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    lr = _local_run()
    from weir_server import sample_models

    models = {
        name: sample_models.BUILDERS[name](work / f"{name}.onnx")
        for name in ("iris", "iris_swapped", "iris_retrained", "iris_erroring")
    }
    models["iris_idle"] = models["iris_swapped"]  # wrong, but with no traffic nothing to compare
    offline = {
        kind: offline_agreement(models["iris"], models[f"iris_{kind}"])
        for kind in ("swapped", "retrained")
    }
    offline["idle"] = offline["swapped"]  # the same model (the erroring one fails whole batches)
    log(
        f"offline top-1 agreement with iris v1 on {OFFLINE_ROWS:,} uniform rows: "
        + ", ".join(f"{k} {v:.2%}" for k, v in offline.items())
    )
    rollout_spec = {"steps": DETECTION_STEPS, "analysis": DETECTION_ANALYSIS}
    rollouts: list[Rollout] = []

    def serving_v1(folder: Path, with_traffic: bool = True) -> tuple[Any, Any]:
        lr.write_manifests(
            folder / "manifests",
            lr.manifest("iris", models["iris"], "1", replicas=1, rollout=rollout_spec),
        )
        run = lr.LocalRun(folder / "manifests", folder / "state")
        run.wait_up()
        run.wait_healthy("iris", "1")
        traffic = lr.Traffic(run.router_url, threads=2, limit_seconds=opts.runs * 120 + 60)
        if with_traffic:
            traffic.start()
            time.sleep(1)
        return run, traffic

    def ship(run: Any, traffic: Any, kind: str, number: int) -> None:
        rollout = Rollout(kind, number)
        since = time.monotonic()
        version = f"{kind}-{number}"
        run.set_model("iris", models[f"iris_{kind}"], version)
        follow(run, rollout, version, opts.timeout)
        counts = traffic.counts(since=since)
        rollout.client_requests = sum(counts.values())
        rollout.client_failures = traffic.failures(since=since)
        rollouts.append(rollout)
        rates = " ".join(
            f"{w['rate']:.0%}/{w['samples']:.0f}" for w in rollout.windows if w["rate"] is not None
        )
        log(
            f"  {kind:9s} {number:2d}/{opts.runs}: {rollout.outcome} "
            f"({(rollout.reason or '-')[:60]}) in "
            f"{rollout.seconds:5.2f} s, max weight {rollout.max_weight}, "
            f"{rollout.client_failures}/{rollout.client_requests} client requests failed; "
            f"agreement/rows per window: {rates or '-'}" + ("" if rollout.ok else "  NOT OK")
        )

    # The swapped and the erroring canaries: one weir run each, a new version each round (the
    # stable stays v1 after every rollback).
    for kind, what in (
        ("swapped", "each must be rolled back in the shadow (AgreementFailed)"),
        ("erroring", "500 on about one row in five: each must be rolled back in the shadow"),
    ):
        log(f"\n== iris_{kind}: {opts.runs} canaries, {what}")
        run, traffic = serving_v1(work / kind)
        try:
            for number in range(1, opts.runs + 1):
                ship(run, traffic, kind, number)
                time.sleep(1)
        finally:
            traffic.stop()
            run.stop()
    # Idle: no traffic at all; each canary must be held in the shadow for IDLE_SECONDS (4
    # intervals), neither promoted nor failed, then the next version replaces it.
    log(
        f"\n== idle stable: {opts.runs} canaries (iris_swapped) with no traffic, each must be "
        f"held in the shadow for {IDLE_SECONDS:.0f} s"
    )
    run, traffic = serving_v1(work / "idle", with_traffic=False)
    try:
        for number in range(1, opts.runs + 1):
            ship(run, traffic, "idle", number)
    finally:
        run.stop()
    # The retrained canaries: each promoted, so each round starts a weir run serving v1 again.
    log(f"\n== iris_retrained: {opts.runs} canaries, each must be promoted")
    for number in range(1, opts.runs + 1):
        run, traffic = serving_v1(work / f"retrained-{number}")
        try:
            ship(run, traffic, "retrained", number)
        finally:
            traffic.stop()
            run.stop()
    summary: dict[str, Any] = {}
    for kind in KINDS:
        done = [r for r in rollouts if r.kind == kind]
        times = [r.seconds for r in done if not math.isnan(r.seconds)]
        rates = [w["rate"] for r in done for w in r.windows if w["rate"] is not None]
        summary[kind] = {
            "runs": len(done),
            "ok": sum(r.ok for r in done),
            "outcomes": {o: sum(r.outcome == o for r in done) for o in {r.outcome for r in done}},
            "median_seconds": median(times),
            "max_seconds": max(times, default=math.nan),
            "min_seconds": min(times, default=math.nan),
            "max_weight": max((r.max_weight for r in done), default=0),
            "client_requests": sum(r.client_requests for r in done),
            "client_failures": sum(r.client_failures for r in done),
            "window_rate_min": min(rates, default=math.nan),
            "window_rate_median": median(rates),
            "offline_agreement": offline.get(kind, math.nan),
        }
    return {
        "steps": DETECTION_STEPS,
        "analysis": DETECTION_ANALYSIS,
        "summary": summary,
        "rollouts": [{**r.__dict__, "ok": r.ok} for r in rollouts],
    }


def render_detection(report: dict[str, Any]) -> str:
    machine = report["machine"]
    s = report["detection"]["summary"]
    lines = [
        f"Run of {report['finished_at']}: `{report['command']}`",
        "",
        f"Machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['memory_gib']} GiB;"
        f" background load {machine['background_cpu']:.2f} cores before the run; Python "
        f"{machine['python']}; commit {machine['commit']}.",
        "",
        "| canary | offline top-1 agreement | runs | as expected | outcomes "
        "| set-model → end, median | max | min | max canary weight | agreement per window "
        "(median, min) | client requests failed |",
        "|---|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for kind, label in (
        ("swapped", "iris_swapped (labels swapped): → RolledBack"),
        ("erroring", "iris_erroring (500 on ~20 % of rows): → RolledBack"),
        ("retrained", "iris_retrained: → Promoted"),
        ("idle", f"iris_swapped, no traffic: → held {IDLE_SECONDS:.0f} s"),
    ):
        row = s[kind]
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items()))
        lines.append(
            f"| {label} | {fmt(row['offline_agreement'] * 100)} % | {row['runs']} "
            f"| {row['ok']}/{row['runs']} | {outcomes} | {fmt(row['median_seconds'])} s "
            f"| {fmt(row['max_seconds'])} s | {fmt(row['min_seconds'])} s | {row['max_weight']} "
            f"| {fmt(row['window_rate_median'] * 100, 1)} %, {fmt(row['window_rate_min'] * 100, 1)}"
            f" % | {row['client_failures']} of {row['client_requests']:,} |"
        )
    return "\n".join(lines) + "\n"


def main_detection(opts: argparse.Namespace, argv: Sequence[str]) -> int:
    machine = sb.machine_info(shutil.which("wrk") or "wrk")
    machine["background_cpu"] = round(sb.background_load(), 2)
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="weir-bench-shadow-detection-") as folder:
        result = detection(opts, Path(folder))
    report: dict[str, Any] = {
        "command": sb.script_command_line(__file__, argv),
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine,
        "detection": result,
    }
    out = opts.out or sb.RESULTS_DIR / f"shadow-detection-{started:%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = render_detection(report)
    out.with_suffix(".md").write_text(text)
    log("\n" + text)
    log(f"raw results: {out}; table: {out.with_suffix('.md')}")
    summary = result["summary"]
    return 0 if all(row["ok"] == row["runs"] for row in summary.values()) else 1


# --------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="iris,mlp", help="default: %(default)s")
    parser.add_argument("--concurrency", type=int, default=16, help="default: %(default)s")
    parser.add_argument(
        "--duration", type=int, default=2, help="seconds per measurement (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measurements of each mirrored configuration (default: %(default)s)",
    )
    parser.add_argument("--wrk", default="wrk", help="the wrk binary (default: %(default)s)")
    parser.add_argument(
        "--detection",
        action="store_true",
        help="instead: shadow steps in weir run, a wrong canary rolled back and a 98 %%-agreeing"
        " one promoted (`make bench-shadow-detection`)",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="instead: the stable's latency with a healthy, slow, dead and hanging canary at 10 and"
        " 100 %% (iris; `make bench-shadow-latency`; give --concurrency 8 --duration 3 --rounds 2)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=10,
        help="--detection: canaries of each kind (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="--detection: seconds a canary may take to end (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, help="raw results (default: bench/results/...)")
    return parser.parse_args(argv)


def report_header(
    argv: Sequence[str], started: datetime, machine: Any, opts: Any, **settings: Any
) -> dict[str, Any]:
    return sb.report_header(__file__, argv, started, machine, opts, **settings)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(argv)
    sb.stop_on_sigterm()
    if opts.detection:
        return main_detection(opts, argv)
    wrk = shutil.which(opts.wrk)
    if wrk is None:
        print(sb.WRK_HELP, file=sys.stderr)
        return 2
    opts.wrk = wrk
    if opts.latency:
        return main_latency(opts, argv)
    models = [m.strip() for m in opts.models.split(",") if m.strip()]
    machine = sb.loaded_machine_info(wrk)
    paths = sb.ensure_models()
    started = datetime.now(UTC)
    cells: dict[str, list[Cell]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="weir-bench-shadow-") as folder:
            for name in models:
                cells[name] = run_model(name, paths[name], Path(folder), opts)
    finally:
        sb.Server.stop_all()
    report: dict[str, Any] = {
        **report_header(argv, started, machine, opts),
        "summaries": {name: summarize(c) for name, c in cells.items()},
        "cells": {name: [c.to_json() for c in cs] for name, cs in cells.items()},
    }
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out = opts.out or sb.RESULTS_DIR / f"shadow-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = render(report)
    out.with_suffix(".md").write_text(text)
    log("\n" + text)
    log(f"raw results: {out}; tables: {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
