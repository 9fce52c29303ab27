"""Model monitoring in `weir serve --reference FILE` (docs/monitoring.md §2, weir_server/monitor.py):
real server processes count every row they answer, in the bins of the reference, with the
usual labels; every bin's series is there at 0 from the start next to the reference's shares;
a scrape sees every row answered before it, with one worker or several; a reference made for
another model is served with one warning and exported as weir_drift_reference_model_match 0;
one that does not fit the model is refused at start with one line. Also `weir fetch-model
--reference-uri`."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.server.test_profile import codes_model
from tests.support.processes import ServerProcess, running_server, start_server
from weir_server import exit_codes, monitor, sample_models
from weir_server.digests import file_sha256
from weir_server.model import LoadedModel
from weir_server.profile import Options, Table, profile
from weir_server.reference import (
    OTHER,
    Reference,
    categorical_bins,
    load_reference,
    numeric_bins,
    top1,
    write_reference,
)

LABELS = {"model": "iris", "version": "7", "revision": "r1", "track": "canary"}
ENV = {"WEIR_REVISION": "r1", "WEIR_TRACK": "canary"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: ServerProcess) -> Samples:
    text = httpx.get(f"{server.url}/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def drift(found: Samples) -> Samples:
    return {key: v for key, v in found.items() if key[0].startswith("weir_drift_")}


def value(found: Samples, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls)


def run_iris(model: Path, rows: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input": rows}), strict=True))


def expected_counts(reference: Reference, model: Path, rows: np.ndarray) -> Samples:
    """Every drift counter's value after serving `rows` (each row's bins, computed here)."""
    answers = run_iris(model, rows)
    counts: Samples = {("weir_drift_rows_total", frozenset()): float(len(rows))}

    for j, feature in enumerate(reference.features):
        bins = numeric_bins(feature.edges, rows[:, j])
        for index, label in enumerate(feature.bins()):
            key = frozenset({"feature": feature.name, "bin": label}.items())
            counts[("weir_drift_feature_rows_total", key)] = float((bins == index).sum())
    for output in reference.outputs:
        if output.confidence is not None:
            classes = answers[output.name].argmax(axis=1)
            for label in output.bins():
                key = frozenset({"output": output.name, "class": label}.items())
                counts[("weir_drift_prediction_rows_total", key)] = float(
                    (classes == int(label)).sum()
                )
            confidence = top1(answers[output.name])
            bins = numeric_bins(output.confidence.edges, confidence)
            for index, label in enumerate(output.confidence.bins()):
                key = frozenset({"output": output.name, "bin": label}.items())
                counts[("weir_drift_confidence_rows_total", key)] = float((bins == index).sum())
            sum_key = frozenset({"output": output.name}.items())
            counts[("weir_drift_confidence_sum_total", sum_key)] = float(confidence.sum())
        else:
            bins = categorical_bins(output.classes, answers[output.name])
            for index, label in enumerate(output.bins()):
                key = frozenset({"output": output.name, "class": label}.items())
                counts[("weir_drift_prediction_rows_total", key)] = float((bins == index).sum())
    return counts


def assert_counts(found: Samples, expected: Samples) -> None:
    for (name, labels), want in expected.items():
        got = value(found, name, **dict(labels))
        if name == "weir_drift_confidence_sum_total":
            assert got == pytest.approx(want, rel=1e-6), (name, dict(labels))
        else:
            assert got == want, (name, dict(labels), got, want)


def counted(server: ServerProcess, rows: int) -> Samples:
    """The server's metrics once it has counted `rows` rows; other workers flush within
    monitor.FLUSH_SECONDS, so a scrape may come before their rows (10 s at most)."""
    deadline = time.monotonic() + 10
    while value(found := scrape(server), "weir_drift_rows_total") < rows:
        assert time.monotonic() < deadline, f"{rows} rows were never all counted"
        time.sleep(0.2)
    return found


def infer_json(server: ServerProcess, rows: np.ndarray, outputs: list[str] | None = None) -> None:
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    if outputs is not None:
        body["outputs"] = [{"name": name} for name in outputs]
    response = httpx.post(f"{server.url}/v2/models/iris/infer", json=body)
    assert response.status_code == 200, response.text


def infer_binary(server: ServerProcess, rows: np.ndarray) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ]
        }
    ).encode()
    response = httpx.post(
        f"{server.url}/v2/models/iris/infer",
        content=header + rows.astype("<f4").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text


def traffic(count: int, seed: int) -> np.ndarray:
    """Rows spread wider than the training data, so that every class, confidence bin and the
    open-ended first and last feature bins are hit."""
    rng = np.random.default_rng(seed)
    mean = np.asarray(sample_models.IRIS_FEATURE_MEAN)
    std = np.asarray(sample_models.IRIS_FEATURE_STD)
    return (rng.standard_normal((count, 4)) * std * 4 + mean).astype(np.float32)


@pytest.fixture(scope="module")
def reference_file(iris_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reference") / "iris.reference.json"
    data = sample_models.iris_training_data(2_000, seed=11)
    write_reference(profile(iris_model, Table.from_array(data, "train")), path)
    return path


@pytest.fixture(scope="module")
def reference(reference_file: Path) -> Reference:
    return load_reference(reference_file)


@pytest.fixture(scope="module")
def monitored(iris_model: Path, reference_file: Path) -> Iterator[ServerProcess]:
    args = ("--name", "iris", "--version", "7", "--reference", str(reference_file))
    with running_server(iris_model, *args, env=ENV) as server:
        yield server


class TestAtStart:
    def test_every_bin_exists_at_0_next_to_the_references_share(
        self, iris_model: Path, reference_file: Path, reference: Reference
    ) -> None:
        args = ("--name", "iris", "--version", "7", "--reference", str(reference_file))
        with running_server(iris_model, *args, env=ENV) as server:
            found = drift(scrape(server))
        assert value(found, "weir_drift_rows_total", **LABELS) == 0
        for feature in reference.features:
            for label, share in zip(feature.bins(), feature.shares, strict=True):
                bin_labels = {**LABELS, "feature": feature.name, "bin": label}
                assert ("weir_drift_feature_rows_total", frozenset(bin_labels.items())) in found, (
                    bin_labels
                )
                assert value(found, "weir_drift_feature_rows_total", **bin_labels) == 0
                assert value(found, "weir_drift_feature_reference_share", **bin_labels) == share
        for output in reference.outputs:
            for label, share in zip(output.bins(), output.shares, strict=True):
                class_labels = {**LABELS, "output": output.name, "class": label}
                key = ("weir_drift_prediction_rows_total", frozenset(class_labels.items()))
                assert found[key] == 0
                assert (
                    value(found, "weir_drift_prediction_reference_share", **class_labels) == share
                )
            if output.confidence is None:
                continue
            for label, share in zip(
                output.confidence.bins(), output.confidence.shares, strict=True
            ):
                bin_labels = {**LABELS, "output": output.name, "bin": label}
                key = ("weir_drift_confidence_rows_total", frozenset(bin_labels.items()))
                assert found[key] == 0
                assert value(found, "weir_drift_confidence_reference_share", **bin_labels) == share
            output_labels = {**LABELS, "output": output.name}
            assert found[("weir_drift_confidence_sum_total", frozenset(output_labels.items()))] == 0
            mean = value(found, "weir_drift_confidence_reference_mean", **output_labels)
            assert mean == output.confidence.mean
        info = {**LABELS, "sha256": file_sha256(reference_file)}
        assert found[("weir_drift_reference_info", frozenset(info.items()))] == 1
        assert found[("weir_drift_reference_model_match", frozenset(LABELS.items()))] == 1
        # and nothing else: the label output has its "other" class, probabilities none
        bins = sum(len(f.shares) for f in reference.features)
        assert len([k for k in found if k[0] == "weir_drift_feature_rows_total"]) == bins

    def test_without_a_reference_there_are_no_drift_series(self, iris_model: Path) -> None:
        with running_server(iris_model, "--name", "iris") as server:
            assert not drift(scrape(server))


class TestEveryRowAnswered:
    def test_is_counted_in_its_bins_once_whatever_the_request_carried(
        self, monitored: ServerProcess, iris_model: Path, reference: Reference
    ) -> None:
        before = drift(scrape(monitored))
        rows = traffic(24, seed=1)
        for row in rows[:5]:  # one row per request, JSON
            infer_json(monitored, row.reshape(1, 4))
        infer_json(monitored, rows[5:13])  # a batch of 8 rows in one request
        infer_binary(monitored, rows[13:16])  # 3 rows, binary tensor data
        infer_binary(monitored, rows[16:17])
        infer_json(monitored, rows[17:24])
        bad = httpx.post(f"{monitored.url}/v2/models/iris/infer", content=b"{")  # not counted
        assert bad.status_code == 400
        after = drift(scrape(monitored))
        delta = {key: after[key] - before.get(key, 0.0) for key in after}
        assert_counts(delta, expected_counts(reference, iris_model, rows))
        assert drift(scrape(monitored)) == after, "a second scrape counts nothing again"

    def test_is_counted_with_the_usual_labels(self, monitored: ServerProcess) -> None:
        infer_json(monitored, traffic(1, seed=2))
        found = drift(scrape(monitored))
        assert all(set(LABELS.items()) <= labels for _, labels in found)

    def test_counts_only_the_outputs_a_request_asked_for(
        self, monitored: ServerProcess, iris_model: Path
    ) -> None:
        rows = traffic(6, seed=3)
        before = drift(scrape(monitored))
        infer_json(monitored, rows, outputs=["label"])
        after = drift(scrape(monitored))
        assert value(after, "weir_drift_rows_total") - value(before, "weir_drift_rows_total") == 6
        labels = run_iris(iris_model, rows)["label"]

        def added(name: str, **labels_: str) -> float:
            return value(after, name, **labels_) - value(before, name, **labels_)

        assert added("weir_drift_prediction_rows_total", output="label") == 6
        assert added("weir_drift_prediction_rows_total", output="probabilities") == 0
        assert added("weir_drift_confidence_rows_total") == 0
        assert added("weir_drift_feature_rows_total", feature="input[0]") == 6
        assert labels.shape == (6,)


class TestDynamicBatching:
    def test_every_row_of_concurrent_requests_is_counted(
        self, iris_model: Path, reference_file: Path, reference: Reference
    ) -> None:
        rows = traffic(64, seed=4)
        args = ("--name", "iris", "--version", "7", "--reference", str(reference_file))
        batching = ("--max-batch-size", "16", "--max-batch-delay-ms", "5")
        with running_server(iris_model, *args, *batching, env=ENV) as server:
            threads = [
                threading.Thread(target=infer_json, args=(server, rows[i : i + 4]))
                for i in range(0, 64, 4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            found = drift(scrape(server))
            batches = value(scrape(server), "weir_inference_batch_size_count")
        assert_counts(found, expected_counts(reference, iris_model, rows))
        assert batches <= 16


class TestSeveralWorkers:
    def test_every_row_is_counted_once_and_the_shares_are_not_summed(
        self, iris_model: Path, reference_file: Path, reference: Reference
    ) -> None:
        rows = traffic(40, seed=5)
        args = ("--name", "iris", "--version", "7", "--reference", str(reference_file))
        with running_server(iris_model, *args, "--workers", "2", "--no-access-log", env=ENV) as s:
            at_start = drift(scrape(s))
            for i in range(0, 40, 2):  # a new connection each time: both workers answer
                infer_json(s, rows[i : i + 2])
            found = drift(counted(s, 40))
            assert s.log().count("monitoring against reference") == 2
        features = [k for k in at_start if k[0] == "weir_drift_feature_rows_total"]
        assert len(features) == sum(len(f.shares) for f in reference.features)
        assert all(at_start[k] == 0 for k in features), "every bin at 0 from the start"
        assert_counts(found, expected_counts(reference, iris_model, rows))
        feature = reference.features[0]
        share = value(found, "weir_drift_feature_reference_share", feature=feature.name, bin="0")
        assert share == feature.shares[0]
        assert value(found, "weir_drift_reference_info") == 1


def serve_exit(model: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """A server that must not start: its exit code and its output."""
    server = start_server(model, "--name", "iris", *args, env=env)
    try:
        code = server.process.wait(timeout=60)
    finally:
        server.stop()
    return code, server.log()


class TestAReferenceForAnotherModel:
    @pytest.mark.parametrize("workers", ["1", "2"])
    def test_is_served_and_counted_with_one_warning_a_worker_and_a_0_match(
        self, iris_model: Path, tmp_path: Path, workers: str
    ) -> None:
        other = sample_models.BUILDERS["iris_v2"](tmp_path / "iris_v2.onnx")
        path = tmp_path / "v2.reference.json"
        write_reference(profile(other, Table.from_array(traffic(100, 6), "t")), path)
        args = ("--name", "iris", "--version", "7", "--reference", str(path), "--workers", workers)
        with running_server(iris_model, *args, "--no-access-log", env=ENV) as server:
            for i in range(0, 20, 2):  # a new connection each time: every worker answers
                infer_json(server, traffic(2, i))
            found = counted(server, 20)
            assert found[("weir_drift_reference_model_match", frozenset(LABELS.items()))] == 0
            warnings = [line for line in server.log().splitlines() if "made for the model" in line]
        assert 1 <= len(warnings) <= int(workers), warnings
        assert "Traceback" not in server.log()
        assert file_sha256(other) in warnings[0]
        assert file_sha256(iris_model) in warnings[0]
        assert "counting anyway" in warnings[0]


class TestARefusedReference:
    def test_that_is_no_reference_is_one_line_naming_the_field(
        self, iris_model: Path, tmp_path: Path, reference_file: Path
    ) -> None:
        document = json.loads(reference_file.read_text())
        document["features"][0]["shares"] = [1.0]
        path = tmp_path / "broken.json"
        path.write_text(json.dumps(document))
        code, output = serve_exit(iris_model, "--reference", str(path))
        assert code == exit_codes.USAGE
        (line,) = output.splitlines()
        assert f"{path}: features[0].shares: must hold 10 shares" in line

    def test_whose_features_do_not_fit_the_model_stops_it_naming_the_feature(
        self, iris_model: Path, tmp_path: Path, reference_file: Path
    ) -> None:
        document = json.loads(reference_file.read_text())
        document["features"][0]["name"] = "input[9]"  # the right sha256, a column it lacks
        path = tmp_path / "wide.json"
        path.write_text(json.dumps(document))
        code, output = serve_exit(iris_model, "--reference", str(path))
        assert code == exit_codes.FAILED
        assert "Traceback" not in output
        last = output.splitlines()[-1]
        assert last.startswith("weir serve: error: reference ")
        assert (
            "feature 'input[9]' is column 9, but the model's input 'input' (FP32 [-1, 4])" in last
        )

    def test_a_missing_file_is_one_line(self, iris_model: Path, tmp_path: Path) -> None:
        code, output = serve_exit(iris_model, "--reference", str(tmp_path / "nope.json"))
        assert code == exit_codes.USAGE
        (line,) = output.splitlines()
        assert "reference file" in line
        assert "does not exist" in line


def test_the_reference_can_come_from_the_environment(
    iris_model: Path, reference_file: Path
) -> None:
    with running_server(
        iris_model, "--name", "iris", env={"WEIR_REFERENCE": str(reference_file)}
    ) as s:
        infer_json(s, traffic(3, seed=7))
        assert value(scrape(s), "weir_drift_rows_total") == 3


# -- the monitor in this process: cases a real server rarely meets -------------------------


@pytest.fixture(scope="module")
def codes(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, Path, Reference]:
    """A model with an INT64 [-1, 2] input (categorical features), logits and int labels."""
    folder = tmp_path_factory.mktemp("codes")
    path = codes_model(folder / "codes.onnx")
    data = np.stack([np.arange(300) % 3, np.arange(300) % 2], axis=1).astype(np.int64)
    reference_path = folder / "codes.reference.json"
    write_reference(
        profile(path, Table.from_array(data, "codes"), Options(bins=10)), reference_path
    )
    model = LoadedModel.load(path, intra_op_threads=1)
    return model, reference_path, load_reference(reference_path)


def in_process(
    model: LoadedModel, reference_path: Path
) -> tuple[monitor.Monitor, CollectorRegistry]:
    loaded, sha256 = monitor.load_checked(reference_path, model.signature, model.path)
    registry = CollectorRegistry()
    labels = ("codes", "", "", "")
    return monitor.Monitor(loaded, sha256, labels, registry, model.signature), registry


def exported(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class TestTheMonitorInProcess:
    def test_categories_it_never_saw_are_other(
        self, codes: tuple[LoadedModel, Path, Reference]
    ) -> None:
        model, path, reference = codes
        watcher, registry = in_process(model, path)
        rows = np.array([[0, 1], [2, 0], [9, 1], [-4, 7]], dtype=np.int64)
        watcher.record({"codes": rows}, model.run({"codes": rows}))
        found = exported(registry)
        first = {"feature": "codes[0]"}
        assert reference.features[0].categories == ("0", "1", "2")
        assert value(found, "weir_drift_feature_rows_total", **first, bin="0") == 1
        assert value(found, "weir_drift_feature_rows_total", **first, bin="2") == 1
        assert value(found, "weir_drift_feature_rows_total", **first, bin=OTHER) == 2
        second = {"feature": "codes[1]"}
        assert value(found, "weir_drift_feature_rows_total", **second, bin=OTHER) == 1
        labels = model.run({"codes": rows})["label"]
        known = set(reference.outputs[1].classes)
        unseen = sum(str(v) not in known for v in labels.tolist())
        assert (
            value(found, "weir_drift_prediction_rows_total", output="label", **{"class": OTHER})
            == unseen
        )

    def test_logits_confidence_is_the_softmax_top1(
        self, codes: tuple[LoadedModel, Path, Reference]
    ) -> None:
        model, path, _ = codes
        watcher, registry = in_process(model, path)
        rows = np.array([[1, 0], [0, 1], [2, 1]], dtype=np.int64)
        answers = model.run({"codes": rows})
        watcher.record({"codes": rows}, answers)
        logits = answers["logits"].astype(np.float64)
        softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        found = exported(registry)
        total = value(found, "weir_drift_confidence_sum_total", output="logits")
        assert total == pytest.approx(softmax.max(axis=1).sum(), rel=1e-6)

    def test_nan_features_count_the_row_but_no_bin(
        self, iris_model: Path, reference_file: Path
    ) -> None:
        model = LoadedModel.load(iris_model, intra_op_threads=1)
        watcher, registry = in_process(model, reference_file)
        rows = traffic(3, seed=8)
        rows[1, 2] = np.nan
        watcher.record({"input": rows}, model.run({"input": rows}))
        found = exported(registry)
        assert value(found, "weir_drift_rows_total") == 3
        assert value(found, "weir_drift_feature_rows_total", feature="input[2]") == 2
        assert value(found, "weir_drift_feature_rows_total", feature="input[1]") == 3

    def test_counts_a_full_buffer_without_a_scrape_and_keeps_it_bounded(
        self, iris_model: Path, reference_file: Path
    ) -> None:
        model = LoadedModel.load(iris_model, intra_op_threads=1)
        watcher, _ = in_process(model, reference_file)
        rows = traffic(2_000, seed=9)
        most = 0
        for i in range(2_000):
            row = rows[i : i + 1]
            watcher.record({"input": row}, model.run({"input": row}))
            most = max(most, len(watcher._inputs))
        assert most < monitor.FLUSH_WEIGHT // 2
        assert watcher.rows > 2_000 - monitor.FLUSH_WEIGHT // 2  # counted before any scrape
        watcher.flush()
        assert watcher.rows == 2_000
        assert int(watcher.counts[:10].sum()) == 2_000  # input[0]'s bins

    def test_a_failure_to_count_never_reaches_the_request_and_is_logged_once(
        self,
        iris_model: Path,
        reference_file: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        model = LoadedModel.load(iris_model, intra_op_threads=1)
        watcher, _ = in_process(model, reference_file)

        def broken(*args: Any) -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(watcher, "_count", broken)
        row = traffic(1, seed=10)
        with caplog.at_level(logging.ERROR, logger="weir.server"):
            for _ in range(3):
                watcher.record({"input": row}, model.run({"input": row}))
                watcher.flush()
        assert [r.message for r in caplog.records].count(
            "model monitoring could not count 1 requests"
        ) == 1
        assert watcher._inputs == []


class TestFetchModelWithItsReference:
    def weir(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "weir_operator.cli", "fetch-model", *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def test_writes_reference_json_next_to_the_model(
        self, iris_model: Path, reference_file: Path, tmp_path: Path
    ) -> None:
        dest = tmp_path / "models" / "model.onnx"
        result = self.weir(
            "--uri", f"file://{iris_model}", "--dest", str(dest),
            "--reference-uri", f"file://{reference_file}",
            "--reference-sha256", file_sha256(reference_file),
        )  # fmt: skip
        assert result.returncode == exit_codes.OK, result.stderr
        assert (tmp_path / "models" / "reference.json").read_bytes() == reference_file.read_bytes()

    def test_a_wrong_sha256_is_refused(
        self, iris_model: Path, reference_file: Path, tmp_path: Path
    ) -> None:
        result = self.weir(
            "--uri", f"file://{iris_model}", "--dest", str(tmp_path / "model.onnx"),
            "--reference-uri", f"file://{reference_file}", "--reference-sha256", "0" * 64,
        )  # fmt: skip
        assert result.returncode == exit_codes.FAILED
        assert f"but {'0' * 64} was expected" in result.stderr.splitlines()[-1]
        assert not (tmp_path / "reference.json").exists()

    def test_a_reference_for_another_model_is_kept_with_a_warning_naming_both(
        self, reference_file: Path, tmp_path: Path
    ) -> None:
        other = sample_models.BUILDERS["iris_v2"](tmp_path / "v2.onnx")
        result = self.weir(
            "--uri", f"file://{other}", "--dest", str(tmp_path / "m" / "model.onnx"),
            "--reference-uri", f"file://{reference_file}",
        )  # fmt: skip
        assert result.returncode == exit_codes.OK, result.stderr
        (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
        assert warning.startswith("fetch-model: warning: the reference from file://")
        assert file_sha256(other) in warning
        assert (tmp_path / "m" / "reference.json").read_bytes() == reference_file.read_bytes()

    def test_a_sha256_without_a_uri_is_a_usage_error(self, tmp_path: Path) -> None:
        result = self.weir(
            "--uri", "file:///nope", "--dest", str(tmp_path / "m.onnx"),
            "--reference-sha256", "a" * 64,
        )  # fmt: skip
        assert result.returncode == exit_codes.USAGE
        assert "--reference-sha256 needs --reference-uri" in result.stderr
