"""`weir serve` and `weir fetch-model` as a new user meets them: a bad value, a wrong path or a
model that cannot be served ends in one line on stderr that says what is wrong, no traceback,
and the exit code of weir_server/exit_codes.py (3 usage, 1 failed), before any work starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import free_port
from weir_server import exit_codes, sample_models


def weir(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weir_operator.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line of stderr, checked to be one line and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--port", "99999"], "--port must be from 1 to 65535, got 99999"),
        (["--port", "0"], "--port must be from 1 to 65535"),
        (
            ["--graceful-timeout", "-1"],
            "--graceful-timeout must be a number of seconds from 0 to 86400",
        ),
        (["--graceful-timeout", "nan"], "--graceful-timeout must be"),
        (["--max-batch-delay-ms", "-5"], "--max-batch-delay-ms must be a number of milliseconds"),
        (["--name", "bad name/x"], "model name 'bad name/x'"),
        (["--name=-iris"], "cannot be one URL path segment"),
        (["--sha256", "00"], "--sha256 must be 64 hexadecimal characters, got '00'"),
        (["--sha256", "g" * 64], "--sha256 must be 64 hexadecimal characters"),
        (["--workers", "0"], "--workers must be from 1 to 1024, got 0"),
        (["--intra-op-threads", "-1"], "--intra-op-threads must be from 0 to"),
        (["--max-batch-size", "-2"], "--max-batch-size must be from 0 to"),
        (["--max-request-bytes", "0"], "--max-request-bytes must be from 1 to"),
        (["--max-json-bytes", "0"], "--max-json-bytes must be from 1 to"),
        (["--max-connections", "0"], "--max-connections must be from 1 to"),
        (["--backlog", "0"], "--backlog must be from 1 to"),
        (
            ["--body-timeout", "0"],
            "--body-timeout must be a number of seconds more than 0, at most 86400",
        ),
        (["--keep-alive-timeout", "inf"], "--keep-alive-timeout must be"),
        (["--keep-alive-timeout", "1e30"], "--keep-alive-timeout must be"),
        (["--backlog", "100000000000"], "--backlog must be from 1 to 65535"),
    ],
)
def test_a_bad_option_value_is_one_line_and_exit_3(
    iris_model: Path, options: list[str], fragment: str
) -> None:
    result = weir("serve", str(iris_model), "--port", str(free_port()), *options)
    assert result.returncode == exit_codes.USAGE, result.stderr
    line = one_line(result)
    assert line.startswith("weir serve: error: ")
    assert fragment in line


def test_a_file_name_that_is_no_model_name_asks_for_name(tmp_path: Path) -> None:
    model = sample_models.iris(tmp_path / "my model.onnx")
    result = weir("serve", str(model), "--port", str(free_port()))
    assert result.returncode == exit_codes.USAGE
    assert "--name" in one_line(result)


def test_a_malformed_sha256_is_refused_before_the_file_is_read(tmp_path: Path) -> None:
    # 64 GiB of holes: hashing it would take minutes, so an answer in seconds proves the
    # value was checked first.
    huge = tmp_path / "huge.onnx"
    with huge.open("wb") as handle:
        handle.truncate(64 << 30)
    started = time.monotonic()
    result = weir("serve", str(huge), "--port", str(free_port()), "--sha256", "00")
    assert result.returncode == exit_codes.USAGE
    assert "64 hexadecimal characters" in one_line(result)
    assert time.monotonic() - started < 20


def test_a_directory_is_said_to_be_a_directory(tmp_path: Path) -> None:
    result = weir("serve", str(tmp_path), "--port", str(free_port()))
    assert result.returncode == exit_codes.USAGE
    line = one_line(result)
    assert "is a directory" in line
    assert "does not exist" not in line


def test_a_missing_model_file_is_exit_3(tmp_path: Path) -> None:
    result = weir("serve", str(tmp_path / "nope.onnx"), "--port", str(free_port()))
    assert result.returncode == exit_codes.USAGE
    assert "does not exist" in one_line(result)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_whose_warm_up_fails_says_it_can_never_be_served_and_exits_1(
    tmp_path: Path, workers: str
) -> None:
    model = sample_models.pairs_only(tmp_path / "pairs.onnx")
    result = weir("serve", str(model), "--port", str(free_port()), "--workers", workers)
    assert result.returncode == exit_codes.FAILED, result.stderr
    assert "Traceback" not in result.stderr
    # The server's own log lines are JSON on stderr; besides them, one line says why, and
    # nothing else (ONNX Runtime's own colored error dump included) reaches stderr.
    plain = [line for line in result.stderr.splitlines() if not _is_json(line)]
    assert len(plain) == 1, result.stderr
    assert plain[0].startswith("weir serve: error: ")
    assert "can never be served" in plain[0]
    assert "x [1, 3]" in plain[0]  # the request it tried, so the user can reproduce it


def _is_json(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


class TestFetchModel:
    def fetch(self, *args: str) -> subprocess.CompletedProcess[str]:
        return weir("fetch-model", *args)

    def test_to_an_existing_directory_is_one_line_and_exit_3(
        self, iris_model: Path, tmp_path: Path
    ) -> None:
        result = self.fetch("--uri", f"file://{iris_model}", "--dest", str(tmp_path))
        assert result.returncode == exit_codes.USAGE
        assert "is a directory" in one_line(result)

    def test_to_an_unwritable_path_is_one_line_and_exit_1(
        self, iris_model: Path, tmp_path: Path
    ) -> None:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        result = self.fetch(
            "--uri", f"file://{iris_model}", "--dest", str(blocker / "models" / "m.onnx")
        )
        assert result.returncode == exit_codes.FAILED
        assert "cannot create the folder" in one_line(result)

    def test_into_a_read_only_folder_is_one_line_and_exit_1(
        self, iris_model: Path, tmp_path: Path
    ) -> None:
        # Root may write into any folder of its own; no one may create files in /proc/1.
        read_only = Path("/proc/1") if os.geteuid() == 0 else tmp_path
        tmp_path.chmod(0o500)
        try:
            result = self.fetch("--uri", f"file://{iris_model}", "--dest", str(read_only / "m"))
        finally:
            tmp_path.chmod(0o700)
        assert result.returncode == exit_codes.FAILED
        assert "cannot write" in one_line(result)

    @pytest.mark.parametrize(
        ("options", "fragment"),
        [
            (["--attempts", "0"], "--attempts must be from 1 to 100, got 0"),
            (["--timeout", "-1"], "--timeout must be a number of seconds more than 0"),
            (["--timeout", "1e30"], "--timeout must be a number of seconds more than 0"),
            (["--sha256", "00"], "--sha256 must be 64 hexadecimal characters"),
        ],
    )
    def test_a_bad_option_value_is_one_line_and_exit_3(
        self, iris_model: Path, tmp_path: Path, options: list[str], fragment: str
    ) -> None:
        result = self.fetch(
            "--uri", f"file://{iris_model}", "--dest", str(tmp_path / "m.onnx"), *options
        )
        assert result.returncode == exit_codes.USAGE
        assert fragment in one_line(result)
        assert not (tmp_path / "m.onnx").exists()
