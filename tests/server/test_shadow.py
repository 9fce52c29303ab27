"""Shadow traffic from a real stable `weir serve --mirror-config` to a real canary: the client
always gets the stable's answer, a share of the requests is copied to the canary byte for byte
(binary tensor extension included), and the canary's answers are compared with the stable's
(weir_server/shadow.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.processes import ServerProcess, free_port, running_server
from weir_server import sample_models
from weir_server.shadow import Mirror, _RateLimit, decode_response, parse_mirror

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


def request(rows: np.ndarray = ROWS) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": list(rows.shape),
             "data": rows.ravel().tolist()}
        ]
    }  # fmt: skip


def shadow_counts(server: ServerProcess) -> dict[str, float]:
    """weir_shadow_* counters of a server, summed over labels."""
    found: dict[str, float] = {}
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("weir_shadow_"):
            name = line.split("{", 1)[0].removeprefix("weir_shadow_").removesuffix("_total")
            found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def requests_counted(server: ServerProcess) -> float:
    total = 0.0
    for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("weir_inference_requests_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def settle(
    server: ServerProcess, key: str, expected: float, timeout: float = 15.0
) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    counts = shadow_counts(server)
    while counts.get(key, 0.0) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        counts = shadow_counts(server)
    return counts


def write_mirror(path: Path, canary: str, percent: float, compare: str | None = "top1") -> None:
    agreement = None if compare is None else {"compare": compare, "output": "probabilities"}
    document = {"url": canary, "percent": percent, "revision": "c1", "agreement": agreement}
    path.write_text(json.dumps(document))
    time.sleep(1.2)  # the server looks at the file once a second


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shadow-models")
    return {
        "stable": sample_models.iris(folder / "stable.onnx"),
        "same": sample_models.iris(folder / "same.onnx"),
        "wrong": sample_models.iris(folder / "wrong.onnx", seed=99),
    }


@pytest.fixture(scope="module")
def mirror_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mirror") / "mirror.json"


@pytest.fixture(scope="module")
def stable(models: dict[str, Path], mirror_file: Path) -> Iterator[ServerProcess]:
    with running_server(
        models["stable"], "--name", "iris", "--mirror-config", str(mirror_file)
    ) as server:
        yield server


@pytest.fixture(scope="module")
def same_canary(models: dict[str, Path]) -> Iterator[ServerProcess]:
    with running_server(models["same"], "--name", "iris") as server:
        yield server


@pytest.fixture(scope="module")
def wrong_canary(models: dict[str, Path]) -> Iterator[ServerProcess]:
    with running_server(models["wrong"], "--name", "iris") as server:
        yield server


class TestClientsOnlyGetTheStablesAnswer:
    def test_answers_are_the_stables_while_a_wrong_canary_gets_every_request(
        self, stable: ServerProcess, wrong_canary: ServerProcess, mirror_file: Path
    ) -> None:
        before = httpx.post(f"{stable.url}/v2/models/iris/infer", json=request()).json()
        write_mirror(mirror_file, wrong_canary.url, 100)
        start = shadow_counts(stable)
        answers = [
            httpx.post(f"{stable.url}/v2/models/iris/infer", json=request()).json()
            for _ in range(20)
        ]
        assert all(a["outputs"] == before["outputs"] for a in answers)
        counts = settle(stable, "compared_samples", start.get("compared_samples", 0) + 40)
        assert counts["mirrored_requests"] - start.get("mirrored_requests", 0) == 20
        assert counts["compared_samples"] - start.get("compared_samples", 0) == 40
        agreed = counts.get("agreed_samples", 0) - start.get("agreed_samples", 0)
        assert agreed < 40, "another model's answers do not all agree"
        disagreed = counts.get("disagreed_samples", 0) - start.get("disagreed_samples", 0)
        assert agreed + disagreed == 40


class TestTheShareMirrored:
    def test_percent_sets_the_share_exactly_and_zero_turns_it_off(
        self, stable: ServerProcess, same_canary: ServerProcess, mirror_file: Path
    ) -> None:
        write_mirror(mirror_file, same_canary.url, 25)
        start = shadow_counts(stable)
        for _ in range(40):
            httpx.post(f"{stable.url}/v2/models/iris/infer", json=request()).raise_for_status()
        counts = settle(stable, "mirrored_requests", start.get("mirrored_requests", 0) + 10)
        assert counts["mirrored_requests"] - start.get("mirrored_requests", 0) == 10
        write_mirror(mirror_file, same_canary.url, 0)
        seen = requests_counted(same_canary)
        for _ in range(10):
            httpx.post(f"{stable.url}/v2/models/iris/infer", json=request()).raise_for_status()
        time.sleep(0.5)
        assert requests_counted(same_canary) == seen, "percent 0 copies nothing"

    def test_the_same_model_agrees_on_every_row(
        self, stable: ServerProcess, same_canary: ServerProcess, mirror_file: Path
    ) -> None:
        write_mirror(mirror_file, same_canary.url, 100, "close")
        start = shadow_counts(stable)
        for _ in range(10):
            httpx.post(f"{stable.url}/v2/models/iris/infer", json=request()).raise_for_status()
        counts = settle(stable, "agreed_samples", start.get("agreed_samples", 0) + 20)
        assert counts["compared_samples"] - start.get("compared_samples", 0) == 20
        assert counts["agreed_samples"] - start.get("agreed_samples", 0) == 20


class TestTheCostIsBounded:
    def test_copies_over_max_per_second_are_dropped_and_counted(
        self, stable: ServerProcess, same_canary: ServerProcess, mirror_file: Path
    ) -> None:
        document = {"url": same_canary.url, "percent": 100, "maxPerSecond": 5}
        mirror_file.write_text(json.dumps(document))
        time.sleep(1.2)
        start = shadow_counts(stable)
        began = time.monotonic()
        with httpx.Client() as client:
            for _ in range(60):
                client.post(f"{stable.url}/v2/models/iris/infer", json=request()).raise_for_status()
        elapsed = time.monotonic() - began
        counts = settle(stable, "dropped_requests", start.get("dropped_requests", 0) + 1)
        mirrored = counts["mirrored_requests"] - start.get("mirrored_requests", 0)
        dropped = counts["dropped_requests"] - start.get("dropped_requests", 0)
        assert mirrored + dropped == 60
        assert mirrored <= 5 + 5 * elapsed + 1, "a second's burst, then 5 a second"

    def test_the_rate_limit_refills_with_time(self) -> None:
        now = [100.0]
        limit = _RateLimit(lambda: now[0])
        assert not limit.take(10), "starts empty: no burst at start"
        now[0] += 1.0
        assert sum(limit.take(10) for _ in range(20)) == 10
        now[0] += 0.25
        assert sum(limit.take(10) for _ in range(20)) == 2


class TestBinaryBodies:
    def test_a_binary_request_is_mirrored_and_its_binary_answer_compared(
        self, stable: ServerProcess, same_canary: ServerProcess, mirror_file: Path
    ) -> None:
        write_mirror(mirror_file, same_canary.url, 100)
        header = json.dumps({
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                        "parameters": {"binary_data_size": ROWS.nbytes}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }).encode()  # fmt: skip
        start = shadow_counts(stable)
        response = httpx.post(
            f"{stable.url}/v2/models/iris/infer",
            content=header + ROWS.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
        assert response.status_code == 200
        counts = settle(stable, "agreed_samples", start.get("agreed_samples", 0) + 2)
        assert counts["agreed_samples"] - start.get("agreed_samples", 0) == 2
        assert counts.get("canary_errors", 0) == start.get("canary_errors", 0)


class TestACanaryThatFails:
    def test_an_unreachable_canary_counts_errors_and_clients_are_answered(
        self, stable: ServerProcess, mirror_file: Path
    ) -> None:
        write_mirror(mirror_file, f"http://127.0.0.1:{free_port()}", 100)
        start = shadow_counts(stable)
        for _ in range(5):
            response = httpx.post(f"{stable.url}/v2/models/iris/infer", json=request())
            assert response.status_code == 200
        counts = settle(stable, "canary_errors", start.get("canary_errors", 0) + 5)
        assert counts["canary_errors"] - start.get("canary_errors", 0) == 5

    def test_a_hanging_canary_changes_nothing_for_clients(
        self, stable: ServerProcess, mirror_file: Path
    ) -> None:
        """A canary that accepts and never answers: the copies wait out their read timeout
        (5 s) on the senders, the queue takes the rest or drops it, clients see nothing."""
        with socket.create_server(("127.0.0.1", 0)) as hanging:
            hanging.listen(64)
            port = hanging.getsockname()[1]
            write_mirror(mirror_file, f"http://127.0.0.1:{port}", 100)
            start = shadow_counts(stable)
            latencies = []
            with httpx.Client() as client:
                for _ in range(30):
                    began = time.perf_counter()
                    response = client.post(f"{stable.url}/v2/models/iris/infer", json=request())
                    latencies.append(time.perf_counter() - began)
                    assert response.status_code == 200
            assert max(latencies) < 1.0, "no client waited for the canary"
            counts = settle(stable, "canary_errors", start.get("canary_errors", 0) + 4, 20)
            assert counts["canary_errors"] - start.get("canary_errors", 0) >= 4, counts
        write_mirror(mirror_file, f"http://127.0.0.1:{free_port()}", 0)

    def test_a_broken_mirror_file_mirrors_nothing_and_serves_on(
        self, stable: ServerProcess, same_canary: ServerProcess, mirror_file: Path
    ) -> None:
        mirror_file.write_text('{"url": "http://127.0.0.1:1", "percent": 500')
        time.sleep(1.2)
        start = shadow_counts(stable)
        assert httpx.post(f"{stable.url}/v2/models/iris/infer", json=request()).status_code == 200
        time.sleep(0.3)
        assert shadow_counts(stable).get("mirrored_requests", 0) == start.get(
            "mirrored_requests", 0
        )
        assert "mirroring nothing" in stable.log()


class TestTheMirrorFile:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("[]", "not a JSON object"),
            ('{"percent": 101, "url": "http://x"}', "percent must be from 0 to 100"),
            ('{"percent": true, "url": "http://x"}', "percent must be a number"),
            ('{"percent": 5, "url": "ftp://x"}', "url must be"),
            ('{"percent": 5, "url": "http://x", "agreement": {"compare": "mse"}}', "top1 or close"),
            ('{"percent": 5, "url": "http://x", "agreement": {"atol": -1}}', "atol and rtol"),
            ("{", "not JSON"),
        ],
    )
    def test_what_is_wrong_is_said(self, text: str, problem: str) -> None:
        with pytest.raises(ValueError, match=problem):
            parse_mirror(text)

    def test_only_the_source_revisions_servers_mirror(self, tmp_path: Path) -> None:
        path = tmp_path / "mirror.json"
        path.write_text(json.dumps({"source": "s1", "url": "http://c", "percent": 5}))
        assert Mirror(path, ("iris", "", "s1", ""), None, revision="s1").target is not None
        assert Mirror(path, ("iris", "", "c2", ""), None, revision="c2").target is None

    def test_an_unreadable_ca_mirrors_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "mirror.json"
        missing = str(tmp_path / "missing-ca.crt")
        path.write_text(json.dumps({"url": "https://c", "percent": 5, "tls": {"ca": missing}}))
        assert Mirror(path, ("iris", "", "s1", ""), None, revision="s1").target is None

    async def test_a_new_target_drops_what_was_queued_for_the_old_one(self, tmp_path: Path) -> None:
        now = [0.0]
        path = tmp_path / "mirror.json"
        with socket.create_server(("127.0.0.1", 0)) as hanging:
            hanging.listen(64)
            url = f"http://127.0.0.1:{hanging.getsockname()[1]}"
            path.write_text(json.dumps({"url": url, "percent": 100}))
            mirror = Mirror(path, ("iris", "", "s1", ""), None, revision="s1", clock=lambda: now[0])
            outputs = {"probabilities": np.zeros((1, 3), np.float32)}
            for _ in range(40):
                mirror.offer("/v2/models/iris/infer", b"{}", None, outputs, None)
                now[0] += 0.02  # the cap's bucket refills: 2 copies a step at 100 a second
            await asyncio.sleep(0.05)  # 4 senders take theirs and hang
            assert mirror.queued > 10
            path.write_text(json.dumps({"url": url + "0", "percent": 100}))
            now[0] += 2.0
            assert mirror.target is not None
            assert mirror.queued == 0
            await mirror.aclose()

    def test_empty_or_zero_mirrors_nothing(self) -> None:
        assert parse_mirror("") is None
        assert parse_mirror('{"percent": 0, "url": "http://x"}') is None


class TestCanaryAnswersAreReadLikeAClientWould:
    def test_json_and_binary_answers_decode_to_the_same_arrays(self) -> None:
        probabilities = np.array([[0.1, 0.9]], dtype=np.float32)
        as_json = json.dumps({"outputs": [{"name": "p", "datatype": "FP32", "shape": [1, 2],
                                           "data": probabilities.ravel().tolist()}]}).encode()  # fmt: skip
        header = json.dumps({"outputs": [{"name": "p", "datatype": "FP32", "shape": [1, 2],
                                          "parameters": {"binary_data_size": 8}}]}).encode()  # fmt: skip
        from_json = decode_response(as_json, None)["p"]
        from_binary = decode_response(header + probabilities.tobytes(), len(header))["p"]
        np.testing.assert_array_equal(from_json, probabilities)
        np.testing.assert_array_equal(from_binary, probabilities)

    @pytest.mark.parametrize(
        "body",
        [b"not json", b"{}", b'{"outputs": [{"name": "p"}]}',
         b'{"outputs": [{"name": "p", "datatype": "FP32", "shape": [2], "data": [1]}]}'],
    )  # fmt: skip
    def test_a_malformed_answer_is_a_protocol_error(self, body: bytes) -> None:
        from weir_server.codec import ProtocolError

        with pytest.raises(ProtocolError):
            decode_response(body, None)
