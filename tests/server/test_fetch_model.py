"""`weir fetch-model`, the pods' init container: copies a model and refuses a wrong one."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from weir_server.fetch import FetchError, fetch


@pytest.fixture
def model_site(iris_model: Path) -> Iterator[str]:
    handler = partial(SimpleHTTPRequestHandler, directory=str(iris_model.parent))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_http_download_with_matching_sha256(
    model_site: str, iris_model: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "models" / "model.onnx"
    assert fetch(f"{model_site}/iris.onnx", dest, digest(iris_model), log=lambda m: None) == digest(
        iris_model
    )
    assert dest.read_bytes() == iris_model.read_bytes()


def test_a_sha256_mismatch_leaves_no_file_behind(model_site: str, tmp_path: Path) -> None:
    dest = tmp_path / "model.onnx"
    with pytest.raises(FetchError, match=r"but 0+ was expected"):
        fetch(f"{model_site}/iris.onnx", dest, "0" * 64, log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_file_is_not_retried(model_site: str, tmp_path: Path) -> None:
    messages: list[str] = []
    with pytest.raises(FetchError, match="answered 404"):
        fetch(f"{model_site}/nope.onnx", tmp_path / "m.onnx", log=messages.append)
    assert messages == []


def test_an_unreachable_server_is_retried_then_reported(tmp_path: Path) -> None:
    messages: list[str] = []
    with pytest.raises(FetchError, match="Connection refused"):
        fetch("http://127.0.0.1:9/m.onnx", tmp_path / "m.onnx", attempts=2, log=messages.append)
    assert len(messages) == 1
    assert "retrying" in messages[0]


def test_file_uri_as_used_for_pvc_models(iris_model: Path, tmp_path: Path) -> None:
    dest = tmp_path / "m.onnx"
    fetch(f"file://{iris_model}", dest, digest(iris_model).upper(), log=lambda m: None)
    assert dest.read_bytes() == iris_model.read_bytes()


def test_the_command_exits_non_zero_with_the_reason(iris_model: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "weir_operator.cli",
            "fetch-model",
            "--uri",
            f"file://{iris_model}",
            "--dest",
            str(tmp_path / "m.onnx"),
            "--sha256",
            "1" * 64,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "was expected" in result.stderr
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "weir_operator.cli",
            "fetch-model",
            "--uri",
            f"file://{iris_model}",
            "--dest",
            str(tmp_path / "m.onnx"),
            "--sha256",
            digest(iris_model),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "m.onnx").read_bytes() == iris_model.read_bytes()


class _Stalls(SimpleHTTPRequestHandler):
    """Promises 100,000 bytes, sends 10, then nothing for longer than the client waits."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        time.sleep(2)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def test_a_download_that_stalls_midway_is_retried_then_reported_not_a_traceback(
    tmp_path: Path,
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stalls)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/m.onnx"
        messages: list[str] = []
        with pytest.raises(FetchError, match=r"reading .* failed: timed out"):
            fetch(url, tmp_path / "m.onnx", timeout=0.3, attempts=2, log=messages.append)
        assert len(messages) == 1
        assert "retrying" in messages[0]
        assert list(tmp_path.iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()
