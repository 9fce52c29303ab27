"""`make demo`: serve the example iris model with `weir serve` and answer one inference.

Until the local runtime (`weir run`) lands, this is the product's first impression: a real
server process, a real V2 request over HTTP, a real answer."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from weir_server.sample_models import build_all

ROOT = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    model = build_all(ROOT / "models")["iris"]
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "weir_operator.cli",
        "serve",
        str(model),
        "--name",
        "iris",
        "--version",
        "1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    print("$ weir serve", model.relative_to(ROOT.parent), "--name iris --version 1 --port", port)
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                if server.poll() is not None:
                    print(server.stderr.read() if server.stderr else "", file=sys.stderr)
                    print("demo: the server exited before it was ready", file=sys.stderr)
                    return 1
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    print("demo: the server was not ready within 30 s", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            print(f"ready after {time.monotonic() - deadline + 30:.2f} s\n")
            request = {
                "id": "demo-1",
                "inputs": [
                    {
                        "name": "input",
                        "shape": [2, 4],
                        "datatype": "FP32",
                        "data": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]],
                    }
                ],
            }
            print(f"POST {base}/v2/models/iris/infer")
            started = time.perf_counter()
            response = client.post("/v2/models/iris/infer", json=request)
            elapsed_ms = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            result = response.json()
            outputs = {output["name"]: output for output in result["outputs"]}
            probabilities = outputs["probabilities"]["data"]
            for row, label in enumerate(outputs["label"]["data"]):
                p = probabilities[row * 3 : row * 3 + 3]
                print(
                    f"  flower {row}: class {label}  probabilities "
                    + ", ".join(f"{x:.3f}" for x in p)
                )
            print(
                f"\nanswered in {elapsed_ms:.1f} ms (model {result['model_name']} "
                f"version {result.get('model_version')})"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
