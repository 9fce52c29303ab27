"""Who may change what `weir run` runs: only the holder of its control token, from a request
that names the loopback address, with a JSON body of bounded size. Reads stay open on loopback.
A manifest cannot smuggle in environment variables that make a server run other code.

Each test would have failed before: the control API took any write from anyone on the machine
(and from a web page, through a `text/plain` POST or DNS rebinding), and a `PYTHONPATH` with a
`sitecustomize.py` ran inside the servers."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.local_run import LocalRun, infer_body, manifest, write_manifests

BASE = "/api/v1/modeldeployments"


@pytest.fixture
def running(local_run: LocalRun, iris_versions: dict[str, Path]) -> LocalRun:
    write_manifests(local_run.folder, manifest("iris", iris_versions["iris"], "1"))
    local_run.wait_up()
    local_run.wait_healthy("iris", "1")
    return local_run


def anonymous(run: LocalRun, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=run.control_url, timeout=10, headers=headers)


def unchanged(run: LocalRun) -> None:
    served = run.get("iris")
    assert served["metadata"]["generation"] == 1
    assert "serving.weir.dev/request" not in served["metadata"].get("annotations", {})
    assert "lastRequest" not in served.get("status", {})
    assert served["status"]["phase"] == "Healthy"


class TestWritesNeedTheToken:
    def test_every_write_without_the_token_is_401_and_changes_nothing(
        self, running: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        other = manifest("other", iris_versions["iris"], "1")
        model = {"uri": iris_versions["iris_v2"].as_uri(), "version": "2"}
        writes = [
            ("POST", f"{BASE}/iris/requests", {"action": "promote"}),
            ("POST", f"{BASE}/iris/requests", {"action": "abort"}),
            ("POST", f"{BASE}/iris/requests", {"action": "undo"}),
            ("PATCH", f"{BASE}/iris/model", model),
            ("POST", BASE, {"items": [other]}),
            ("DELETE", f"{BASE}/iris", None),
        ]
        for authorization in (None, "Bearer wrong-token", f"Basic {running.token()}"):
            headers = {"Authorization": authorization} if authorization else {}
            with anonymous(running, **headers) as client:
                for method, path, body in writes:
                    answer = client.request(method, path, json=body)
                    assert answer.status_code == 401, (method, path, answer.text)
                    assert "control token" in answer.json()["error"]
                    assert answer.headers["www-authenticate"] == "Bearer"
        unchanged(running)
        assert running.control.get(f"{BASE}/other").status_code == 404

    def test_reads_stay_open_on_loopback(self, running: LocalRun) -> None:
        with anonymous(running) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get(f"{BASE}/iris").json()["status"]["phase"] == "Healthy"
            assert client.get(f"{BASE}/iris/events").status_code == 200

    def test_the_token_is_readable_by_its_user_only(self, running: LocalRun) -> None:
        token_file = running.state_dir / "control-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        # The test made the state folder itself (0755); what weir run makes in it is its own.
        assert stat.S_IMODE((running.state_dir / "objects").stat().st_mode) == 0o700
        for state_file in (running.state_dir / "objects").iterdir():
            assert stat.S_IMODE(state_file.stat().st_mode) == 0o600

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
    def test_another_local_user_cannot_promote(self, running: LocalRun) -> None:
        """The issue's repro: `setpriv --reuid 65534 curl -X POST .../requests`."""
        # The standard library only, run by the system's python: the test's own venv may sit
        # in a folder the other user cannot read (a 0700 checkout).
        promote = (
            "import sys, urllib.request, urllib.error\n"
            'request = urllib.request.Request(sys.argv[1], data=b\'{"action": "promote"}\','
            " headers={'Content-Type': 'application/json'})\n"
            "try:\n    print(urllib.request.urlopen(request, timeout=10).status)\n"
            "except urllib.error.HTTPError as error:\n    print(error.code)\n"
        )
        url = f"{running.control_url}{BASE}/iris/requests"
        nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
        python = shutil.which("python3", path="/usr/bin:/usr/local/bin") or sys.executable
        result = subprocess.run(
            [*nobody, python, "-I", "-c", promote, url], capture_output=True, text=True,
            timeout=60, cwd="/",
        )  # fmt: skip
        assert result.stdout.strip() == "401", result.stderr
        token_file = running.state_dir / "control-token"
        read = subprocess.run(
            [*nobody, "cat", str(token_file)], capture_output=True, text=True, timeout=30
        )
        assert read.returncode != 0
        assert not read.stdout
        unchanged(running)

    def test_the_cli_of_the_same_user_finds_the_token_by_itself(
        self, running: LocalRun, tmp_path: Path
    ) -> None:
        environment = {k: v for k, v in os.environ.items() if k != "WEIR_RUN_TOKEN"}

        def weir(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "weir_operator.cli", *args, "--local",
                 running.control_url, "--no-wait"],
                capture_output=True, text=True, timeout=60, env={**environment, **extra},
            )  # fmt: skip

        elsewhere = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
        refused = weir("abort", "iris", **elsewhere)  # another user's folders: no token found
        assert refused.returncode == 3, refused.stderr
        assert "control token" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        unchanged(running)

        given = weir("abort", "iris", **elsewhere, WEIR_RUN_TOKEN=running.token())
        assert given.returncode == 0, given.stderr
        found = weir("abort", "iris")  # the same user's discovery file
        assert found.returncode == 0, found.stderr


class TestRequestsABrowserCouldSend:
    def test_a_foreign_host_or_origin_is_refused_even_for_reads(self, running: LocalRun) -> None:
        with anonymous(running, Authorization=f"Bearer {running.token()}") as client:
            rebinding = client.get(f"{BASE}/iris", headers={"Host": "attacker.example:80"})
            assert rebinding.status_code == 403, rebinding.text
            assert "Host" in rebinding.json()["error"]
            page = client.post(
                f"{BASE}/iris/requests",
                json={"action": "abort"},
                headers={"Origin": "http://attacker.example"},
            )
            assert page.status_code == 403, page.text
            same = client.get(f"{BASE}/iris", headers={"Origin": running.control_url})
            assert same.status_code == 200
        unchanged(running)

    def test_a_write_that_is_not_json_is_415(self, running: LocalRun) -> None:
        with anonymous(running, Authorization=f"Bearer {running.token()}") as client:
            for media_type in ("text/plain", "application/x-www-form-urlencoded", ""):
                answer = client.post(
                    f"{BASE}/iris/requests",
                    content=json.dumps({"action": "abort"}),
                    headers={"Content-Type": media_type},
                )
                assert answer.status_code == 415, (media_type, answer.text)
        unchanged(running)


class TestBodies:
    def test_a_body_over_the_limit_is_413_and_the_router_is_not_held_up(
        self, running: LocalRun
    ) -> None:
        """Was: the control API read 500 MB, and a 4 MB apply stalled the router for 9 s."""
        latencies: list[float] = []
        stop = threading.Event()

        def small_requests() -> None:
            with httpx.Client(base_url=running.router_url, timeout=30) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    client.post("/v2/models/iris/infer", json=infer_body([5.1, 3.5, 1.4, 0.2]))
                    latencies.append(time.monotonic() - started)

        sender = threading.Thread(target=small_requests, daemon=True)
        sender.start()
        try:
            time.sleep(0.5)
            big = {"items": [{"padding": "x" * (5 * 1024 * 1024)}]}
            answer = running.control.post(BASE, json=big)
            assert answer.status_code == 413, answer.text
            # Just under the limit, and valid: a sample input of ~1 MB goes through the
            # validation (off the loop) while the router keeps answering.
            document = manifest("large", Path("/tmp/none.onnx"), "1")
            rows = [[5.1, 3.5, 1.4, 0.2]] * 40_000
            inputs = [{"name": "input", "shape": [40_000, 4], "datatype": "FP32", "data": rows}]
            document["spec"]["server"] = {"sampleInput": {"inputs": inputs}}
            assert 0.5e6 < len(json.dumps(document)) < 1024 * 1024
            applied = running.control.post(BASE, json=document)
            assert applied.status_code == 200, applied.text
            time.sleep(0.5)
        finally:
            stop.set()
            sender.join(timeout=30)
        assert latencies
        print(f"router latency during the control writes: max {max(latencies) * 1000:.0f} ms")
        assert max(latencies) < 1.0, "a control write held up the router"

    def test_a_document_with_metadata_that_is_not_a_mapping_is_422_not_500(
        self, running: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        document: dict[str, Any] = manifest("x", iris_versions["iris"], "1")
        for metadata in (5, "iris", [], None):
            document["metadata"] = metadata
            answer = running.control.post(BASE, json=document)
            assert answer.status_code == 422, (metadata, answer.text)
            assert answer.json()["problems"]


class TestEnvironmentThatRunsCode:
    def test_pythonpath_with_a_sitecustomize_is_refused_and_never_runs(
        self, running: LocalRun, iris_versions: dict[str, Path], tmp_path: Path
    ) -> None:
        evil = tmp_path / "evil"
        evil.mkdir()
        marker = tmp_path / "it-ran"
        (evil / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
        for name, value in [
            ("PYTHONPATH", str(evil)),
            ("PYTHONSTARTUP", str(evil / "sitecustomize.py")),
            ("LD_PRELOAD", str(evil / "lib.so")),
            ("PATH", str(evil)),
            ("WEIR_REVISION", "forged"),
        ]:
            document = manifest("iris", iris_versions["iris"], "1")
            document["spec"]["server"] = {"env": [{"name": name, "value": value}]}
            answer = running.control.post(BASE, json=document)
            assert answer.status_code == 422, (name, answer.text)
            assert any("env[0].name" in p and "refused" in p for p in answer.json()["problems"])
            write_manifests(running.folder, document)  # the file path too: refused
            running.eventually(
                lambda: any(
                    c["type"] == "ManifestApplied" and c["status"] == "False"
                    for c in running.status("iris").get("conditions", [])
                ),
                30,
                f"the file with {name} reported in the status",
            )
        time.sleep(1)
        assert not marker.exists(), "the sitecustomize.py ran"
        assert running.get("iris")["metadata"]["generation"] == 1


class TestTheRoutersBodyLimit:
    def test_a_body_over_the_servers_limit_is_413_before_it_is_buffered(
        self, running: LocalRun
    ) -> None:
        """Was: the router buffered a 300 MB body whole before forwarding it."""
        import socket

        from weir_operator.local.proxy import MAX_BODY_BYTES

        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\n"
                + f"Content-Length: {300 * 1024 * 1024}\r\n\r\n".encode()
                + b"{"
            )
            answer = _read_answer(sock)
        assert answer.startswith("HTTP/1.1 413"), answer
        assert f"limit of {MAX_BODY_BYTES} bytes" in answer
        # Chunked, no length declared: refused once the count passes the limit.
        chunk = b"x" * (1024 * 1024)
        with socket.create_connection(("127.0.0.1", running.port), timeout=30) as sock:
            sock.sendall(
                b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            try:
                for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass  # the router answered and closed while the body was still coming
            answer = sock.recv(65536).decode(errors="replace")
        assert answer.startswith("HTTP/1.1 413"), answer[:200]
        assert served_ok(running)


def served_ok(run: LocalRun) -> bool:
    body = infer_body([5.1, 3.5, 1.4, 0.2])
    return httpx.post(f"{run.router_url}/v2/models/iris/infer", json=body).status_code == 200


def _read_answer(sock: Any) -> str:
    """A whole HTTP answer (head and Content-Length body; they may come in two packets)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode(errors="replace")
