"""`weir profile MODEL.onnx --data FILE -o reference.json` (docs/monitoring.md §1,
weir_server/profile.py): what it writes for numeric and categorical features and for each kind
of output, that .npy, .csv (with or without a header) and .parquet give the same reference, and
that data it cannot use is refused with one line and exit code 3, never a traceback."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from weir_operator.cli import main
from weir_server import exit_codes, sample_models
from weir_server.digests import file_sha256
from weir_server.profile import Options, Table, profile
from weir_server.reference import OTHER, Reference, load_reference, numeric_bins, top1

# -- models built in code ---------------------------------------------------------------


def _save(graph: Any, path: Path) -> Path:
    from onnx import checker, helper, save

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    checker.check_model(model)
    save(model, str(path))
    return path


def codes_model(path: Path) -> Path:
    """`codes` INT64 [-1, 2] -> `logits` FP32 [-1, 3] (no softmax) and `label` INT64 [-1]."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.array([[1.0, -0.5, 0.2], [-0.3, 0.8, 0.1]], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["codes"], ["codes_f"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["codes_f", "W"], ["logits"]),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=-1, keepdims=0),
        ],
        "codes",
        [helper.make_tensor_value_info("codes", TensorProto.INT64, ["batch", 2])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    return _save(graph, path)


def tags_model(path: Path) -> Path:
    """`tag` STRING [-1] (a 1-D input) -> `tag_out` STRING [-1] (labels)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["tag"], ["tag_out"])],
        "tags",
        [helper.make_tensor_value_info("tag", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("tag_out", TensorProto.STRING, ["batch"])],
    )
    return _save(graph, path)


def grid_model(path: Path) -> Path:
    """`grid` FP32 [-1, 2, 2] (rank 3) -> `total` FP32 [-1]."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["grid", "axes"], ["total"], keepdims=0)],
        "grid",
        [helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["batch", 2, 2])],
        [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"])],
        initializer=[numpy_helper.from_array(np.array([1, 2], np.int64), "axes")],
    )
    return _save(graph, path)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("profile-models")
    return {
        "codes": codes_model(folder / "codes.onnx"),
        "tags": tags_model(folder / "tags.onnx"),
        "grid": grid_model(folder / "grid.onnx"),
    }


@pytest.fixture(scope="module")
def iris_data() -> np.ndarray:
    return sample_models.iris_training_data(2_000, seed=3)


def run_model(model: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def weir_profile(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """`weir profile ARGS` in this process: (exit code, stderr)."""
    code = main(["profile", *(str(a) for a in args)])
    return code, capsys.readouterr().err


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def write_csv(path: Path, rows: np.ndarray, header: list[str] | None = None) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        if header is not None:
            writer.writerow(header)
        writer.writerows([[repr(float(v)) for v in row] for row in rows])
    return path


# -- what a reference holds ---------------------------------------------------------------


class TestTheReference:
    def test_names_the_model_file_by_sha256_and_its_input(
        self, iris_model: Path, iris_data: np.ndarray, tmp_path: Path, capsys: Any
    ) -> None:
        np.save(tmp_path / "train.npy", iris_data)
        code, stderr = weir_profile(
            capsys, iris_model, "--data", tmp_path / "train.npy", "-o", tmp_path / "ref.json"
        )
        assert code == exit_codes.OK, stderr
        document = load_reference(tmp_path / "ref.json")
        assert document.schema_version == 1
        assert document.model.sha256 == file_sha256(iris_model)
        assert document.model.input == "input"
        assert document.rows == len(iris_data)
        assert [f.name for f in document.features] == [f"input[{j}]" for j in range(4)]
        assert "wrote" in stderr
        assert "4 features, 2 outputs, 2,000 rows" in stderr

    def test_is_what_make_models_writes_for_iris(self, tmp_path: Path) -> None:
        model = sample_models.iris(tmp_path / "iris.onnx")
        written = sample_models.build_iris_reference(tmp_path, model)
        reference = load_reference(written["iris.reference"])
        assert reference.model.sha256 == file_sha256(model)
        assert reference.rows == sample_models.IRIS_TRAINING_ROWS
        assert np.load(written["iris-train"]).shape == (sample_models.IRIS_TRAINING_ROWS, 4)


class TestNumericFeatures:
    def test_edges_are_the_deciles_and_each_bin_holds_a_tenth(self, iris_model: Path) -> None:
        data = sample_models.iris_training_data(10_000, seed=5)
        reference = profile(iris_model, Table.from_array(data, "train"))
        for j, feature in enumerate(reference.features):
            assert feature.kind == "numeric"
            deciles = np.quantile(data[:, j].astype(np.float64), np.arange(1, 10) / 10)
            assert feature.edges == pytest.approx(deciles, rel=1e-6)
            assert feature.shares == pytest.approx([0.1] * 10, abs=0.002)

    def test_shares_are_counted_with_the_servers_own_bins(self, iris_model: Path) -> None:
        data = sample_models.iris_training_data(1_000, seed=6)
        reference = profile(iris_model, Table.from_array(data, "train"))
        feature = reference.features[2]
        counts = np.bincount(numeric_bins(feature.edges, data[:, 2]), minlength=10)
        assert feature.shares == pytest.approx(tuple(counts / 1_000))

    def test_a_column_with_few_distinct_values_has_fewer_bins(self, iris_model: Path) -> None:
        data = sample_models.iris_training_data(1_000, seed=7)
        data[:, 1] = np.resize(np.array([2.0, 3.0, 4.0], np.float32), 1_000)
        reference = profile(iris_model, Table.from_array(data, "train"))
        feature = reference.features[1]
        assert feature.edges == (2.0, 3.0, 4.0)  # the deciles, deduplicated
        assert feature.shares == pytest.approx((0.0, 0.334, 0.333, 0.333))

    def test_bins_sets_how_many(self, iris_model: Path, iris_data: np.ndarray) -> None:
        reference = profile(iris_model, Table.from_array(iris_data, "train"), Options(bins=4))
        assert all(len(f.edges) == 3 and len(f.shares) == 4 for f in reference.features)

    def test_nan_is_counted_in_no_bin(self, iris_model: Path, iris_data: np.ndarray) -> None:
        data = iris_data.copy()
        data[::2, 0] = np.nan
        reference = profile(iris_model, Table.from_array(data, "train"))
        feature = reference.features[0]
        assert len(feature.edges) == 9
        assert feature.shares == pytest.approx([0.1] * 10, abs=0.002)


class TestCategoricalFeatures:
    def test_integers_keep_the_most_frequent_values_and_other(
        self, models: dict[str, Path], tmp_path: Path, capsys: Any
    ) -> None:
        # column 0: the values 0..11, value v appearing 10 + v times; column 1: 0 and 1
        column = np.concatenate([np.full(10 + v, v) for v in range(12)])
        data = np.stack([column, column % 2], axis=1).astype(np.int64)
        np.save(tmp_path / "codes.npy", data)
        code, stderr = weir_profile(
            capsys, models["codes"], "--data", tmp_path / "codes.npy", "-o", tmp_path / "r.json"
        )
        assert code == exit_codes.OK, stderr
        first, second = load_reference(tmp_path / "r.json").features
        assert first.kind == "categorical"
        assert first.categories == tuple(str(v) for v in range(2, 12))  # 0 and 1 are rarest
        total = len(column)
        expected = [(10 + v) / total for v in range(2, 12)] + [(10 + 11) / total]
        assert first.shares == pytest.approx(expected)
        assert first.bins()[-1] == OTHER
        assert second.categories == ("0", "1")
        assert second.shares[-1] == 0  # nothing else

    def test_text_in_a_csv_is_categorical(
        self, models: dict[str, Path], tmp_path: Path, capsys: Any
    ) -> None:
        data = tmp_path / "tags.csv"
        data.write_text("tag\n" + "red\n" * 6 + "blue\n" * 3 + "green\n")
        code, stderr = weir_profile(capsys, models["tags"], "--data", data, "-o", tmp_path / "r")
        assert code == exit_codes.OK, stderr
        reference = load_reference(tmp_path / "r")
        (feature,) = reference.features
        assert feature.name == "tag"  # a 1-D input is one feature, named after the input
        assert feature.categories == ("blue", "green", "red")
        assert feature.shares == pytest.approx((0.3, 0.1, 0.6, 0.0))
        (output,) = reference.outputs
        assert output.kind == "classes"
        assert output.confidence is None
        assert output.bins() == ("blue", "green", "red", OTHER)


class TestDataFiles:
    def test_npy_csv_with_and_without_header_and_parquet_give_one_reference(
        self, iris_model: Path, iris_data: np.ndarray, tmp_path: Path, capsys: Any
    ) -> None:
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        np.save(tmp_path / "train.npy", iris_data)
        write_csv(tmp_path / "plain.csv", iris_data)
        write_csv(tmp_path / "named.csv", iris_data, ["sepal_l", "sepal_w", "petal_l", "petal_w"])
        write_csv(tmp_path / "features.csv", iris_data, [f"input[{j}]" for j in range(4)])
        table = pa.table({f"c{j}": iris_data[:, j] for j in range(4)})
        pq.write_table(table, tmp_path / "train.parquet")
        references = {}
        for name in ("train.npy", "plain.csv", "named.csv", "features.csv", "train.parquet"):
            code, stderr = weir_profile(
                capsys, iris_model, "--data", tmp_path / name, "-o", tmp_path / f"{name}.json"
            )
            assert code == exit_codes.OK, f"{name}: {stderr}"
            references[name] = load_reference(tmp_path / f"{name}.json")
        assert all(r == references["train.npy"] for r in references.values())
        assert references["plain.csv"].rows == len(iris_data)  # no row taken for a header

    def test_a_first_row_of_text_over_text_is_data(
        self, models: dict[str, Path], tmp_path: Path
    ) -> None:
        # a header cannot be told from data in a text column: only a name over numbers is one
        path = tmp_path / "tags.csv"
        path.write_text("red\nblue\nred\n")
        reference = profile(models["tags"], path)
        assert reference.rows == 3

    def test_progress_is_reported_while_a_long_file_runs(
        self, iris_model: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import weir_server.profile as profile_module

        monkeypatch.setattr(profile_module, "PROGRESS_SECONDS", -1.0)
        lines: list[str] = []
        data = sample_models.iris_training_data(3_000, seed=1)
        profile(iris_model, Table.from_array(data, "train"), Options(batch=1_000), lines.append)
        assert lines[-1].startswith("3,000 of 3,000 rows")


class TestOutputs:
    def test_probabilities_give_class_shares_and_the_confidence_distribution(
        self, iris_model: Path, iris_data: np.ndarray
    ) -> None:
        reference = profile(iris_model, Table.from_array(iris_data, "train"))
        probabilities, label = reference.outputs
        answers = run_model(iris_model, {"input": iris_data})
        argmax = answers["probabilities"].argmax(axis=1)
        assert probabilities.classes == ("0", "1", "2")
        assert probabilities.shares == pytest.approx(np.bincount(argmax, minlength=3) / 2_000)
        confidence = probabilities.confidence
        assert confidence is not None
        assert confidence.edges == pytest.approx(np.arange(1, 10) / 10)
        top = answers["probabilities"].max(axis=1)
        assert confidence.mean == pytest.approx(float(top.mean()))
        assert confidence.shares == pytest.approx(
            np.bincount(numeric_bins(confidence.edges, top), minlength=10) / 2_000
        )
        assert label.kind == "classes"
        assert label.confidence is None
        assert label.has_other  # a label the training data never produced is "other"

    def test_logits_are_turned_into_probabilities_first(
        self, models: dict[str, Path], tmp_path: Path
    ) -> None:
        data = np.random.default_rng(2).integers(0, 5, size=(500, 2)).astype(np.int64)
        reference = profile(models["codes"], Table.from_array(data, "codes"))
        logits = run_model(models["codes"], {"codes": data})["logits"].astype(np.float64)
        softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        (scores,) = [o for o in reference.outputs if o.name == "logits"]
        assert scores.confidence is not None
        assert scores.confidence.mean == pytest.approx(float(softmax.max(axis=1).mean()))
        assert top1(logits) == pytest.approx(softmax.max(axis=1))

    def test_more_than_32_classes_keep_the_32_most_predicted_and_other(
        self, mlp_model: Path
    ) -> None:
        data = np.random.default_rng(4).standard_normal((3_000, 256)).astype(np.float32)
        reference = profile(mlp_model, Table.from_array(data, "mlp"), Options(max_features=2))
        (output,) = reference.outputs
        argmax = run_model(mlp_model, {"x": data})["y"].argmax(axis=1)
        counts = np.bincount(argmax, minlength=256)
        assert len(output.classes) == 32
        assert output.has_other
        kept = [int(c) for c in output.classes]
        assert set(kept) == set(sorted(range(256), key=lambda c: (-counts[c], c))[:32])
        assert output.shares[:32] == pytest.approx(counts[kept] / 3_000)
        assert sum(output.shares) == pytest.approx(1)
        assert [f.name for f in reference.features] == ["x[0]", "x[1]"]

    def test_one_number_per_row_is_binned_as_a_numeric_feature(
        self, gather_model: Path, iris_data: np.ndarray
    ) -> None:
        indices = np.random.default_rng(8).integers(0, 10, size=1_000).astype(np.int64)
        reference = profile(gather_model, Table.from_array(indices, "indices"))
        (output,) = reference.outputs
        assert output.kind == "numeric"
        values = indices * 1.5
        expected = np.quantile(values, np.arange(1, 10) / 10)
        assert output.edges == tuple(sorted(set(expected.tolist())))
        (feature,) = reference.features
        assert feature.name == "indices"
        assert feature.kind == "categorical"

    def test_an_input_of_rank_3_is_not_profiled_but_its_model_is_run(
        self, models: dict[str, Path], tmp_path: Path, capsys: Any
    ) -> None:
        np.save(tmp_path / "grid.npy", np.ones((50, 2, 2), np.float32))
        code, stderr = weir_profile(
            capsys, models["grid"], "--data", tmp_path / "grid.npy", "-o", tmp_path / "r"
        )
        assert code == exit_codes.OK, stderr
        reference = load_reference(tmp_path / "r")
        assert reference.features == ()
        assert [o.name for o in reference.outputs] == ["total"]
        assert (
            sum("rank 3: its features are not profiled" in line for line in stderr.splitlines())
            == 1
        )


class TestChoosingFeatures:
    def test_features_names_them(self, iris_model: Path, iris_data: np.ndarray) -> None:
        chosen = Options(features=("input[3]", "input[0]"))
        reference = profile(iris_model, Table.from_array(iris_data, "train"), chosen)
        assert [f.name for f in reference.features] == ["input[3]", "input[0]"]

    def test_max_features_keeps_the_first(self, iris_model: Path, iris_data: np.ndarray) -> None:
        reference = profile(iris_model, Table.from_array(iris_data, "t"), Options(max_features=2))
        assert [f.name for f in reference.features] == ["input[0]", "input[1]"]

    @pytest.mark.parametrize(
        ("features", "fragment"),
        [
            ("input[4]", "the model has no feature 'input[4]' (it has input[0] .. input[3])"),
            ("x[0]", "'x[0]' is not a feature of input 'input'"),
            ("input[1],input[1]", "names 'input[1]' twice"),
            (",", "--features names no feature"),
        ],
    )
    def test_a_feature_the_model_lacks_is_one_line(
        self,
        iris_model: Path,
        iris_data: np.ndarray,
        tmp_path: Path,
        capsys: Any,
        features: str,
        fragment: str,
    ) -> None:
        np.save(tmp_path / "t.npy", iris_data)
        code, stderr = weir_profile(
            capsys, iris_model, "--data", tmp_path / "t.npy", "-o", tmp_path / "r",
            "--features", features,
        )  # fmt: skip
        assert code == exit_codes.USAGE
        assert fragment in one_line(stderr)


# -- what it refuses -----------------------------------------------------------------------


def _bad_files(folder: Path, iris_data: np.ndarray) -> dict[str, Path]:
    files = {
        "narrow.csv": write_csv(folder / "narrow.csv", iris_data[:, :3]),
        "wide.npy": folder / "wide.npy",
        "text.csv": folder / "text.csv",
        "fractions.npy": folder / "fractions.npy",
        "empty.npy": folder / "empty.npy",
        "empty.csv": folder / "empty.csv",
        "header.csv": folder / "header.csv",
        "garbage.npy": folder / "garbage.npy",
        "data.txt": folder / "data.txt",
    }
    np.save(files["wide.npy"], np.zeros((5, 5), np.float32))
    files["text.csv"].write_text("1,2,3,4\n5,setosa,7,8\n")
    np.save(files["fractions.npy"], np.array([[1.5, 2.0]]))
    np.save(files["empty.npy"], np.zeros((0, 4), np.float32))
    files["empty.csv"].write_text("\n\n")
    files["header.csv"].write_text("input[0],input[1],input[2],input[3]\n")
    files["garbage.npy"].write_bytes(b"not an array at all")
    files["data.txt"].write_text("1,2,3,4\n")
    return files


REFUSALS = [
    (
        "iris",
        "narrow.csv",
        ["has 3 columns, but the model's input 'input' (float32, shape [-1, 4]) takes 4"],
    ),
    ("iris", "wide.npy", ["has 5 columns, but the model's input 'input'"]),
    (
        "iris",
        "text.csv",
        ["column 1 of", "holds text ('setosa'), which the model's float32 input cannot take"],
    ),
    ("codes", "fractions.npy", ["holds fractions; the model's input is int64"]),
    ("iris", "empty.npy", ["holds no rows"]),
    ("iris", "empty.csv", ["holds no rows"]),
    ("iris", "header.csv", ["holds a header row and no data"]),
    ("iris", "garbage.npy", ["is not a .npy array numpy can read"]),
    ("iris", "data.txt", ["give a .npy, .csv or .parquet file"]),
    ("iris", "missing.npy", ["does not exist"]),
]


class TestRefusedData:
    @pytest.mark.parametrize(("model", "data", "fragments"), REFUSALS)
    def test_is_one_line_and_exit_3(
        self,
        iris_model: Path,
        models: dict[str, Path],
        iris_data: np.ndarray,
        tmp_path: Path,
        capsys: Any,
        model: str,
        data: str,
        fragments: list[str],
    ) -> None:
        _bad_files(tmp_path, iris_data)
        path = iris_model if model == "iris" else models[model]
        code, stderr = weir_profile(capsys, path, "--data", tmp_path / data, "-o", tmp_path / "r")
        assert code == exit_codes.USAGE
        line = one_line(stderr)
        assert line.startswith("weir profile: error: ")
        for fragment in fragments:
            assert fragment in line
        assert not (tmp_path / "r").exists()

    def test_parquet_without_pyarrow_says_to_install_it(
        self, iris_model: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "train.parquet").write_bytes(b"PAR1")
        monkeypatch.setitem(sys.modules, "pyarrow", None)
        monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
        code, stderr = weir_profile(
            capsys, iris_model, "--data", tmp_path / "train.parquet", "-o", tmp_path / "r"
        )
        assert code == exit_codes.USAGE
        assert "needs pyarrow, which is not installed: pip install pyarrow" in one_line(stderr)

    def test_a_data_directory_is_said_to_be_one(
        self, iris_model: Path, tmp_path: Path, capsys: Any
    ) -> None:
        (tmp_path / "d.csv").mkdir()
        code, stderr = weir_profile(capsys, iris_model, "--data", tmp_path / "d.csv", "-o", "r")
        assert code == exit_codes.USAGE
        assert "is a directory" in one_line(stderr)

    @pytest.mark.parametrize(
        ("options", "fragment"),
        [
            (["--bins", "1"], "--bins must be from 2 to 100, got 1"),
            (["--max-features", "0"], "--max-features must be from 1 to 1024"),
            (["--batch", "0"], "--batch must be from 1 to"),
        ],
    )
    def test_a_bad_option_is_one_line_and_exit_3(
        self,
        iris_model: Path,
        tmp_path: Path,
        capsys: Any,
        options: list[str],
        fragment: str,
    ) -> None:
        code, stderr = weir_profile(
            capsys, iris_model, "--data", tmp_path / "t.npy", "-o", tmp_path / "r", *options
        )
        assert code == exit_codes.USAGE
        assert fragment in one_line(stderr)

    def test_more_bins_than_a_server_exports_are_refused_and_nothing_written(
        self, tmp_path: Path, capsys: Any
    ) -> None:
        mlp = sample_models.BUILDERS["mlp"](tmp_path / "mlp.onnx")
        np.save(
            tmp_path / "t.npy", np.random.default_rng(1).standard_normal((300, 1024), np.float32)
        )
        code, stderr = weir_profile(
            capsys, mlp, "--data", tmp_path / "t.npy", "-o", tmp_path / "r.json",
            "--max-features", "1024", "--bins", "100",
        )  # fmt: skip
        assert code == exit_codes.USAGE
        assert "bins in all, more than the 16384 a server exports" in one_line(stderr)
        assert not (tmp_path / "r.json").exists()

    def test_an_output_path_that_is_a_directory_is_one_line(
        self, iris_model: Path, iris_data: np.ndarray, tmp_path: Path, capsys: Any
    ) -> None:
        np.save(tmp_path / "t.npy", iris_data)
        code, stderr = weir_profile(
            capsys, iris_model, "--data", tmp_path / "t.npy", "-o", tmp_path
        )
        assert code == exit_codes.USAGE
        assert "is a directory; give the reference file to write" in one_line(stderr)

    def test_a_missing_model_is_one_line_and_exit_3(
        self, tmp_path: Path, iris_data: np.ndarray, capsys: Any
    ) -> None:
        np.save(tmp_path / "t.npy", iris_data)
        code, stderr = weir_profile(
            capsys, tmp_path / "nope.onnx", "--data", tmp_path / "t.npy", "-o", tmp_path / "r"
        )
        assert code == exit_codes.USAGE
        assert "model file" in one_line(stderr)
        assert "does not exist" in stderr

    def test_as_a_process_too(self, iris_model: Path, tmp_path: Path) -> None:
        write_csv(tmp_path / "narrow.csv", np.zeros((3, 2)))
        result = subprocess.run(
            [sys.executable, "-m", "weir_operator.cli", "profile", str(iris_model), "--data",
             str(tmp_path / "narrow.csv"), "-o", str(tmp_path / "r")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == exit_codes.USAGE
        assert "has 2 columns" in one_line(result.stderr)


class TestIrisTrainingData:
    def test_has_the_documented_mean_and_standard_deviation_per_column(self) -> None:
        data = sample_models.iris_training_data(20_000)
        assert data.dtype == np.float32
        assert data.shape == (20_000, 4)
        std = np.asarray(sample_models.IRIS_FEATURE_STD)
        assert (np.abs(data.mean(axis=0) - sample_models.IRIS_FEATURE_MEAN) < 0.03 * std).all()
        assert data.std(axis=0) == pytest.approx(std, rel=0.03)

    def test_is_the_same_for_the_same_seed(self) -> None:
        first = sample_models.iris_training_data(10, seed=1)
        assert np.array_equal(first, sample_models.iris_training_data(10, seed=1))
        assert not np.array_equal(first, sample_models.iris_training_data(10, seed=2))


def test_a_reference_is_deterministic(iris_model: Path, iris_data: np.ndarray) -> None:
    one: Reference = profile(iris_model, Table.from_array(iris_data, "a"))
    assert profile(iris_model, Table.from_array(iris_data.copy(), "b")) == one
    assert not any(math.isnan(s) for f in one.features for s in f.shares)
