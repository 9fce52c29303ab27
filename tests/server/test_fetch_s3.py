"""`weir fetch-model` against stores that want credentials: a real S3-compatible server (moto,
IAM enforced, on 127.0.0.1) reached through the endpoint override, and an http(s) server that
wants a header taken from a Secret.

What a user sees when a credential is wrong is one line that names the bucket or URL and what to
fix, at once: such failures are not retried, as no retry can mend them. Transient ones are."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.support.processes import free_port
from tests.support.s3 import REGION, AwsKey, MotoS3, aws_isolated_env, moto_s3
from weir_server.fetch import FetchError, StoreAccess, fetch

# A command that ended without retrying takes well under this; each retry would add its
# backoff (1, 2, 4, 8, 16 s with --attempts 6).
NOT_RETRIED_WITHIN = 12.0
ATTEMPTS = "6"


@pytest.fixture(scope="module")
def s3(iris_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    with moto_s3(iris_model, tmp_path_factory.mktemp("moto")) as server:
        yield server


def fetch_model(
    uri: str, dest: Path, env: dict[str, str], *extra: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "weir_operator.cli", "fetch-model", "--uri", uri,
         "--dest", str(dest), "--attempts", ATTEMPTS, "--timeout", "10", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )  # fmt: skip
    return result, time.monotonic() - started


def only_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command's whole output, which must be one error line and nothing else."""
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("weir fetch-model: error: "), lines
    return lines[0]


class TestS3WithTheRightKey:
    def test_the_model_comes_through_the_endpoint_override_with_its_sha256_checked(
        self, s3: MotoS3, iris_model: Path, tmp_path: Path
    ) -> None:
        dest = tmp_path / "models" / "model.onnx"
        result, _ = fetch_model(s3.uri(), dest, s3.aws_env(s3.reader), "--sha256", s3.model_sha256)
        assert result.returncode == 0, result.stderr
        assert dest.read_bytes() == iris_model.read_bytes()
        assert s3.model_sha256 in result.stderr
        assert s3.reader.secret_access_key not in result.stdout + result.stderr

    def test_a_sha256_mismatch_fails_and_leaves_no_file(self, s3: MotoS3, tmp_path: Path) -> None:
        dest = tmp_path / "model.onnx"
        result, _ = fetch_model(s3.uri(), dest, s3.aws_env(s3.reader), "--sha256", "0" * 64)
        assert result.returncode == 1
        assert "but " + "0" * 64 + " was expected" in only_error_line(result)
        assert list(tmp_path.iterdir()) == []

    def test_credentials_given_in_process_as_weir_run_does(
        self, s3: MotoS3, iris_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name, value in aws_isolated_env({}).items():
            monkeypatch.setenv(name, value)
        access = StoreAccess(
            s3_endpoint=s3.endpoint,
            s3_region=REGION,
            aws_access_key_id=s3.reader.access_key_id,
            aws_secret_access_key=s3.reader.secret_access_key,
        )
        assert s3.reader.secret_access_key not in repr(access)
        dest = tmp_path / "model.onnx"
        digest = fetch(s3.uri(), dest, s3.model_sha256, access=access, log=lambda m: None)
        assert digest == s3.model_sha256
        assert dest.read_bytes() == iris_model.read_bytes()


WHY_IT_FAILS = {
    # case: (key, bucket or None for the model's, key or None for the model's, what the line says)
    "a wrong secret key": (
        "wrong_secret", None, None, ["SignatureDoesNotMatch", "AWS_SECRET_ACCESS_KEY"]
    ),
    "an unknown access key": ("unknown_key", None, None, ["InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"]),
    "no credentials at all": (None, None, None, ["no AWS credentials", "spec.model.auth.secretRef"]),
    "a missing bucket": ("reader", "weir-missing", None, ["NoSuchBucket", "'weir-missing' does not exist"]),
    "a missing object": ("reader", None, "iris/nope.onnx", ["NoSuchKey", "'iris/nope.onnx'"]),
    "a denied object": ("reader", None, "private/model.onnx", ["AccessDenied", "s3:GetObject on arn:aws:s3:::weir-models/private/model.onnx"]),
}  # fmt: skip


class TestS3FailuresAreOneLineAndNotRetried:
    @pytest.mark.parametrize("case", list(WHY_IT_FAILS))
    def test_each_cause_is_named_with_the_bucket_and_ends_at_once(
        self, s3: MotoS3, tmp_path: Path, case: str
    ) -> None:
        key_name, bucket, key, expected = WHY_IT_FAILS[case]
        credentials: AwsKey | None = getattr(s3, key_name) if key_name else None
        uri = s3.uri(key or s3.model_key, bucket or s3.bucket)
        result, took = fetch_model(uri, tmp_path / "model.onnx", s3.aws_env(credentials))
        assert result.returncode == 1, result.stderr
        line = only_error_line(result)  # no "retrying" line, no traceback
        assert uri in line, line
        for words in expected:
            assert words in line, line
        assert took < NOT_RETRIED_WITHIN, f"{took:.1f} s: {line}"
        for secret in (s3.reader, s3.wrong_secret, s3.admin):
            assert secret.secret_access_key not in line
        assert list(tmp_path.iterdir()) == []


class _AnswersSlowDown(BaseHTTPRequestHandler):
    """An S3 endpoint that is overloaded: 503 SlowDown to every request."""

    def do_GET(self) -> None:
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class TestS3TransientFailuresAreRetried:
    def test_an_endpoint_that_refuses_connections_is_retried_then_reported(
        self, s3: MotoS3, tmp_path: Path
    ) -> None:
        nothing = f"http://127.0.0.1:{free_port()}"
        env = s3.aws_env(s3.reader, AWS_ENDPOINT_URL_S3=nothing)
        result = subprocess.run(
            [sys.executable, "-m", "weir_operator.cli", "fetch-model", "--uri", s3.uri(),
             "--dest", str(tmp_path / "m.onnx"), "--attempts", "2"],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 2, lines
        assert "retrying in 1 s (attempt 2 of 2)" in lines[0]
        assert f"cannot reach the S3 endpoint at {nothing}" in lines[1]
        assert "Traceback" not in result.stderr

    def test_slow_down_is_retried(
        self, http_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name, value in aws_isolated_env({}).items():
            monkeypatch.setenv(name, value)
        endpoint = http_server(_AnswersSlowDown)
        access = StoreAccess(
            s3_endpoint=endpoint, s3_region=REGION, aws_access_key_id="a", aws_secret_access_key="b"
        )
        messages: list[str] = []
        with pytest.raises(FetchError, match="503 SlowDown") as raised:
            fetch(
                "s3://b/k.onnx", tmp_path / "m.onnx", attempts=2, log=messages.append, access=access
            )
        assert raised.value.retriable
        assert len(messages) == 1
        assert "retrying" in messages[0]


TOKEN = "s3cr3t-t0ken-never-shown"


class _WantsBearer(BaseHTTPRequestHandler):
    """Serves `model` at /model.onnx to `Authorization: Bearer TOKEN` only (401 otherwise);
    /same-origin redirects to /model.onnx, /elsewhere to `elsewhere`. Records what it got."""

    model = b""
    elsewhere = ""
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        if self.path in ("/same-origin", "/elsewhere"):
            target = "/model.onnx" if self.path == "/same-origin" else self.elsewhere
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", "Bearer")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.model)))
        self.end_headers()
        self.wfile.write(self.model)

    def log_message(self, *args: object) -> None:
        pass


class _Open(BaseHTTPRequestHandler):
    """Another origin: serves the model to anyone, and records the Authorization it got."""

    model = b""
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.model)))
        self.end_headers()
        self.wfile.write(self.model)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class TokenSite:
    url: str
    site: type[_WantsBearer]  # .seen: the Authorization of each request it got
    other: type[_Open]


@pytest.fixture
def token_site(http_server: Any, iris_model: Path) -> TokenSite:
    body = iris_model.read_bytes()
    other = type("Other", (_Open,), {"model": body, "seen": []})
    other_url = http_server(other)
    site = type(
        "Site", (_WantsBearer,), {"model": body, "seen": [], "elsewhere": f"{other_url}/m.onnx"}
    )
    return TokenSite(http_server(site), site, other)


def header_env(value: str | None) -> dict[str, str]:
    env = aws_isolated_env()
    env.update({"WEIR_FETCH_HEADER_NAME": "Authorization", "WEIR_FETCH_HEADER_PREFIX": "Bearer "})
    if value is not None:
        env["WEIR_FETCH_HEADER_VALUE"] = value
    return env


class TestHttpHeaderFromASecret:
    def test_the_header_is_sent_and_the_value_never_shown(
        self, token_site: TokenSite, iris_model: Path, tmp_path: Path
    ) -> None:
        dest = tmp_path / "model.onnx"
        digest = hashlib.sha256(iris_model.read_bytes()).hexdigest()
        # A Secret file written with `echo` ends with a newline: it is not part of the token.
        result, _ = fetch_model(
            f"{token_site.url}/model.onnx", dest, header_env(TOKEN + "\n"), "--sha256", digest
        )
        assert result.returncode == 0, result.stderr
        assert dest.read_bytes() == iris_model.read_bytes()
        assert token_site.site.seen == [f"Bearer {TOKEN}"]
        assert TOKEN not in result.stdout + result.stderr

    def test_a_refused_credential_is_one_clear_line_not_retried(
        self, token_site: TokenSite, tmp_path: Path
    ) -> None:
        wrong = "wrong-token-also-never-shown"
        result, took = fetch_model(
            f"{token_site.url}/model.onnx", tmp_path / "m.onnx", header_env(wrong)
        )
        assert result.returncode == 1
        line = only_error_line(result)
        assert f"GET {token_site.url}/model.onnx answered 401" in line
        assert "the credential in the Authorization header was refused" in line
        assert "spec.model.auth.header.secretKeyRef" in line
        assert wrong not in line
        assert took < NOT_RETRIED_WITHIN

    def test_without_a_header_a_401_says_a_credential_is_wanted(
        self, token_site: TokenSite, tmp_path: Path
    ) -> None:
        result, _ = fetch_model(
            f"{token_site.url}/model.onnx", tmp_path / "m.onnx", aws_isolated_env()
        )
        assert result.returncode == 1
        assert "the server wants a credential (spec.model.auth.header)" in only_error_line(result)

    def test_an_empty_secret_value_is_named_not_sent(
        self, token_site: TokenSite, tmp_path: Path
    ) -> None:
        result, _ = fetch_model(
            f"{token_site.url}/model.onnx", tmp_path / "m.onnx", header_env("\n")
        )
        assert result.returncode == 1
        assert "the Authorization header has no value" in only_error_line(result)
        assert token_site.site.seen == []

    def test_a_value_with_a_line_break_is_refused_without_showing_it(
        self, token_site: TokenSite, tmp_path: Path
    ) -> None:
        access = StoreAccess(header_name="Authorization", header_value="abc\r\nX-Injected: 1")
        with pytest.raises(FetchError, match="line break") as raised:
            fetch(f"{token_site.url}/model.onnx", tmp_path / "m.onnx", access=access, log=print)
        assert "abc" not in str(raised.value)
        assert "X-Injected" not in str(raised.value)

    def test_the_header_follows_a_redirect_on_the_same_origin_only(
        self, token_site: TokenSite, tmp_path: Path
    ) -> None:
        access = StoreAccess(
            header_name="Authorization", header_prefix="Bearer ", header_value=TOKEN
        )
        fetch(
            f"{token_site.url}/same-origin", tmp_path / "a.onnx", access=access, log=lambda m: None
        )
        assert token_site.site.seen == [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]
        fetch(f"{token_site.url}/elsewhere", tmp_path / "b.onnx", access=access, log=lambda m: None)
        assert token_site.other.seen == [None]
        assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
