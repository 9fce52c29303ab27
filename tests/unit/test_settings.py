"""Server settings: threads follow the pod's CPU limit; settings survive the trip to workers."""

from __future__ import annotations

from pathlib import Path

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
