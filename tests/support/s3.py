"""A real S3-compatible server for the tests: moto's standalone server (`python -m moto.server`)
in a child process on 127.0.0.1, with IAM authentication enforced, so that wrong keys, denied
objects and missing buckets answer as S3 answers them, signatures checked.

`moto_s3(model)` starts it, creates what the tests need (below) and stops it at the end; it
waits at most STARTUP_SECONDS for the server to answer. Setup runs before authentication is
turned on (moto's /moto-api/reset-auth with 0: from then on every request is authenticated
and authorized against IAM), and the fixture checks that an unknown key is refused.

What is in it (`MotoS3`):
- bucket `weir-models` with the model at `iris/model.onnx` and a copy at `private/model.onnx`;
- user `weir-reader` (`reader`): s3:GetObject on `weir-models/*` and on `weir-missing/*` (a
  bucket that is never created, so that a missing bucket answers NoSuchBucket rather than
  AccessDenied), with an explicit Deny on `weir-models/private/*`;
- `wrong_secret` (the reader's key ID with another secret) and `unknown_key` (an ID moto never
  issued); `admin` (s3:* on everything) to put more objects once authentication is on.

Secrets for the shells: `secret_manifest` (a Kubernetes Secret, for the control-plane tier),
`write_secret` (the DIR/<name>/<key> files `weir run --secrets-dir DIR` reads), and
`aws_env` (the environment `weir fetch-model` gets in a pod, isolated from this machine's own
AWS configuration and from any instance metadata service)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped,unused-ignore]
import httpx
from botocore.config import Config  # type: ignore[import-untyped,unused-ignore]

from tests.support.processes import free_port, start_logged

STARTUP_SECONDS = 20.0
REGION = "us-east-1"
BUCKET = "weir-models"
MODEL_KEY = "iris/model.onnx"
DENIED_KEY = "private/model.onnx"
MISSING_BUCKET = "weir-missing"


@dataclass(frozen=True)
class AwsKey:
    access_key_id: str
    secret_access_key: str = field(repr=False)

    def secret_data(self) -> dict[str, str]:
        """The keys of a spec.model.auth.secretRef Secret."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


@dataclass
class MotoS3:
    endpoint: str  # http://127.0.0.1:PORT
    log_path: Path
    reader: AwsKey
    wrong_secret: AwsKey
    unknown_key: AwsKey
    admin: AwsKey
    model_sha256: str
    bucket: str = BUCKET
    model_key: str = MODEL_KEY
    denied_key: str = DENIED_KEY
    missing_bucket: str = MISSING_BUCKET

    def uri(self, key: str = MODEL_KEY, bucket: str = BUCKET) -> str:
        return f"s3://{bucket}/{key}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, key: AwsKey) -> Any:
        return _client(self.endpoint, key)

    def put(self, key: str, body: bytes) -> str:
        """Store an object (as admin); returns its sha256."""
        self.client(self.admin).put_object(Bucket=self.bucket, Key=key, Body=body)
        return hashlib.sha256(body).hexdigest()

    def aws_env(
        self, key: AwsKey | None, base: Mapping[str, str] | None = None, **extra: str
    ) -> dict[str, str]:
        """The environment of a `weir fetch-model` in a pod: `key` as the Secret's values
        (None: no credentials at all), the endpoint and region as spec.model.s3 sets them."""
        env = aws_isolated_env(base)
        env.update({"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_REGION": REGION})
        if key is not None:
            env.update(key.secret_data())
        env.update(extra)
        return env


def aws_isolated_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) without any AWS_* variable, with no credentials or config
    file and no instance metadata lookup: nothing but what a test gives reaches boto3."""
    env = {k: v for k, v in (os.environ if base is None else base).items()}
    for name in list(env):
        if name.startswith("AWS_"):
            del env[name]
    env.update(
        {
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    return env


def secret_manifest(name: str, key: AwsKey, namespace: str | None = None) -> dict[str, Any]:
    """A Kubernetes Secret holding `key`, for spec.model.auth.secretRef."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "stringData": key.secret_data(),
    }


def write_secret(folder: Path, name: str, data: Mapping[str, str]) -> Path:
    """The Secret `name` as Kubernetes mounts it: folder/name/<key>, one file per key (0600,
    each ending with a newline, as `echo` writes them)."""
    secret = folder / name
    secret.mkdir(parents=True, exist_ok=True)
    for key, value in data.items():
        path = secret / key
        path.write_text(value + "\n")
        path.chmod(0o600)
    return secret


def _client(endpoint: str, key: AwsKey, service: str = "s3") -> Any:
    return boto3.session.Session(
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=key.secret_access_key,
        region_name=REGION,
    ).client(
        service,
        endpoint_url=endpoint,
        config=Config(
            connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 1}, s3=_PATH_STYLE
        ),
    )


_PATH_STYLE = {"addressing_style": "path"}


def _wait_until_up(process: subprocess.Popen[bytes], endpoint: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"moto server exited with {process.returncode}:\n"
                f"{log_path.read_text(errors='replace')}"
            )
        try:
            httpx.get(f"{endpoint}/moto-api/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(
        f"moto server not up within {STARTUP_SECONDS:.0f} s:\n{log_path.read_text(errors='replace')}"
    )


def _user(iam: Any, name: str, statements: list[dict[str, Any]]) -> AwsKey:
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": statements}
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-s3", PolicyDocument=json.dumps(policy))
    created = iam.create_access_key(UserName=name)["AccessKey"]
    return AwsKey(created["AccessKeyId"], created["SecretAccessKey"])


def _setup(endpoint: str, model: bytes) -> dict[str, AwsKey]:
    """Everything the tests read, made while moto does not authenticate yet."""
    bootstrap = AwsKey("bootstrap", "bootstrap")
    s3, iam = _client(endpoint, bootstrap), _client(endpoint, bootstrap, "iam")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=model)
    s3.put_object(Bucket=BUCKET, Key=DENIED_KEY, Body=model)
    reader = _user(
        iam,
        "weir-reader",
        [
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [f"arn:aws:s3:::{BUCKET}/*", f"arn:aws:s3:::{MISSING_BUCKET}/*"],
            },
            {
                "Effect": "Deny",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/private/*",
            },
        ],
    )
    admin = _user(iam, "weir-admin", [{"Effect": "Allow", "Action": "*", "Resource": "*"}])
    return {"reader": reader, "admin": admin}


def _enforce_authentication(endpoint: str, unknown: AwsKey) -> None:
    response = httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0", timeout=5)
    response.raise_for_status()
    try:
        _client(endpoint, unknown).get_object(Bucket=BUCKET, Key=MODEL_KEY)
    except Exception as error:  # botocore's ClientError
        if "InvalidAccessKeyId" not in str(error):
            raise
    else:
        raise RuntimeError("moto answered an unknown access key: IAM is not enforced")


@contextmanager
def moto_s3(model: Path, folder: Path) -> Iterator[MotoS3]:
    """moto's S3 with IAM on 127.0.0.1, holding `model`; its log goes into `folder`. Stopped
    (SIGTERM, then SIGKILL) when the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = folder / "moto.log"
    env = aws_isolated_env()
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)  # setup first, then reset-auth to 0
    process = start_logged(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log_path, env
    )
    try:
        _wait_until_up(process, endpoint, log_path)
        body = model.read_bytes()
        keys = _setup(endpoint, body)
        unknown = AwsKey("AKIAWEIRUNKNOWNKEY00", "not-a-secret-moto-knows-0000000000000000")
        _enforce_authentication(endpoint, unknown)
        yield MotoS3(
            endpoint=endpoint,
            log_path=log_path,
            reader=keys["reader"],
            wrong_secret=AwsKey(keys["reader"].access_key_id, "wrong" + "0" * 35),
            unknown_key=unknown,
            admin=keys["admin"],
            model_sha256=hashlib.sha256(body).hexdigest(),
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
