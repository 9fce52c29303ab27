"""`weir run` with models behind credentials: a private bucket of a real S3-compatible server
(moto, IAM enforced, on 127.0.0.1), keys read from `--secrets-dir` as Kubernetes mounts
Secrets (DIR/<secret>/<key>).

A wrong key or a missing secret file is a condition on the ModelDeployment that names the
bucket or the file; the stable keeps serving, and the fetch is retried with backoff, never in a
hot loop."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.local_run import (
    LocalRun,
    Traffic,
    infer_body,
    iris_row,
    manifest,
    write_manifests,
)
from tests.support.s3 import REGION, MotoS3, aws_isolated_env, moto_s3, write_secret

FETCH_FAILED_LINE = "cannot fetch the model"


@pytest.fixture(scope="module")
def s3(
    iris_versions: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MotoS3]:
    with moto_s3(iris_versions["iris_v2"], tmp_path_factory.mktemp("moto")) as server:
        yield server


@dataclass
class Run:
    weir: LocalRun
    secrets: Path


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """`weir run --secrets-dir tmp_path/secrets` on tmp_path/manifests, with no AWS
    configuration of this machine in reach; stopped, with its servers, at the end."""
    (tmp_path / "manifests").mkdir()
    secrets = tmp_path / "secrets"
    weir = LocalRun(
        tmp_path / "manifests",
        tmp_path / "state",
        env=aws_isolated_env(),
        args=["--secrets-dir", str(secrets)],
    )
    try:
        yield Run(weir, secrets)
    finally:
        code = weir.stop()
        assert not weir.orphans(), "server processes outlived weir run"
        assert code == 0, f"weir run exited with {code}:\n{weir.log()}"


def in_bucket(s3: MotoS3, version: str, secret: str) -> dict[str, Any]:
    """The ModelDeployment `iris` on the bucket's model, with keys from Secret `secret`."""
    document = manifest("iris", Path("/unused"), version)
    document["spec"]["model"] = {
        "uri": s3.uri(),
        "sha256": s3.model_sha256,
        "version": version,
        "auth": {"secretRef": {"name": secret}},
        "s3": {"endpoint": s3.endpoint, "region": REGION},
    }
    return document


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def infer(run: LocalRun) -> int:
    body = infer_body(iris_row(random.Random(0)))
    return httpx.post(f"{run.router_url}/v2/models/iris/infer", json=body, timeout=10).status_code


class TestAModelInAPrivateBucket:
    def test_it_is_fetched_with_keys_from_the_secrets_dir_and_served(
        self, run: Run, s3: MotoS3
    ) -> None:
        write_secret(run.secrets, "models-reader", s3.reader.secret_data())
        write_manifests(run.weir.folder, in_bucket(s3, "1", "models-reader"))
        run.weir.wait_up()
        status = run.weir.wait_healthy("iris", "1")
        assert status["stable"]["uri"] == s3.uri()
        assert infer(run.weir) == 200
        assert s3.reader.secret_access_key not in run.weir.log()

    def test_a_missing_secret_file_is_a_condition_retried_with_backoff_until_written(
        self, run: Run, s3: MotoS3
    ) -> None:
        write_manifests(run.weir.folder, in_bucket(s3, "1", "written-later"))
        run.weir.wait_up()

        def stuck() -> dict[str, Any] | None:
            ready = condition(run.weir.status("iris"), "Ready")
            return ready if ready.get("reason") == "CreateContainerConfigError" else None

        ready = run.weir.eventually(stuck, within=30, what="a condition for the missing file")
        assert ready is not None
        missing = run.secrets / "written-later" / "AWS_ACCESS_KEY_ID"
        assert f"no file {missing}" in ready["message"]
        assert "--secrets-dir" in ready["message"]
        assert "\n" not in ready["message"]
        # Backoff (2, 4 s ...), not a try every tick (0.25 s): at most 3 tries in 5 s.
        time.sleep(5)
        assert run.weir.log().count(FETCH_FAILED_LINE) <= 3, run.weir.log()
        # Written, the file is read at once, not after the backoff.
        write_secret(run.secrets, "written-later", s3.reader.secret_data())
        run.weir.wait_healthy("iris", "1", within=30)
        assert infer(run.weir) == 200


class TestWrongCredentials:
    def test_a_wrong_key_is_a_condition_naming_the_bucket_and_the_stable_keeps_serving(
        self, run: Run, s3: MotoS3, iris_versions: dict[str, Path]
    ) -> None:
        write_manifests(run.weir.folder, manifest("iris", iris_versions["iris"], "1"))
        run.weir.wait_up()
        run.weir.wait_healthy("iris", "1")
        write_secret(run.secrets, "models-wrong", s3.wrong_secret.secret_data())
        traffic = Traffic(run.weir.router_url, threads=2, pause=0.02).start()
        try:
            write_manifests(run.weir.folder, in_bucket(s3, "2", "models-wrong"))

            def rolled_back() -> dict[str, Any] | None:
                status = run.weir.status("iris")
                history = status.get("history") or []
                return status if history and history[0]["version"] == "2" else None

            status = run.weir.eventually(rolled_back, within=60, what="version 2 rolled back")
            time.sleep(1)
        finally:
            counts = traffic.stop()
        assert status is not None
        assert status["history"][0]["outcome"] == "Failed"
        rolled = condition(status, "RolledBack")
        assert rolled["reason"] == "ModelFetchFailed", rolled
        assert s3.uri() in rolled["message"], rolled
        assert "SignatureDoesNotMatch" in rolled["message"], rolled
        assert str(run.secrets / "models-wrong") in rolled["message"], rolled
        assert status["stable"]["version"] == "1"
        assert traffic.failures() == 0, counts
        assert infer(run.weir) == 200
        assert s3.wrong_secret.secret_access_key not in run.weir.log()
        assert s3.wrong_secret.secret_access_key not in str(status)
