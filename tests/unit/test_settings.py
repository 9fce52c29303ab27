"""Server settings: threads follow the pod's CPU limit; settings survive the trip to workers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from weir_server.settings import ServerSettings, cpu_limit, default_intra_op_threads


@pytest.mark.parametrize(
    ("cpus", "workers", "threads"),
    [(2, 1, 1), (2, 2, 1), (0.5, 1, 1), (1, 1, 1), (8, 3, 1), (8, 2, 3), (4.0, 1, 3), (16, 1, 15)],
)
def test_threads_share_the_cpus_among_workers_less_a_core_each_and_never_drop_to_zero(
    cpus: float, workers: int, threads: int
) -> None:
    assert default_intra_op_threads(cpus, workers) == threads


def test_a_cgroup_v2_quota_limits_the_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cpu_limit(tmp_path) == pytest.approx(0.5)


def test_a_cgroup_v1_quota_limits_the_cpus(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_limit(tmp_path) == pytest.approx(1.0)


def test_without_a_quota_every_cpu_of_the_affinity_mask_counts(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    import os

    assert cpu_limit(tmp_path) == len(os.sched_getaffinity(0))


def test_settings_round_trip_through_json() -> None:
    settings = ServerSettings(
        model_path=Path("/m/iris.onnx"), model_name="iris", model_version="7", max_batch_size=8
    )
    assert ServerSettings.from_json(settings.to_json()) == settings


def test_new_settings_round_trip_through_json_too() -> None:
    settings = ServerSettings(
        model_path=Path("/m/iris.onnx"),
        model_name="iris",
        max_json_bytes=1000,
        backlog=4096,
        max_connections=10_000,
        body_timeout_seconds=5.5,
        keep_alive_timeout_seconds=75,
    )
    assert ServerSettings.from_json(settings.to_json()) == settings


def test_the_defaults_have_no_problem() -> None:
    assert ServerSettings(model_path=Path("/m/iris.onnx"), model_name="iris").problem() is None


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"model_name": "bad name/x"}, "cannot be one URL path segment"),
        ({"model_name": "a/b"}, "model name 'a/b'"),
        ({"model_name": "-x"}, "starting and ending with a letter or digit"),
        ({"model_name": "x" * 64}, "1-63"),
        ({"model_name": ""}, "model name ''"),
        ({"sha256": "00"}, "64 hexadecimal characters"),
        ({"sha256": "z" * 64}, "64 hexadecimal characters"),
        ({"port": 0}, "--port must be from 1 to 65535"),
        ({"port": 99999}, "got 99999"),
        ({"workers": 0}, "--workers must be from 1 to 1024"),
        ({"max_batch_delay_ms": -5.0}, "--max-batch-delay-ms must be a number of milliseconds"),
        ({"max_batch_delay_ms": math.nan}, "--max-batch-delay-ms"),
        ({"graceful_timeout_seconds": -1.0}, "--graceful-timeout must be"),
        ({"graceful_timeout_seconds": math.inf}, "--graceful-timeout must be"),
        (
            {"body_timeout_seconds": 0.0},
            "--body-timeout must be a number of seconds more than 0, at most 86400",
        ),
        ({"keep_alive_timeout_seconds": -2.0}, "--keep-alive-timeout"),
        ({"max_connections": 0}, "--max-connections must be from 1 to"),
        ({"backlog": -1}, "--backlog must be from 1 to"),
        ({"max_json_bytes": 0}, "--max-json-bytes must be from 1 to"),
        ({"backlog": 10**11}, "--backlog must be from 1 to 65535"),
        ({"keep_alive_timeout_seconds": 1e30}, "--keep-alive-timeout must be a number of sec"),
        ({"graceful_timeout_seconds": 1e300}, "from 0 to 86400"),
        ({"max_batch_delay_ms": 1e9}, "from 0 to 60000"),
        ({"intra_op_threads": 10**6}, "--intra-op-threads must be from 0 to 1024"),
    ],
)
def test_each_bad_value_is_named_in_one_line(changes: dict[str, Any], fragment: str) -> None:
    values: dict[str, Any] = {"model_path": Path("/m/iris.onnx"), "model_name": "iris"}
    problem = ServerSettings(**(values | changes)).problem()
    assert problem is not None
    assert fragment in problem
    assert "\n" not in problem


@pytest.mark.parametrize("name", ["iris", "iris-7", "a", "Model_v2.1", "x" * 63])
def test_names_usable_in_a_url_path_are_accepted(name: str) -> None:
    assert ServerSettings(model_path=Path("/m"), model_name=name).problem() is None


def test_the_json_limit_never_exceeds_the_body_limit() -> None:
    small = ServerSettings(model_path=Path("/m"), model_name="m", max_request_bytes=1000)
    assert small.json_limit == 1000
    assert ServerSettings(model_path=Path("/m"), model_name="m").json_limit == 4 * 1024 * 1024
