"""Steady inference traffic for hack/kind-e2e.sh, sent from the host through a port-forward.

Sends iris flowers (4 features; the sepal length spread over 4.3-7.9 like the real data set, so
the bad sample model `iris_bad` fails about one row in five) to the Open Inference Protocol
endpoint of MODEL at about RATE requests a second, until it is stopped (SIGTERM or SIGINT) or
`--duration` is over. Then it writes a JSON summary (answers by HTTP status, 0 for a request
that got no answer) and exits 0 if at least `--min-ok` requests got a 200, else 1; 2 when the
model did not become ready through URL within `--wait-ready` seconds (or it was stopped first).

    python hack/kind-e2e/traffic.py --url http://127.0.0.1:18080 --model iris --summary out.json
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType

import httpx

PROGRESS_EVERY_S = 10.0


def row(rng: random.Random) -> list[float]:
    return [
        round(rng.uniform(4.3, 7.9), 1),
        round(rng.uniform(2.0, 4.4), 1),
        round(rng.uniform(1.0, 6.9), 1),
        round(rng.uniform(0.1, 2.5), 1),
    ]


def wait_ready(
    client: httpx.Client, url: str, model: str, seconds: float, stop: threading.Event
) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop.is_set():
        try:
            if client.get(f"{url}/v2/models/{model}/ready").status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        stop.wait(0.5)
    return False


class Sender:
    def __init__(self, url: str, model: str, rate: float, threads: int) -> None:
        self.endpoint = f"{url}/v2/models/{model}/infer"
        self.interval = threads / rate
        self.threads = threads
        self.answers: Counter[int] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                body = {
                    "inputs": [
                        {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row(rng)}
                    ]
                }
                try:
                    status = client.post(self.endpoint, json=body).status_code
                except httpx.HTTPError:
                    status = 0
                with self.lock:
                    self.answers[status] += 1
                next_at += self.interval
                self.stop.wait(max(0.0, next_at - time.monotonic()))

    def run(self, duration: float | None) -> None:
        workers = [
            threading.Thread(target=self._run, args=(seed,), daemon=True)
            for seed in range(self.threads)
        ]
        for worker in workers:
            worker.start()
        started = last = time.monotonic()
        while not self.stop.wait(0.2):
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                self.stop.set()
            elif now - last >= PROGRESS_EVERY_S:
                last = now
                print(f"traffic: {self.summary()}", flush=True)
        for worker in workers:
            worker.join(timeout=15)

    def summary(self) -> dict[str, int]:
        with self.lock:
            return {str(code): count for code, count in sorted(self.answers.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT (the port-forward)")
    parser.add_argument("--model", default="iris", help="served model name")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second in all")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--wait-ready", type=float, default=120.0, metavar="SECONDS")
    parser.add_argument("--min-ok", type=int, default=1, help="exit 1 with fewer 200 answers")
    parser.add_argument("--summary", type=Path, help="write the answers by status here (JSON)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.threads < 1:
        parser.error("--rate must be > 0 and --threads >= 1")

    sender = Sender(args.url, args.model, args.rate, args.threads)

    def stop(signum: int, frame: FrameType | None) -> None:
        sender.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with httpx.Client(timeout=5) as client:
        if not wait_ready(client, args.url, args.model, args.wait_ready, sender.stop):
            print(f"traffic: {args.model} not ready at {args.url} after {args.wait_ready:g} s")
            return 2
    print(f"traffic: {args.rate:g} requests/s to {sender.endpoint}", flush=True)
    sender.run(args.duration)
    answers = sender.summary()
    print(f"traffic: done: {answers}", flush=True)
    if args.summary is not None:
        args.summary.write_text(json.dumps({"answers": answers}) + "\n")
    return 0 if int(answers.get("200", 0)) >= args.min_ok else 1


if __name__ == "__main__":
    sys.exit(main())
