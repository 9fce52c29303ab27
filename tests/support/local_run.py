"""`weir run` as the local end-to-end tier drives it: the real command in a child process, its
control API, and a bounded traffic generator that counts every answer.

Everything listens on 127.0.0.1; every load is bounded in time and in count, and stops by
itself."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from tests.support.processes import free_port, start_logged

T = TypeVar("T")


def manifest(name: str, model: Path, version: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"uri": model.as_uri(), "version": version}, **spec},
    }


def iris_row(rng: random.Random) -> list[float]:
    """A plausible iris flower: sepal length 4.3-7.9 (the degraded models fail from 7.0)."""
    return [
        rng.uniform(4.3, 7.9),
        rng.uniform(2.0, 4.4),
        rng.uniform(1.0, 6.9),
        rng.uniform(0.1, 2.5),
    ]


def infer_body(row: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}]}


class LocalRun:
    """One `weir run -f FOLDER` process with its own ports and state folder."""

    def __init__(
        self,
        folder: Path,
        state_dir: Path,
        tick: float = 0.25,
        ports: tuple[int, int] | None = None,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.folder = folder
        self.tick = tick
        self.env, self.args = env, tuple(args)
        self.port, self.control_port = ports or (free_port(), free_port())
        self.log_path = state_dir / "weir-run.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "weir_operator.cli", "run", "-f", str(folder),
            "--port", str(self.port), "--control-port", str(self.control_port),
            "--state-dir", str(state_dir), "--tick", str(tick), *self.args,
        ]  # fmt: skip
        self.process = start_logged(command, self.log_path, env)
        self.state_dir = state_dir
        self.control = httpx.Client(base_url=f"http://127.0.0.1:{self.control_port}", timeout=10)
        self.seen_pids: set[int] = set()

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_up(self, within: float = 30) -> None:
        def up() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"weir run exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                return self.control.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        self.eventually(up, within, "the control API answers")
        self.control.headers["Authorization"] = f"Bearer {self.token()}"

    def token(self) -> str:
        """The control API's token, which weir run wrote (0600) into its state folder."""
        return (self.state_dir / "control-token").read_text().strip()

    def get(self, name: str) -> dict[str, Any]:
        response = self.control.get(f"/api/v1/modeldeployments/{name}")
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def events(self, name: str) -> list[dict[str, Any]]:
        """The object's events, oldest first."""
        response = self.control.get(f"/api/v1/modeldeployments/{name}/events")
        response.raise_for_status()
        return list(response.json()["items"])

    def servers(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.control.get(
            f"/api/v1/modeldeployments/{name}/servers"
        ).json()["items"]
        self.seen_pids |= {s["pid"] for s in items if s.get("pid")}
        return items

    def set_model(self, name: str, model: Path, version: str) -> None:
        body = {"uri": model.as_uri(), "version": version}
        self.control.patch(f"/api/v1/modeldeployments/{name}/model", json=body).raise_for_status()

    def request(self, name: str, action: str) -> str:
        response = self.control.post(
            f"/api/v1/modeldeployments/{name}/requests", json={"action": action}
        )
        response.raise_for_status()
        return str(response.json()["id"])

    def eventually(self, check: Callable[[], T], within: float, what: str) -> T:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"not within {within} s: {what}\n--- weir run log ---\n{self.log()}")

    def wait_healthy(self, name: str, version: str, within: float = 60) -> dict[str, Any]:
        def healthy() -> dict[str, Any] | None:
            status = self.status(name)
            stable = status.get("stable") or {}
            ok = status.get("phase") == "Healthy" and stable.get("version") == version
            return status if ok and not status.get("canary") else None

        return self.eventually(healthy, within, f"{name} healthy on version {version}")

    def stop(self, sig: int = signal.SIGINT, within: float = 30) -> int:
        """Stop `weir run` as a person would (Ctrl-C); returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=within)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
                raise AssertionError(
                    f"weir run did not stop within {within} s:\n{self.log()}"
                ) from None
        self.control.close()
        return self.process.returncode

    def kill(self) -> None:
        """`kill -9` weir run (its servers die with it: PR_SET_PDEATHSIG)."""
        self.process.kill()
        self.process.wait(timeout=10)
        self.control.close()

    def restarted(self) -> LocalRun:
        """A new weir run on the same files, state folder and ports (this one has ended)."""
        assert self.process.poll() is not None, "stop or kill this weir run first"
        again = LocalRun(
            self.folder,
            self.state_dir,
            self.tick,
            (self.port, self.control_port),
            env=self.env,
            args=self.args,
        )
        again.seen_pids |= self.seen_pids
        return again

    def orphans(self) -> list[int]:
        """Server processes seen during the run that are still alive."""
        alive = []
        for pid in self.seen_pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            stat = Path(f"/proc/{pid}/stat")
            if stat.exists() and ") Z " not in stat.read_text():
                alive.append(pid)
        return alive


@dataclass
class Traffic:
    """Steady inference traffic to the router from a few threads, each answer counted with its
    time; bounded (at most `limit_seconds` and `max_requests`) and stopped by `stop()`."""

    url: str
    model: str = "iris"
    threads: int = 2
    pause: float = 0.01
    limit_seconds: float = 180
    max_requests: int = 60_000
    answers: list[tuple[float, int | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Traffic:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> Counter[int | str]:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=70)
        return self.counts()

    def counts(self, since: float = 0.0, until: float = float("inf")) -> Counter[int | str]:
        with self._lock:
            return Counter(code for at, code in self.answers if since <= at <= until)

    def failures(self, since: float = 0.0, until: float = float("inf")) -> int:
        return sum(n for code, n in self.counts(since, until).items() if code != 200)

    def _run(self, index: int) -> None:
        rng = random.Random(index)
        deadline = time.monotonic() + self.limit_seconds
        url = f"{self.url}/v2/models/{self.model}/infer"
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if len(self.answers) >= self.max_requests:
                        return
                try:
                    code: int | str = client.post(url, json=infer_body(iris_row(rng))).status_code
                except httpx.HTTPError as error:
                    code = type(error).__name__
                with self._lock:
                    self.answers.append((time.monotonic(), code))
                time.sleep(self.pause)


@dataclass
class DriftingTraffic:
    """Inference traffic of batches of rows drawn from the iris training distribution
    (weir_server.sample_models.iris_training_data's independent normal columns, with another
    seed: in distribution, never the training rows themselves), with chosen features moved by
    a number of their standard deviations while `shift` says so (change it at any time). One
    thread; bounded in time and requests; every answer counted with its time."""

    url: str
    model: str = "iris"
    rows_per_request: int = 20
    pause: float = 0.02
    limit_seconds: float = 180
    max_requests: int = 30_000
    seed: int = 5
    shift: dict[int, float] = field(default_factory=dict)  # column -> standard deviations
    answers: list[tuple[float, int | str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _worker: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> DriftingTraffic:
        self._worker = threading.Thread(target=self._run, daemon=True)
        self._worker.start()
        return self

    def shifted(self, shift: dict[int, float]) -> None:
        """From now on, move these columns by so many standard deviations ({}: none)."""
        with self._lock:
            self.shift = dict(shift)

    def stop(self) -> Counter[int | str]:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=70)
        with self._lock:
            return Counter(code for _, code in self.answers)

    def failures(self) -> int:
        with self._lock:
            return sum(1 for _, code in self.answers if code != 200)

    def _rows(self, rng: Any) -> list[float]:
        from weir_server.sample_models import IRIS_FEATURE_MEAN, IRIS_FEATURE_STD

        with self._lock:
            shift = dict(self.shift)
        mean = [
            m + shift.get(i, 0.0) * s
            for i, (m, s) in enumerate(zip(IRIS_FEATURE_MEAN, IRIS_FEATURE_STD, strict=True))
        ]
        rows = rng.standard_normal((self.rows_per_request, 4)) * IRIS_FEATURE_STD + mean
        return [float(v) for v in rows.astype("float32").reshape(-1)]

    def _run(self) -> None:
        import numpy as np

        rng = np.random.default_rng(self.seed)
        deadline = time.monotonic() + self.limit_seconds
        url = f"{self.url}/v2/models/{self.model}/infer"
        shape = [self.rows_per_request, 4]
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if len(self.answers) >= self.max_requests:
                    return
                body = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                    "data": self._rows(rng)}]}  # fmt: skip
                try:
                    code: int | str = client.post(url, json=body).status_code
                except httpx.HTTPError as error:
                    code = type(error).__name__
                with self._lock:
                    self.answers.append((time.monotonic(), code))
                time.sleep(self.pause)


def write_manifests(folder: Path, *documents: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path
