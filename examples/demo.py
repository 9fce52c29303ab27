"""`make demo`: the whole product on one machine, in about two minutes.

It starts `weir run` on a ModelDeployment of the iris classifier (v1), sends steady inference
traffic through the local router, then ships three new versions the way a CI pipeline would,
with the `weir` CLI. Each first answers copies of live traffic in a shadow step (weight 0: no
client gets a canary answer), where its answers are compared with the stable's:
- v2, a good model: agrees, then is promoted through every canary step by itself;
- v3, a bad model (slower, and failing on about one input in five): rolled back in the shadow,
  so no client request fails;
- v4, fast, always 200 and wrong (its label map swapped): every latency and error check
  passes, and it is rolled back in the shadow because its answers disagree (AgreementFailed).
Each good version ships with its own monitoring reference (`weir profile` of the model on the
traffic's training data, then `weir set-model --reference-uri`), and Weir judges the stable's
traffic against it every 5 s. Last comes drift: the clients' petal lengths (input[2]) move by
2.5 standard deviations, the Drifting condition turns True naming input[2]; the traffic moves
back, and it clears.
It prints the story as it happens (the rollout's own events), counts every client request,
and draws `demo-timeline.png`: canary weight and the shadow phases, agreement with the stable,
p99 latency and error rate per track, and each input feature's drift score, over time.

Everything is local (127.0.0.1) and bounded: the traffic stops by itself, and so does the demo
(`--timeout`). Models are built in code with onnx.helper; nothing is downloaded."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from weir_server.sample_models import build_all

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The clients' flowers: each feature uniform in the iris data set's range (sepal length, sepal
# width, petal length, petal width). The "training data" the references are profiled on is
# drawn the same way, so the traffic is in distribution until the drift scene moves it.
FEATURE_LOW = (4.3, 2.0, 1.0, 0.1)
FEATURE_HIGH = (7.9, 4.4, 6.9, 2.5)
TRAINING_ROWS = 5000
SHIFTED_FEATURE = 2  # petal length: input[2]
SHIFT_SDS = 2.5
DRIFT_WINDOW = "5s"
DRIFT_THRESHOLD = 0.2


def feature_sd(feature: int) -> float:
    """The standard deviation of a uniform feature."""
    return (FEATURE_HIGH[feature] - FEATURE_LOW[feature]) / 12**0.5


def write_training_data(path: Path) -> Path:
    """TRAINING_ROWS flowers drawn as the clients draw them, as .npy (what `weir profile`
    reads), seeded so that every demo profiles the same data."""
    import numpy as np

    rng = random.Random(2026)
    rows = [
        [rng.uniform(low, high) for low, high in zip(FEATURE_LOW, FEATURE_HIGH, strict=True)]
        for _ in range(TRAINING_ROWS)
    ]
    np.save(path, np.asarray(rows, dtype=np.float32))
    return path


def manifest(model: Path, reference: Path) -> dict[str, Any]:
    return {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {
            "model": {"uri": model.as_uri(), "version": "1"},
            "replicas": 2,
            "rollout": {
                "steps": [
                    {"shadow": {"percent": 100, "duration": "5s"}},
                    {"setWeight": 20},
                    {"pause": {"duration": "5s"}},
                    {"setWeight": 50},
                    {"pause": {"duration": "5s"}},
                ],
                "analysis": {
                    "interval": "5s",
                    "failureThreshold": 2,
                    "minRequests": 20,
                    "agreement": {
                        "output": "probabilities",
                        "compare": "top1",
                        "minRate": 0.95,
                        "minSamples": 20,
                    },
                },
            },
            "monitoring": {
                "reference": {"uri": reference.as_uri()},
                "drift": {
                    "window": DRIFT_WINDOW,
                    "threshold": DRIFT_THRESHOLD,
                    "minSamples": 200,
                    "output": "probabilities",
                },
            },
        },
    }


@dataclass
class Traffic:
    """Clients sending iris flowers to the router, about 100 requests a second in all."""

    url: str
    threads: int = 2
    pause: float = 0.01
    limit_seconds: float = 240
    answers: list[tuple[float, int | str]] = field(default_factory=list)
    shift: tuple[int, float] | None = None  # (feature, added to it): the drift scene
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Traffic:
        for index in range(self.threads):
            threading.Thread(target=self._run, args=(index,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def failed(self, since: float = 0.0) -> int:
        return sum(1 for at, code in list(self.answers) if at >= since and code != 200)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        deadline = time.monotonic() + self.limit_seconds
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                row = [
                    rng.uniform(low, high)
                    for low, high in zip(FEATURE_LOW, FEATURE_HIGH, strict=True)
                ]
                if (shift := self.shift) is not None:
                    row[shift[0]] += shift[1]
                body = {
                    "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]
                }
                try:
                    code: int | str = client.post(self.url, json=body).status_code
                except httpx.HTTPError as error:
                    code = type(error).__name__
                self.answers.append((time.monotonic(), code))
                time.sleep(self.pause)


@dataclass
class Timeline:
    """What the demo saw, for the story and the picture."""

    started: float = field(default_factory=time.monotonic)
    weight: list[tuple[float, float]] = field(default_factory=list)
    shadow: list[tuple[float, float]] = field(default_factory=list)  # percent mirrored
    analyses: list[dict[str, Any]] = field(default_factory=list)
    marks: list[tuple[float, str]] = field(default_factory=list)
    drift: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # scores by name
    drifting: list[tuple[float, str]] = field(default_factory=list)  # the condition's status
    shifted: list[tuple[float, float]] = field(default_factory=list)  # when the traffic moved

    def now(self) -> float:
        return time.monotonic() - self.started


class Story(threading.Thread):
    """Prints the rollout's events as they happen and samples the status twice a second."""

    def __init__(self, control: str, timeline: Timeline) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=control, timeout=5)
        self.timeline = timeline
        self.seen = 0
        self.last_analysis = ""
        self.last_drift = ""
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.5):
            try:
                self.poll()
            except httpx.HTTPError:
                continue

    def poll(self) -> None:
        events = self.client.get("/api/v1/modeldeployments/iris/events").json()["items"]
        for event in events[self.seen :]:
            mark = "!" if event["type"] == "Warning" else "*"
            print(f"  {self.timeline.now():6.1f}s {mark} {event['reason']}: {event['message']}")
        self.seen = len(events)
        status = self.client.get("/api/v1/modeldeployments/iris").json().get("status") or {}
        canary = status.get("canary") or {}
        self.timeline.weight.append((self.timeline.now(), canary.get("weight", 0)))
        self.timeline.shadow.append((self.timeline.now(), canary.get("shadowPercent", 0)))
        drift = status.get("drift") or {}
        if drift.get("at") and drift["at"] != self.last_drift:
            self.last_drift = drift["at"]
            scores = {f["name"]: f["score"] for f in drift.get("features") or []}
            self.timeline.drift.append((self.timeline.now(), scores))
        drifting = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Drifting"), None
        )
        if drifting is not None:
            self.timeline.drifting.append((self.timeline.now(), drifting["status"]))
        analysis = status.get("lastAnalysis")
        if analysis and analysis["at"] != self.last_analysis:
            self.last_analysis = analysis["at"]
            self.timeline.analyses.append({"t": self.timeline.now(), **analysis})


def weir(*args: str, control: str | None) -> int:
    """Run a `weir` CLI command (against the local runtime at `control`, if given), showing it
    as a person would type it."""
    shown = " ".join(a if " " not in a else repr(a) for a in args)
    print(f"\n$ weir {shown}")
    local = ["--local", control] if control is not None else []
    return subprocess.call([sys.executable, "-m", "weir_operator.cli", *args, *local])


def profiled(model: Path, data: Path) -> Path:
    """`weir profile`: the model's monitoring reference, next to the demo's state."""
    reference = WORK / f"{model.stem}.reference.json"
    shown = [str(p.relative_to(ROOT)) for p in (model, data, reference)]
    if weir("profile", shown[0], "--data", shown[1], "-o", shown[2], control=None) != 0:
        raise RuntimeError(f"weir profile failed on {model.name}")
    return reference


def draw(timeline: Timeline, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (weight_axis, agreement_axis, p99_axis, error_axis, drift_axis) = plt.subplots(
        5, 1, sharex=True, figsize=(10, 12.5)
    )
    times = [t for t, _ in timeline.weight]
    weight_axis.step(times, [w for _, w in timeline.weight], where="post", color="tab:orange")
    weight_axis.set_ylabel("canary weight (%)")
    weight_axis.set_ylim(-5, 105)
    for start, end in shadow_phases(timeline):
        for axis in (weight_axis, agreement_axis):
            axis.axvspan(start, end, color="tab:purple", alpha=0.15, lw=0)
    weight_axis.annotate(
        "shaded: shadow (mirrored, weight 0)",
        (0.99, 0.55),
        xycoords="axes fraction",
        ha="right",
        fontsize=8,
        color="tab:purple",
    )
    agreed = [
        (a["t"], 100 * a["agreement"]["rate"])
        for a in timeline.analyses
        if (a.get("agreement") or {}).get("rate") is not None
    ]
    if agreed:
        agreement_axis.plot(*zip(*agreed, strict=True), "o-", color="tab:purple")
    agreement_axis.axhline(95, color="tab:red", linestyle="--", lw=1)
    agreement_axis.set_ylabel("canary agrees\nwith stable (%)")
    agreement_axis.set_ylim(-5, 105)
    for track, color in (("stable", "tab:blue"), ("canary", "tab:orange")):
        points = [(a["t"], a.get(track) or {}) for a in timeline.analyses if a.get(track)]
        p99 = [(t, m["p99Ms"]) for t, m in points if m.get("p99Ms") is not None]
        errors = [(t, 100 * m.get("errorRate", 0)) for t, m in points if m.get("requests")]
        if p99:
            p99_axis.plot(*zip(*p99, strict=True), "o-", color=color, label=track)
        if errors:
            error_axis.plot(*zip(*errors, strict=True), "o-", color=color, label=track)
    p99_axis.set_ylabel("p99 latency (ms)")
    error_axis.set_ylabel("error rate (%)")
    draw_drift(drift_axis, timeline)
    drift_axis.set_xlabel("seconds since the demo started")
    for axis in (p99_axis, error_axis):
        axis.legend(loc="upper left")
    for axis in (weight_axis, agreement_axis, p99_axis, error_axis, drift_axis):
        for at, _ in timeline.marks:
            axis.axvline(at, color="grey", linestyle=":")
        axis.grid(alpha=0.3)
    for at, label in timeline.marks:
        weight_axis.annotate(label, (at, 100), fontsize=8, rotation=0, ha="left", va="top")
    figure.suptitle(
        "weir run: v2 promoted; v3 (errors) and v4 (wrong answers) rolled back in the shadow;\n"
        f"input[{SHIFTED_FEATURE}] drifts, is detected and clears"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def draw_drift(axis: Any, timeline: Timeline) -> None:
    """Each input feature's PSI per drift window (log scale), the threshold, the time the
    traffic was shifted (shaded) and the time the Drifting condition was True (red band)."""
    names = sorted({name for _, scores in timeline.drift for name in scores})
    for name in names:
        points = [(t, max(s[name], 1e-4)) for t, s in timeline.drift if name in s]
        if points:
            axis.plot(*zip(*points, strict=True), "o-", ms=3, label=name)
    axis.axhline(DRIFT_THRESHOLD, color="tab:red", linestyle="--", lw=1)
    axis.set_yscale("log")
    axis.set_ylabel(f"input drift\n(PSI per {DRIFT_WINDOW})")
    for start, end in timeline.shifted:
        axis.axvspan(start, end, color="tab:green", alpha=0.15, lw=0)
    start = None
    for at, verdict in [*timeline.drifting, (timeline.now(), "end")]:
        if verdict == "True" and start is None:
            start = at
        elif verdict != "True" and start is not None:
            axis.axvspan(start, at, ymin=0.93, ymax=1.0, color="tab:red", alpha=0.6, lw=0)
            start = None
    axis.annotate(
        "green: traffic shifted; red band: Drifting True",
        (0.01, 0.82),
        xycoords="axes fraction",
        fontsize=8,
    )
    if names:
        axis.legend(loc="upper right", fontsize=8, ncol=len(names))


def shadow_phases(timeline: Timeline) -> list[tuple[float, float]]:
    """The spans of time in which a shadow step mirrored traffic."""
    spans: list[tuple[float, float]] = []
    start = None
    for at, percent in timeline.shadow:
        if percent and start is None:
            start = at
        elif not percent and start is not None:
            spans.append((start, at))
            start = None
    if start is not None and timeline.shadow:
        spans.append((start, timeline.shadow[-1][0]))
    return spans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--timeout", type=float, default=270, help="give up after this many seconds"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "demo-timeline.png")
    args = parser.parse_args()

    models = build_all(ROOT / "examples" / "models")
    WORK.mkdir(exist_ok=True)
    training = write_training_data(WORK / "training-data.npy")
    print("A CI pipeline profiles each model on its training data: the reference Weir's servers")
    print("count against, and the operator judges the traffic's drift by.")
    try:
        reference = profiled(models["iris"], training)
    except RuntimeError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    spec_file = WORK / "iris.yaml"
    spec_file.write_text(yaml.safe_dump(manifest(models["iris"], reference), sort_keys=False))
    port, control_port = free_port(), free_port()
    control = f"http://127.0.0.1:{control_port}"
    print(
        f"$ weir run -f {spec_file.relative_to(ROOT)} --port {port} --control-port {control_port}"
    )
    # Every demo tells the story from v1: a state left by the last one would resume its end.
    shutil.rmtree(WORK / "state", ignore_errors=True)
    log = (WORK / "weir-run.log").open("wb")
    runtime = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weir_operator.cli",
            "run",
            "-f",
            str(spec_file),
            "--port",
            str(port),
            "--control-port",
            str(control_port),
            "--state-dir",
            str(WORK / "state"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + args.timeout
    timeline = Timeline()
    story = Story(control, timeline)
    traffic = Traffic(f"http://127.0.0.1:{port}/v2/models/iris/infer")
    outcome = 1
    try:
        wait_healthy(control, runtime, deadline)
        print(f"iris v1 is serving at http://127.0.0.1:{port}/v2/models/iris "
              f"({timeline.now():.1f} s); sending steady traffic\n")  # fmt: skip
        story.start()
        traffic.start()
        time.sleep(3)

        def ship(model: Path, version: str, label: str, profile: bool = True) -> int:
            """What a CI pipeline does: profile the model, set it with its reference (one
            revision), then wait for Weir's verdict."""
            timeline.marks.append((timeline.now(), label))
            new = ["--reference-uri", profiled(model, training).as_uri()] if profile else []
            weir(
                "set-model", "iris", "--uri", model.as_uri(), "--version", version, *new,
                control=control,
            )  # fmt: skip
            left = f"{max(deadline - time.monotonic(), 1):.0f}s"
            return weir("status", "iris", "--wait", "--timeout", left, control=control)

        v2 = ship(models["iris_v2"], "2", "v2")
        print(f"  -> exit code {v2} (0 = healthy on the new version)")
        canary_started = time.monotonic()
        # v3 fails on some rows of its own training data, so `weir profile` refuses it; a
        # careless pipeline ships it anyway, keeping v2's reference (Weir warns, and judges).
        v3 = ship(models["iris_bad"], "3", "v3 (errors)", profile=False)
        print(f"  -> exit code {v3} (1 = rolled back)")
        v4 = ship(models["iris_swapped"], "4", "v4 (wrong)")
        print(f"  -> exit code {v4} (1 = rolled back)")
        failed_bad = traffic.failed(since=canary_started)
        drift = drift_scene(control, traffic, timeline, deadline)
        story.poll()
        if not drift:
            print(f"demo: the drift was not named input[{SHIFTED_FEATURE}] first", file=sys.stderr)
        outcome = 0 if (v2, v3, v4, drift) == (0, 1, 1, True) else 1
    except (TimeoutError, RuntimeError) as error:
        print(f"demo: {error}", file=sys.stderr)
    finally:
        traffic.stop()
        story.stop_event.set()
        runtime.send_signal(signal.SIGINT)
        try:
            runtime.wait(timeout=30)
        except subprocess.TimeoutExpired:
            runtime.kill()
        log.close()

    answers = Counter(code for _, code in traffic.answers)
    total = sum(answers.values())
    print(f"\n{total} client requests: {answers[200]} answered, {total - answers[200]} failed")
    if outcome == 0:
        print(f"  failed while v3 and v4 were canaries: {failed_bad} (both were caught in the "
              f"shadow: no client was routed to them)")  # fmt: skip
        draw(timeline, args.output)
        shown = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
        print(f"timeline: {shown}")
        print(f"weir run's own log: {(WORK / 'weir-run.log').relative_to(ROOT)}")
    else:
        print(
            f"demo: did not end as expected; weir run's log is {WORK / 'weir-run.log'}",
            file=sys.stderr,
        )
    return outcome


def drifting_status(client: httpx.Client) -> tuple[str, str]:
    """The Drifting condition's status and message, ("", "") before there is one."""
    status = client.get("/api/v1/modeldeployments/iris").json().get("status") or {}
    found = next((c for c in status.get("conditions") or [] if c.get("type") == "Drifting"), {})
    return str(found.get("status", "")), str(found.get("message", ""))


def wait_drifting(client: httpx.Client, want: str, deadline: float) -> str:
    """Poll until the Drifting condition is `want`; its message."""
    while time.monotonic() < deadline:
        try:
            verdict, message = drifting_status(client)
        except (httpx.HTTPError, ValueError):
            verdict, message = "", ""
        if verdict == want:
            return message
        time.sleep(0.5)
    raise TimeoutError(f"the Drifting condition did not turn {want} in time")


def drift_scene(control: str, traffic: Traffic, timeline: Timeline, deadline: float) -> bool:
    """The clients' input[SHIFTED_FEATURE] moves by SHIFT_SDS standard deviations until Weir
    says Drifting True, then moves back until it says False. True when the first feature the
    detection names is the shifted one."""
    offset = SHIFT_SDS * feature_sd(SHIFTED_FEATURE)
    window = float(DRIFT_WINDOW.removesuffix("s"))
    with httpx.Client(base_url=control, timeout=5) as client:
        wait_drifting(client, "False", deadline)  # v2 in distribution, judged
        print(
            f"\nThe clients' petal length (input[{SHIFTED_FEATURE}]) moves by {SHIFT_SDS:g} "
            f"standard deviations (+{offset:.1f} cm); Weir judges every {DRIFT_WINDOW}:"
        )
        started = timeline.now()
        timeline.marks.append((started, "drift"))
        traffic.shift = (SHIFTED_FEATURE, offset)
        message = wait_drifting(client, "True", deadline)
        detected = timeline.now()
        print(f"  Drifting True {detected - started:.1f} s after the traffic moved")
        time.sleep(max(0.0, started + 2 * window - timeline.now()))  # two windows of it
        traffic.shift = None
        back = timeline.now()
        timeline.shifted.append((started, back))
        print("  the traffic moves back")
        wait_drifting(client, "False", deadline)
        print(f"  Drifting False {timeline.now() - back:.1f} s after the traffic is back")
    return message.startswith(f"input drift: input[{SHIFTED_FEATURE}] ")


def wait_healthy(control: str, runtime: subprocess.Popen[bytes], deadline: float) -> None:
    with httpx.Client(base_url=control, timeout=2) as client:
        while time.monotonic() < deadline:
            if runtime.poll() is not None:
                raise RuntimeError(
                    f"weir run exited with {runtime.returncode}; see {WORK / 'weir-run.log'}"
                )
            try:
                status = client.get("/api/v1/modeldeployments/iris").json().get("status") or {}
                if status.get("phase") == "Healthy":
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
    raise TimeoutError("iris v1 did not become healthy in time")


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
