"""What model monitoring (`weir serve --reference FILE`, weir_server/monitor.py) costs the
server, on one machine, in one run: requests/s with monitoring off and on, side by side.

For each model (iris: HTTP and encoding dominate, ~70 µs a request; mlp: compute dominates)
it profiles a reference (`weir_server.profile`: iris on 10,000 rows of
`sample_models.iris_training_data`, mlp on 2,000 standard-normal rows, its first 32 features,
its 1,024-wide output as 1,024 classes with a softmax confidence: the costliest kind of output
there is) and starts, on free 127.0.0.1 ports, both `--no-access-log`:

  off   `weir serve MODEL`;
  on    `weir serve MODEL --reference FILE`.

Both are checked to answer what in-process ONNX Runtime answers. The load is wrk (1 thread,
`--concurrency` keep-alive connections, a closed loop, JSON, one row per request, as
bench/server.py and bench/shadow.py send it). Measurements are interleaved, off, on, off, on,
..., off, so that every "on" has an "off" just before and just after it, and its ratio to their
mean cancels drift on a shared machine; each ratio is reported as the median over `--rounds`.
After the last round the "on" server's `weir_drift_rows_total` must equal the rows it answered
(every row counted). The CPU of both servers, wrk and everything else is measured too.

It also times the monitor in this process, without HTTP: `Monitor.record` (the request path)
and `Monitor.flush` (the counting, once per 512 one-row requests) over 20,480 one-row requests
with the model's real outputs: the cost per request, free of the machine's noise.

Usage: `make bench-monitoring` (= `.venv/bin/python bench/monitoring.py`: about 3 minutes on 2
cores); prints markdown tables and writes them, with the raw figures, to
bench/results/monitoring-*.{md,json} (git-ignored). Exits 1 if a goal is missed (iris at most
5 % fewer requests/s, mlp at most 2 %) or a row was not counted. `--help` for the knobs."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
GOALS = {"iris": 0.95, "mlp": 0.98}  # the least "on" may answer of "off"'s requests/s
MLP_FEATURES = 32  # weir profile's default --max-features
IN_PROCESS_REQUESTS = 20_480


def _load_server_bench() -> ModuleType:
    """bench/server.py, for its servers, models, payloads, wrk and machine facts."""
    spec = importlib.util.spec_from_file_location("weir_bench_server", BENCH / "server.py")
    if spec is None or spec.loader is None:
        raise RuntimeError("cannot load bench/server.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sb = _load_server_bench()
log, median, fmt = sb.log, sb.median, sb.fmt


# --------------------------------------------------------------------------------------------
# References


def training_data(name: str) -> Any:
    import numpy as np

    from weir_server import sample_models

    if name == "iris":
        return sample_models.iris_training_data(sample_models.IRIS_TRAINING_ROWS)
    return np.random.default_rng(1).standard_normal((2_000, 1024)).astype(np.float32)


def write_reference(name: str, model: Path, folder: Path) -> Path:
    from weir_server.profile import Table, profile
    from weir_server.reference import write_reference as write

    started = time.monotonic()
    reference = profile(model, Table.from_array(training_data(name), f"{name} training data"))
    path = folder / f"{name}.reference.json"
    write(reference, path)
    bins = sum(len(f.shares) for f in reference.features)
    classes = sum(len(o.shares) for o in reference.outputs)
    log(
        f"  reference for {name}: {len(reference.features)} features ({bins} bins), "
        f"{len(reference.outputs)} outputs ({classes} classes or bins), "
        f"{time.monotonic() - started:.1f} s to profile"
    )
    return path


# --------------------------------------------------------------------------------------------
# The monitor in this process


def in_process(name: str, model_path: Path, reference: Path) -> dict[str, float]:
    """µs per one-row request of Monitor.record and of Monitor.flush, the model's outputs real."""
    from prometheus_client import CollectorRegistry

    from weir_server import monitor
    from weir_server.model import LoadedModel

    model = LoadedModel.load(model_path, intra_op_threads=1)
    loaded, sha256 = monitor.load_checked(reference, model.signature, model.path)
    data = training_data(name)
    count = IN_PROCESS_REQUESTS
    input_name = model.signature.inputs[0].name
    requests = [{input_name: data[i : i + 1]} for i in range(1024)]
    answers = [model.run(r) for r in requests]
    results: dict[str, list[float]] = {"record_us": [], "flush_us": []}
    for _ in range(3):
        watcher = monitor.Monitor(
            loaded, sha256, (name, "", "", ""), CollectorRegistry(), model.signature
        )
        flushing = watcher.flush
        spent = [0.0]

        def timed_flush(flush: Any = flushing, spent: list[float] = spent) -> None:
            started = time.perf_counter()
            flush()
            spent[0] += time.perf_counter() - started

        watcher.flush = timed_flush  # type: ignore[method-assign]
        started = time.perf_counter()
        for i in range(count):
            watcher.record(requests[i % 1024], answers[i % 1024])
        watcher.flush()
        total = time.perf_counter() - started
        if watcher.rows != count:
            raise RuntimeError(f"in-process monitor counted {watcher.rows} of {count} rows")
        results["record_us"].append((total - spent[0]) / count * 1e6)
        results["flush_us"].append(spent[0] / count * 1e6)
    record, flush = min(results["record_us"]), min(results["flush_us"])
    return {"record_us": record, "flush_us": flush, "total_us": record + flush}


# --------------------------------------------------------------------------------------------
# Measurements over HTTP


Cell = sb.RoundCell  # config "off" or "on"; cpu: server (the loaded one), wrk, other


@dataclass
class Rig:
    model: Any
    servers: dict[str, Any]
    script: Path
    answered: dict[str, int] = field(default_factory=lambda: {"off": 0, "on": 0})
    runs: dict[str, int] = field(default_factory=lambda: {"off": 0, "on": 0})
    redone: int = 0


def drift_rows(server: Any) -> float:
    status, _, body = sb.http(server.base + "/metrics", timeout=10)
    if status != 200:
        raise RuntimeError(f"{server.label}: /metrics answered {status}")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("weir_drift_rows_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_rig(name: str, path: Path, reference: Path, work: Path, stack: Any) -> Rig:
    model, _ = sb.prepare_model(name, path, 1, 1)
    servers: dict[str, Any] = {}
    for key, extra in (("off", []), ("on", ["--reference", str(reference)])):
        servers[key], _ = sb.start_checked(model, f"{key} ({name})", extra, work, stack)
    log("  both servers answer what in-process ONNX Runtime answers")
    script = sb.write_wrk_script(model.payloads["json"], work, f"{name}-json")
    return Rig(model, servers, script)


def measure(rig: Rig, config: str, round_: int, opts: argparse.Namespace) -> Cell:
    server = rig.servers[config]
    result, cpu = sb.wrk_round(
        opts.wrk,
        server,
        {"server": server},
        rig.model.infer_path,
        rig.script,
        opts.concurrency,
        opts.duration,
    )
    # wrk's count is of answers it read; a request still in flight when it stopped may have
    # been answered (and counted) too: at most `concurrency` more.
    rig.answered[config] += result["requests"]
    rig.runs[config] += 1
    return Cell(
        model=rig.model.name, config=config, round=round_, cpu=cpu, **sb.round_fields(result)
    )


def measured(rig: Rig, config: str, round_: int, opts: argparse.Namespace) -> Cell:
    """A measurement, redone (after waiting for a quiet machine, within --quiet-budget) while
    other processes kept more than BUSY_WARNING cores busy during it (at most --retries)."""
    for attempt in range(opts.retries + 1):
        cell = measure(rig, config, round_, opts)
        if cell.cpu["other"] <= sb.BUSY_WARNING or attempt == opts.retries:
            return cell
        if opts.quiet_budget <= 0:
            return cell
        log(
            f"  ({config} disturbed: other processes used {cell.cpu['other']:.2f} cores; "
            "waiting for a quiet machine to redo it)"
        )
        rig.redone += 1
        waited = time.monotonic()
        sb.wait_for_quiet(min(10.0, opts.quiet_budget))
        opts.quiet_budget -= time.monotonic() - waited
    return cell


def schedule(rounds: int) -> list[tuple[str, int]]:
    """off, on, off, on, ..., off: every "on" between two "off"."""
    order: list[tuple[str, int]] = []
    for r in range(1, rounds + 1):
        order += [("off", r), ("on", r)]
    return [*order, ("off", rounds)]


def run_model(
    name: str, path: Path, work: Path, opts: argparse.Namespace
) -> tuple[list[Cell], dict[str, Any]]:
    log(f"\n== {name}")
    reference = write_reference(name, path, work)
    micro = in_process(name, path, reference)
    log(
        f"  in process: record {micro['record_us']:.2f} µs + flush {micro['flush_us']:.2f} µs "
        f"= {micro['total_us']:.2f} µs per one-row request"
    )
    with contextlib.ExitStack() as stack:
        rig = start_rig(name, path, reference, work, stack)
        for config in ("off", "on"):  # warm-up: connections, caches, the first flushes
            sb.run_wrk(
                opts.wrk, rig.servers[config], rig.model.infer_path, rig.script, opts.concurrency, 1
            )
        time.sleep(1)  # requests still in flight when wrk stopped are answered (and counted)
        counted_before = drift_rows(rig.servers["on"])
        rig.answered["on"] = 0
        cells = []
        plan = schedule(opts.rounds)
        for index, (config, round_) in enumerate(plan, 1):
            cell = measured(rig, config, round_, opts)
            cells.append(cell)
            log(
                f"  [{index:2d}/{len(plan)}] r{round_} {name:4s} {config:3s} {cell.rps:8.0f} req/s"
                f"  p50 {cell.p50_ms:6.2f} ms  p99 {cell.p99_ms:6.2f} ms  CPU "
                + " ".join(f"{k} {v:.2f}" for k, v in cell.cpu.items())
                + (f"  ERRORS {cell.errors}" if cell.errors else "")
            )
        time.sleep(1)
        counted = drift_rows(rig.servers["on"]) - counted_before
    sb.interleaved_ratios(cells)
    check = {
        "rows_answered_by_wrk": rig.answered["on"],
        "rows_counted": counted,
        # wrk stops with up to `concurrency` requests in flight, which the server still
        # answers (and counts) but wrk never reads: at most that many more per measurement
        "every_row_counted": 0 <= counted - rig.answered["on"] <= opts.concurrency * rig.runs["on"],
        "measurements_redone": rig.redone,
    }
    return cells, {"in_process": micro, "counted": check}


# --------------------------------------------------------------------------------------------
# Report


def summarize(name: str, cells: list[Cell], extra: dict[str, Any]) -> dict[str, Any]:
    rows = {}
    for config in ("off", "on"):
        runs = [c for c in cells if c.config == config]
        rows[config] = {
            "measurements": len(runs),
            "requests_per_s": median([c.rps for c in runs]),
            "requests_per_s_min": min(c.rps for c in runs),
            "requests_per_s_max": max(c.rps for c in runs),
            "p50_ms": median([c.p50_ms for c in runs]),
            "p99_ms": median([c.p99_ms for c in runs]),
            "errors": sum(c.errors for c in runs),
            "cpu": {k: median([c.cpu[k] for c in runs]) for k in runs[0].cpu},
            "server_cpu_us_per_request": median(
                [c.cpu["server"] / c.rps * 1e6 if c.rps else math.nan for c in runs]
            ),
        }
    ratios = [c.ratio for c in cells if c.config == "on"]
    ratio = median(ratios)
    return {
        "model": name,
        "rows": rows,
        "ratio": ratio,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "goal": GOALS.get(name, math.nan),
        "met": not ratio < GOALS.get(name, 0.0),
        **extra,
    }


def render(report: dict[str, Any]) -> str:
    machine = report["machine"]
    settings = report["settings"]
    out = [
        f"Run of {report['finished_at']}: `{report['command']}`",
        "",
        f"Machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['memory_gib']} GiB;"
        f" two CPU-bound processes do {machine['parallel_capacity']:.2f}x the work of one; "
        f"background load {machine['background_cpu']:.2f} cores before the run; Python "
        f"{machine['python']}, numpy {machine['packages'].get('numpy')}, onnxruntime "
        f"{machine['packages'].get('onnxruntime')}, granian {machine['packages'].get('granian')}"
        f"; {machine['wrk']}; commit {machine['commit']}.",
        "",
        f"Load: wrk, 1 thread, {settings['concurrency']} keep-alive connections, JSON, one row "
        f"per request, {settings['duration']:g} s per measurement, {settings['rounds']} rounds of "
        "off, on (and a last off); `on / off` = each on's req/s over the mean of the off "
        "measurements just before and after it. Redone because other processes kept more than "
        f"{sb.BUSY_WARNING} cores busy during them: "
        + ", ".join(
            f"{s['model']} {s['counted']['measurements_redone']}" for s in report["summaries"]
        )
        + ".",
        "",
        "| model | monitoring | req/s (median) | min–max | on / off (median, min–max) | goal "
        "| p50 ms | p99 ms | server CPU | server CPU µs / request | wrk CPU | other CPU "
        "| in process: record + flush µs / request | rows counted / answered |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for summary in report["summaries"]:
        micro = summary["in_process"]
        check = summary["counted"]
        for config in ("off", "on"):
            row = summary["rows"][config]
            cpu = row["cpu"]
            if config == "off":
                ratio, goal, micro_text, counted = "1 (reference)", "", "", ""
            else:
                ratio = (
                    f"**{summary['ratio']:.3f}** ({summary['ratio_min']:.3f}–"
                    f"{summary['ratio_max']:.3f})"
                )
                goal = f"≥ {summary['goal']:.2f} " + ("met" if summary["met"] else "**missed**")
                micro_text = (
                    f"{micro['record_us']:.2f} + {micro['flush_us']:.2f} = {micro['total_us']:.2f}"
                )
                counted = f"{check['rows_counted']:,.0f} / {check['rows_answered_by_wrk']:,}"
            out.append(
                f"| {summary['model']} | {config} | {row['requests_per_s']:,.0f} "
                f"| {row['requests_per_s_min']:,.0f}–{row['requests_per_s_max']:,.0f} | {ratio} "
                f"| {goal} | {fmt(row['p50_ms'])} | {fmt(row['p99_ms'])} | {fmt(cpu['server'])} "
                f"| {fmt(row['server_cpu_us_per_request'], 0)} | {fmt(cpu['wrk'])} "
                f"| {fmt(cpu['other'])} | {micro_text} | {counted} |"
            )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", default="iris,mlp", help="default: %(default)s")
    parser.add_argument("--concurrency", type=int, default=16, help="default: %(default)s")
    parser.add_argument(
        "--duration", type=int, default=2, help="seconds per measurement (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=11, help="off/on pairs per model (default: %(default)s)"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help=f"times to redo a measurement during which other processes kept more than "
        f"{sb.BUSY_WARNING} cores busy (default: %(default)s)",
    )
    parser.add_argument(
        "--quiet-budget",
        type=float,
        default=90.0,
        help="seconds, in all, to wait for a quiet machine before redoing (default: %(default)s)",
    )
    parser.add_argument("--wrk", default="wrk", help="the wrk binary (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="raw results (default: bench/results/...)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(argv)
    sb.stop_on_sigterm()
    wrk = shutil.which(opts.wrk)
    if wrk is None:
        print(sb.WRK_HELP, file=sys.stderr)
        return 2
    opts.wrk = wrk
    models = [m.strip() for m in opts.models.split(",") if m.strip()]
    machine = sb.loaded_machine_info(wrk)
    paths = sb.ensure_models()
    started = datetime.now(UTC)
    summaries = []
    cells: dict[str, list[Cell]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="weir-bench-monitoring-") as folder:
            for name in models:
                cells[name], extra = run_model(name, paths[name], Path(folder), opts)
                summaries.append(summarize(name, cells[name], extra))
    finally:
        sb.Server.stop_all()
    report: dict[str, Any] = {
        **sb.report_header(__file__, argv, started, machine, opts),
        "summaries": summaries,
        "cells": {name: [c.to_json() for c in cs] for name, cs in cells.items()},
    }
    out = opts.out or sb.RESULTS_DIR / f"monitoring-{started:%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = render(report)
    out.with_suffix(".md").write_text(text)
    log("\n" + text)
    log(f"raw results: {out}; table: {out.with_suffix('.md')}")
    ok = all(s["met"] and s["counted"]["every_row_counted"] for s in summaries)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
