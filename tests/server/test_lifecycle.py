"""Startup, readiness and shutdown: bad model files fail fast and clearly; SIGTERM drains."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.support.processes import free_port, running_server, start_server
from weir_server import exit_codes, sample_models
from weir_server.app import create_app
from weir_server.settings import ServerSettings


def serve(model: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "weir_operator.cli",
            "serve",
            str(model),
            "--port",
            str(free_port()),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class TestModelIntegrity:
    def test_missing_file_is_a_usage_error_exit_3(self, tmp_path: Path) -> None:
        result = serve(tmp_path / "nope.onnx")
        assert result.returncode == exit_codes.USAGE
        assert "nope.onnx does not exist" in result.stderr

    @pytest.mark.parametrize("workers", ["1", "2"])
    @pytest.mark.parametrize(
        "content",
        [b"", b"this is not a model", b"\x08\x07\x12\x04junk" * 50],
        ids=["empty", "text", "corrupt"],
    )
    def test_a_file_that_is_not_onnx_cannot_be_served_exit_1(
        self, tmp_path: Path, content: bytes, workers: str
    ) -> None:
        bad = tmp_path / "bad.onnx"
        bad.write_bytes(content)
        result = serve(bad, "--workers", workers)
        assert result.returncode == exit_codes.FAILED, result.stderr
        assert "is not a valid ONNX model" in result.stderr

    def test_sha256_mismatch_refuses_to_serve_exit_1(self, iris_model: Path) -> None:
        result = serve(iris_model, "--sha256", "0" * 64)
        assert result.returncode == exit_codes.FAILED
        assert "has sha256" in result.stderr
        assert "refusing to serve" in result.stderr

    def test_matching_sha256_serves(self, iris_model: Path) -> None:
        digest = hashlib.sha256(iris_model.read_bytes()).hexdigest()
        with running_server(iris_model, "--sha256", digest.upper(), "--no-access-log") as server:
            assert httpx.get(f"{server.url}/v2/models/iris/ready").status_code == 200


class TestListening:
    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_a_port_another_server_listens_on_is_a_clear_error_and_exit_1(
        self, iris_model: Path, workers: str
    ) -> None:
        with running_server(iris_model, "--no-access-log") as first:
            taken = str(first.port)
            result = serve(iris_model, "--port", taken, "--workers", workers)
            assert result.returncode == 1, result.stderr
            assert f"cannot listen on 127.0.0.1:{taken}" in result.stderr
            assert httpx.get(f"{first.url}/v2/health/ready").status_code == 200

    def test_a_killed_servers_port_is_free_at_once_despite_time_wait(
        self, iris_model: Path
    ) -> None:
        first = start_server(iris_model, "--no-access-log")
        try:
            first.wait_ready()
            for _ in range(5):  # the server closes these, so they stay in TIME_WAIT for a minute
                httpx.get(f"{first.url}/v2/health/live", headers={"Connection": "close"})
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait(timeout=10)
            with running_server(iris_model, "--no-access-log", port=first.port) as again:
                assert httpx.get(f"{again.url}/v2/health/ready").status_code == 200
        finally:
            first.stop()


class TestReadiness:
    async def test_before_the_model_is_loaded_live_is_200_and_ready_and_infer_are_503(
        self, iris_model: Path
    ) -> None:
        # Without the lifespan, the app is exactly in its "still loading" state.
        app = create_app(ServerSettings(model_path=iris_model, model_name="iris", access_log=False))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/v2/health/live")).status_code == 200
            assert (await client.get("/v2/health/ready")).status_code == 503
            assert (await client.get("/v2/models/iris/ready")).json() == {
                "name": "iris",
                "ready": False,
            }
            response = await client.post("/v2/models/iris/infer", json={"inputs": []})
            assert response.status_code == 503
            assert "still loading" in response.json()["error"]
            assert (await client.get("/v2/models/iris")).status_code == 503


class TestGracefulShutdown:
    def test_sigterm_finishes_the_in_flight_request_then_exits_0(self, tmp_path: Path) -> None:
        model = sample_models.slow(tmp_path / "slow.onnx")
        # Size one request so that it runs for about 3 s on this machine. The first run of a
        # session pays one-off costs, so only the second one is timed.
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        probe = np.zeros((64, 512), dtype=np.float32)
        session.run(["y"], {"x": probe})
        started = time.perf_counter()
        session.run(["y"], {"x": probe})
        rows = max(64, int(64 * 3.0 / (time.perf_counter() - started)))
        body = np.zeros((rows, 512), dtype=np.float32)
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [rows, 512],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": body.nbytes},
                    }
                ],
                "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
            }
        ).encode()

        # On a fast machine 3 s of rows is more than the default 64 MiB body limit.
        limit = str(len(header) + body.nbytes + 1024)
        server = start_server(model, "--no-access-log", "--max-request-bytes", limit)
        try:
            server.wait_ready()
            results: list[httpx.Response | Exception] = []

            def send() -> None:
                try:
                    results.append(
                        httpx.post(
                            f"{server.url}/v2/models/slow/infer",
                            content=header + body.tobytes(),
                            headers={"Inference-Header-Content-Length": str(len(header))},
                            timeout=60,
                        )
                    )
                except Exception as error:  # reported by the asserts below
                    results.append(error)

            request = threading.Thread(target=send)
            request.start()
            time.sleep(0.4)
            assert request.is_alive(), f"the request ended before SIGTERM: {results}"
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            with pytest.raises(httpx.ConnectError):  # no longer accepting
                httpx.get(f"{server.url}/v2/health/live", timeout=1)
            assert request.is_alive(), "the request should still be running when SIGTERM came"
            request.join(timeout=60)
            assert results, "the in-flight request got no answer"
            assert isinstance(results[0], httpx.Response), results[0]
            assert results[0].status_code == 200
            assert len(results[0].content) > body.nbytes  # the whole [rows, 512] output
            assert server.process.wait(timeout=15) == 0
        finally:
            server.stop()
