"""`weir serve --tls-cert FILE --tls-key FILE` as a user meets it: HTTPS that a client verifies
with the CA that issued the certificate (health, an inference, with one worker and with
several), nothing for a plain-HTTP client; and a certificate or key that cannot serve (missing,
not the pair, encrypted, only one of the two options) ends in one line naming the option, exit
3, before the model file is even read (a file that is no model proves it: loading it would fail
otherwise)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.server.conftest import TLS_NAME as NAME
from tests.support.certs import Authority, ServerCert
from tests.support.processes import ServerProcess, free_port
from tests.support.tls import https_client, https_url, running_tls_server
from weir_server import exit_codes

ROW = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}  # fmt: skip


@pytest.fixture(scope="module")
def tls_server(
    iris_model: Path, issued: ServerCert, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("tls")
    with running_tls_server(iris_model, issued, folder, NAME, "--name", "iris") as server:
        yield server


def weir_serve(model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "weir_operator.cli", "serve", str(model)]
    return subprocess.run(
        [*command, "--port", str(free_port()), *args], capture_output=True, text=True, timeout=60
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("weir serve: error: "), lines[0]
    return lines[0]


class TestServesHttps:
    def test_health_and_an_inference_verified_with_the_ca(
        self, tls_server: ServerProcess, issued: ServerCert
    ) -> None:
        with https_client(issued.ca, NAME) as client:
            assert client.get(https_url(tls_server, "/v2/health/ready")).status_code == 200
            answer = client.post(https_url(tls_server, "/v2/models/iris/infer"), json=ROW)
            assert answer.status_code == 200, answer.text
            outputs = {o["name"]: o for o in answer.json()["outputs"]}
            assert outputs["label"]["shape"] == [1]
            assert client.get(https_url(tls_server, "/metrics")).status_code == 200

    def test_a_plain_http_client_gets_nothing(self, tls_server: ServerProcess) -> None:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{tls_server.url}/v2/health/ready", timeout=5)

    def test_a_client_with_another_ca_refuses_the_server(self, tls_server: ServerProcess) -> None:
        with (
            https_client(Authority("another-ca").pem, NAME) as client,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            client.get(https_url(tls_server, "/v2/health/ready"))

    def test_several_workers_serve_https_too(
        self, iris_model: Path, issued: ServerCert, tmp_path: Path
    ) -> None:
        args = ("--name", "iris", "--workers", "2")
        with (
            running_tls_server(iris_model, issued, tmp_path, NAME, *args) as server,
            https_client(issued.ca, NAME) as client,
        ):
            answer = client.post(https_url(server, "/v2/models/iris/infer"), json=ROW)
            assert answer.status_code == 200, answer.text


class TestRefusesWhatCannotServe:
    @pytest.fixture
    def not_a_model(self, tmp_path: Path) -> Path:
        path = tmp_path / "iris.onnx"
        path.write_bytes(b"not an ONNX model: loading this would fail with exit 1")
        return path

    @pytest.fixture
    def files(self, tmp_path: Path, issued: ServerCert) -> tuple[Path, Path]:
        cert, key, _ = issued.write(tmp_path / "tls")
        return cert, key

    def refused(self, model: Path, *args: str) -> str:
        started = time.monotonic()
        result = weir_serve(model, *args)
        assert result.returncode == exit_codes.USAGE, result.stderr
        assert time.monotonic() - started < 30
        return one_line(result)

    def test_a_missing_certificate_file(
        self, not_a_model: Path, files: tuple[Path, Path], tmp_path: Path
    ) -> None:
        missing = tmp_path / "nope.crt"
        line = self.refused(not_a_model, "--tls-cert", str(missing), "--tls-key", str(files[1]))
        assert f"--tls-cert file {missing} does not exist" in line

    def test_a_missing_key_file(
        self, not_a_model: Path, files: tuple[Path, Path], tmp_path: Path
    ) -> None:
        missing = tmp_path / "nope.key"
        line = self.refused(not_a_model, "--tls-cert", str(files[0]), "--tls-key", str(missing))
        assert f"--tls-key file {missing} does not exist" in line

    def test_a_key_that_is_not_the_certificates(
        self, not_a_model: Path, files: tuple[Path, Path], authority: Authority, tmp_path: Path
    ) -> None:
        other = authority.issue(NAME)
        _, other_key, _ = other.write(tmp_path / "other")
        line = self.refused(not_a_model, "--tls-cert", str(files[0]), "--tls-key", str(other_key))
        assert "--tls-key" in line
        assert "is not the key of the certificate" in line

    @pytest.mark.parametrize(
        "private_format",
        [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL],
        ids=["pkcs8", "traditional"],
    )
    def test_an_encrypted_key(
        self,
        not_a_model: Path,
        files: tuple[Path, Path],
        tmp_path: Path,
        private_format: serialization.PrivateFormat,
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        encrypted = tmp_path / "encrypted.key"
        encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                private_format,
                serialization.BestAvailableEncryption(b"a passphrase"),
            )
        )
        line = self.refused(not_a_model, "--tls-cert", str(files[0]), "--tls-key", str(encrypted))
        assert f"--tls-key file {encrypted} is encrypted" in line

    def test_a_certificate_file_that_holds_no_certificate(
        self, not_a_model: Path, files: tuple[Path, Path]
    ) -> None:
        line = self.refused(not_a_model, "--tls-cert", str(files[1]), "--tls-key", str(files[1]))
        assert "--tls-cert" in line
        assert "holds no PEM certificate" in line

    @pytest.mark.parametrize(("given", "missing"), [("--tls-cert", "--tls-key"), ("--tls-key", "--tls-cert")])  # fmt: skip
    def test_only_one_of_the_two_options(
        self, not_a_model: Path, files: tuple[Path, Path], given: str, missing: str
    ) -> None:
        path = files[0] if given == "--tls-cert" else files[1]
        line = self.refused(not_a_model, given, str(path))
        assert f"{given} needs {missing} too" in line
