"""The monitoring reference (docs/monitoring.md §1, weir_server/reference.py): what a valid file
is, the one-line error that names the file and the field of an invalid one, and the bin every
value falls in (the profiler and the server share these functions, so their shares agree)."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from weir_server.reference import (
    MAX_BINS,
    MAX_CLASSES,
    MAX_FEATURES,
    MAX_FILE_BYTES,
    MAX_SERIES,
    OTHER,
    Confidence,
    Feature,
    ModelIdentity,
    Output,
    Reference,
    ReferenceError,
    categorical_bins,
    category_key,
    category_number,
    dumps,
    feature_column,
    feature_name,
    load_reference,
    numeric_bins,
    parse_reference,
    shares_of,
    top1,
    write_reference,
)

SHA = "ab" * 32

VALID: dict[str, Any] = {
    "schemaVersion": 1,
    "model": {"sha256": SHA, "input": "x"},
    "rows": 100,
    "features": [
        {"name": "x[0]", "kind": "numeric", "edges": [1.0, 2.0], "shares": [0.25, 0.5, 0.25]},
        {
            "name": "x[1]",
            "kind": "categorical",
            "categories": ["0", "1"],
            "shares": [0.5, 0.4, 0.1],
        },
    ],
    "outputs": [
        {
            "name": "probs",
            "kind": "classes",
            "classes": ["0", "1"],
            "shares": [0.6, 0.4],
            "confidence": {"edges": [0.5, 0.9], "shares": [0.0, 0.7, 0.3], "mean": 0.8},
        },
        {"name": "label", "kind": "classes", "classes": ["a"], "shares": [0.9, 0.1]},
        {"name": "score", "kind": "numeric", "edges": [0.0], "shares": [0.5, 0.5]},
    ],
}


def document(**changes: Any) -> dict[str, Any]:
    """VALID with changes at dotted paths: {"features.0.edges": [...]}; None deletes."""
    result = copy.deepcopy(VALID)
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        target: Any = result
        for key in path:
            target = target[int(key)] if key.isdigit() else target[key]
        key_: Any = int(last) if last.isdigit() else last
        if value is None:
            del target[key_]
        else:
            target[key_] = value
    return result


class TestAValidReference:
    def test_is_parsed_into_its_features_and_outputs(self) -> None:
        reference = parse_reference(VALID, "ref.json")
        assert reference.model == ModelIdentity(SHA, "x")
        assert reference.rows == 100
        numeric, categorical = reference.features
        assert numeric == Feature("x[0]", "numeric", (0.25, 0.5, 0.25), edges=(1.0, 2.0))
        assert categorical.categories == ("0", "1")
        probs, label, score = reference.outputs
        assert probs.confidence == Confidence((0.5, 0.9), (0.0, 0.7, 0.3), 0.8)
        assert not probs.has_other
        assert label.has_other
        assert score.kind == "numeric"

    def test_names_its_bins_by_index_and_other(self) -> None:
        reference = parse_reference(VALID, "ref.json")
        numeric, categorical = reference.features
        assert numeric.bins() == ("0", "1", "2")
        assert categorical.bins() == ("0", "1", OTHER)
        probs, label, score = reference.outputs
        assert probs.bins() == ("0", "1")  # the classes themselves
        assert label.bins() == ("a", OTHER)
        assert score.bins() == ("0", "1")
        assert probs.confidence is not None
        assert probs.confidence.bins() == ("0", "1", "2")

    def test_survives_a_write_and_a_load(self, tmp_path: Path) -> None:
        reference = parse_reference(VALID, "ref.json")
        path = tmp_path / "reference.json"
        write_reference(reference, path)
        assert load_reference(path) == reference
        assert json.loads(path.read_text()) == reference.to_json()
        assert not list(tmp_path.glob("*.partial"))

    def test_is_written_one_feature_and_one_output_a_line(self) -> None:
        text = dumps(parse_reference(VALID, "ref.json"))
        lines = text.splitlines()
        assert sum('"kind": "numeric"' in line for line in lines) == 2
        assert any(line.strip().startswith('{"name": "x[1]"') for line in lines)

    def test_may_have_no_features(self) -> None:
        # an input of rank 3 or more: only the outputs are profiled
        assert parse_reference(document(features=[]), "ref.json").features == ()

    def test_keys_the_format_does_not_define_are_ignored(self) -> None:
        extra = document(**{"producer": "someone", "features.0.note": "hi"})
        assert parse_reference(extra, "ref.json") == parse_reference(VALID, "ref.json")

    def test_an_upper_case_sha256_is_read_as_lower_case(self) -> None:
        reference = parse_reference(document(**{"model.sha256": SHA.upper()}), "ref.json")
        assert reference.model.sha256 == SHA


class TestAnInvalidReference:
    @pytest.mark.parametrize(
        ("changes", "where", "problem"),
        [
            ({"schemaVersion": 2}, "schemaVersion", "this weir reads schemaVersion 1"),
            ({"schemaVersion": None}, "schemaVersion", "is missing"),
            ({"model.sha256": "00"}, "model.sha256", "64 hexadecimal characters"),
            ({"model.input": ""}, "model.input", "non-empty string"),
            ({"rows": 0}, "rows", "at least 1"),
            ({"rows": True}, "rows", "whole number"),
            ({"features": {}}, "features", "must be a list"),
            ({"features.0.kind": "ordinal"}, "features[0].kind", "'numeric' or 'categorical'"),
            ({"features.0.edges": [2.0, 1.0]}, "features[0].edges[1]", "ascending and unique"),
            ({"features.0.edges": [1.0, 1.0]}, "features[0].edges[1]", "ascending and unique"),
            ({"features.0.edges": [1.0, "2"]}, "features[0].edges[1]", "must be a number"),
            ({"features.0.shares": [0.5, 0.5]}, "features[0].shares", "must hold 3 shares"),
            ({"features.0.shares": [0.5, 0.5, 0.5]}, "features[0].shares", "sum to 1"),
            ({"features.0.shares": [1.5, -0.25, -0.25]}, "features[0].shares[0]", "from 0 to 1"),
            ({"features.1.categories": ["0", "0"]}, "features[1].categories", "listed twice"),
            ({"features.1.categories": []}, "features[1].categories", "at least one"),
            ({"features.1.name": "x[0]"}, "features[1].name", "feature 'x[0]' is listed twice"),
            ({"outputs.0.classes": None}, "outputs[0].classes", "is missing"),
            ({"outputs.0.shares": [1.0]}, "outputs[0].shares", "one per class"),
            ({"outputs.0.confidence.mean": 1.5}, "outputs[0].confidence.mean", "from 0 to 1"),
            ({"outputs.1.classes": ["other"]}, "outputs[1].classes", "cannot have an other bin"),
            ({"outputs.2.kind": "regression"}, "outputs[2].kind", "'classes' or 'numeric'"),
        ],
    )
    def test_is_refused_naming_the_file_and_the_field(
        self, changes: dict[str, Any], where: str, problem: str
    ) -> None:
        with pytest.raises(ReferenceError) as raised:
            parse_reference(document(**changes), "ref.json")
        message = str(raised.value)
        assert message.startswith(f"ref.json: {where}: "), message
        assert problem in message
        assert "\n" not in message

    def test_a_nan_edge_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "ref.json"
        path.write_text(json.dumps(document(**{"features.0.edges": [math.nan, 2.0]})))
        with pytest.raises(ReferenceError, match=r"features\[0\]\.edges\[0\]: must be a finite"):
            load_reference(path)

    def test_a_file_that_is_not_json_is_named(self, tmp_path: Path) -> None:
        path = tmp_path / "ref.json"
        path.write_text("{not json")
        with pytest.raises(ReferenceError, match=f"^{re.escape(str(path))} is not JSON: "):
            load_reference(path)

    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        with pytest.raises(ReferenceError, match=r"reference file .*nope\.json does not exist"):
            load_reference(tmp_path / "nope.json")

    def test_a_directory_is_said_to_be_one(self, tmp_path: Path) -> None:
        with pytest.raises(ReferenceError, match="is a directory"):
            load_reference(tmp_path)

    def test_a_list_at_the_top_is_refused(self) -> None:
        with pytest.raises(ReferenceError, match=r"^ref\.json: must be a JSON object, got a list"):
            parse_reference([], "ref.json")


class TestWhatAReferenceMayHold:
    """Every bin is a series on every server: a hand-edited or hostile file is bounded."""

    def numeric(self, name: str, edges: int) -> dict[str, Any]:
        return {
            "name": name,
            "kind": "numeric",
            "edges": [float(i) for i in range(edges)],
            "shares": [1.0] + [0.0] * edges,
        }

    @pytest.mark.parametrize(
        ("changes", "where", "problem"),
        [
            (
                {"features.0.edges": [float(i) for i in range(MAX_BINS)]},
                "features[0].edges",
                f"holds {MAX_BINS} edges, more than the {MAX_BINS - 1}",
            ),
            (
                {"features.1.categories": [str(i) for i in range(MAX_BINS + 1)]},
                "features[1].categories",
                f"holds {MAX_BINS + 1} category labels, more than the {MAX_BINS}",
            ),
            (
                {"outputs.1.classes": [str(i) for i in range(MAX_CLASSES + 1)]},
                "outputs[1].classes",
                f"holds {MAX_CLASSES + 1} class labels, more than the {MAX_CLASSES}",
            ),
            (
                {"outputs.0.confidence.edges": [i / 200 for i in range(MAX_BINS)]},
                "outputs[0].confidence.edges",
                f"holds {MAX_BINS} edges, more than the {MAX_BINS - 1}",
            ),
        ],
    )
    def test_too_many_bins_are_refused_naming_the_field(
        self, changes: dict[str, Any], where: str, problem: str
    ) -> None:
        with pytest.raises(ReferenceError) as raised:
            parse_reference(document(**changes), "ref.json")
        assert str(raised.value).startswith(f"ref.json: {where}: {problem}"), str(raised.value)

    def test_too_many_features_are_refused(self) -> None:
        many = [self.numeric(f"x[{i}]", 0) for i in range(MAX_FEATURES + 1)]
        with pytest.raises(ReferenceError, match=f"holds {MAX_FEATURES + 1} features"):
            parse_reference(document(features=many), "ref.json")

    def test_too_many_bins_in_all_are_refused_before_a_server_exports_them(self) -> None:
        wide = [self.numeric(f"x[{i}]", MAX_BINS - 1) for i in range(MAX_SERIES // MAX_BINS + 1)]
        with pytest.raises(ReferenceError) as raised:
            parse_reference(document(features=wide), "ref.json")
        assert f"more than the {MAX_SERIES} a server exports" in str(raised.value)
        at_most = [self.numeric(f"x[{i}]", MAX_BINS - 1) for i in range(100)]
        assert len(parse_reference(document(features=at_most), "ref.json").features) == 100

    def test_a_huge_file_is_refused_without_being_read_whole(self, tmp_path: Path) -> None:
        path = tmp_path / "ref.json"
        with path.open("wb") as handle:
            handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk spent
        with pytest.raises(ReferenceError, match=r"is over 16 MiB: not a reference"):
            load_reference(path)


class TestNumericBins:
    def test_bin_i_holds_the_values_from_edge_i_minus_1_up_to_edge_i(self) -> None:
        edges = [1.0, 2.0, 3.0]
        values = [0.5, 1.0, 1.5, 2.0, 2.999, 3.0, 100.0]
        assert numeric_bins(edges, values).tolist() == [0, 1, 1, 2, 2, 3, 3]

    def test_the_first_and_last_bins_are_open_ended(self) -> None:
        bins = numeric_bins([0.0, 1.0], [-math.inf, -1e300, 1e300, math.inf])
        assert bins.tolist() == [0, 0, 2, 2]

    def test_nan_is_in_no_bin(self) -> None:
        assert numeric_bins([0.0], [math.nan, 1.0, -1.0]).tolist() == [-1, 1, 0]

    def test_no_edges_is_one_bin(self) -> None:
        assert numeric_bins([], [1.0, -5.0]).tolist() == [0, 0]

    def test_integers_are_binned_as_numbers(self) -> None:
        assert numeric_bins([2.5], np.array([1, 2, 3], dtype=np.int64)).tolist() == [0, 0, 1]

    def test_a_float32_value_is_compared_exactly_as_it_is(self) -> None:
        # float32(5.4) is 5.40000009...: at or above the edge 5.4, as the server sees it too
        assert numeric_bins([5.4], np.array([5.4], dtype=np.float32)).tolist() == [1]
        assert numeric_bins([5.4], np.array([5.4], dtype=np.float64)).tolist() == [1]
        assert numeric_bins([5.4], np.array([5.3999], dtype=np.float32)).tolist() == [0]


class TestCategoricalBins:
    def test_a_value_gets_its_categorys_index_and_any_other_the_last(self) -> None:
        bins = categorical_bins(["0", "1", "7"], np.array([7, 0, 5, 1, 7], dtype=np.int64))
        assert bins.tolist() == [2, 0, 3, 1, 2]

    def test_whole_floats_match_integer_categories(self) -> None:
        bins = categorical_bins(["1", "3"], np.array([3.0, 1.0, 1.5, math.nan], np.float32))
        assert bins.tolist() == [1, 0, 2, 2]

    def test_booleans_match_true_and_false(self) -> None:
        bins = categorical_bins(["false", "true"], np.array([True, False, True]))
        assert bins.tolist() == [1, 0, 1]

    def test_text_matches_text_and_bytes_are_read_as_utf8(self) -> None:
        values = np.empty(4, dtype=object)
        values[:] = ["red", b"blue", "green", "Red"]
        assert categorical_bins(["blue", "red"], values).tolist() == [1, 0, 2, 2]

    def test_large_integers_are_compared_exactly(self) -> None:
        big = 2**60
        values = np.array([big, big + 1], dtype=np.int64)
        assert categorical_bins([str(big + 1)], values).tolist() == [1, 0]

    def test_a_text_category_never_matches_a_number(self) -> None:
        assert categorical_bins(["a", "2"], np.array([2, 3])).tolist() == [1, 2]

    def test_a_category_outside_the_integer_type_matches_nothing(self) -> None:
        assert categorical_bins(["300", "3"], np.array([3, 44], np.uint8)).tolist() == [1, 2]

    def test_2d_values_keep_their_shape(self) -> None:
        bins = categorical_bins(["1"], np.array([[1, 2], [2, 1]]))
        assert bins.tolist() == [[0, 1], [1, 0]]


class TestCategoryStrings:
    @pytest.mark.parametrize(
        ("value", "key"),
        [
            (3, "3"),
            (np.int64(-2), "-2"),
            (True, "true"),
            (np.bool_(False), "false"),
            (3.0, "3"),
            (np.float32(2.5), "2.5"),
            ("setosa", "setosa"),
            (b"caf\xc3\xa9", "café"),
        ],
    )
    def test_a_value_is_written_as_an_integer_would_be(self, value: Any, key: str) -> None:
        assert category_key(value) == key

    @pytest.mark.parametrize(
        ("key", "number"),
        [("3", 3.0), ("-2", -2.0), ("true", 1.0), ("false", 0.0), ("2.5", 2.5), ("a", None)],
    )
    def test_a_category_stands_for_a_number_or_for_text(
        self, key: str, number: float | None
    ) -> None:
        assert category_number(key) == number


class TestTop1:
    def test_probabilities_give_their_maximum(self) -> None:
        scores = np.array([[0.2, 0.8], [0.5, 0.5]], dtype=np.float32)
        assert top1(scores) == pytest.approx([0.8, 0.5])

    def test_logits_give_the_maximum_of_their_softmax(self) -> None:
        logits = np.array([[2.0, 0.5, -1.0]])
        expected = math.exp(2) / (math.exp(2) + math.exp(0.5) + math.exp(-1))
        assert top1(logits) == pytest.approx([expected])

    def test_each_row_is_judged_on_its_own(self) -> None:
        mixed = np.array([[0.1, 0.9], [3.0, 3.0]])
        assert top1(mixed) == pytest.approx([0.9, 0.5])

    def test_rows_within_the_tolerance_of_1_are_probabilities(self) -> None:
        assert top1(np.array([[0.7, 0.3005]])) == pytest.approx([0.7])

    def test_a_row_with_nan_has_no_confidence(self) -> None:
        assert math.isnan(top1(np.array([[math.nan, 0.5]]))[0])


class TestShares:
    def test_are_each_bins_share_of_the_values_in_a_bin(self) -> None:
        assert shares_of(np.array([0, 0, 1, -1]), 3) == pytest.approx((2 / 3, 1 / 3, 0.0))

    def test_with_nothing_in_any_bin_are_equal(self) -> None:
        assert shares_of(np.array([-1, -1]), 4) == (0.25, 0.25, 0.25, 0.25)


class TestFeatureNames:
    def test_a_column_of_a_2d_input_is_input_bracket_column(self) -> None:
        assert feature_name("x", 2) == "x[2]"
        assert feature_column("x[2]", "x") == 2

    def test_a_1d_input_is_its_own_name(self) -> None:
        assert feature_name("tag", None) == "tag"
        assert feature_column("tag", "tag") is None

    @pytest.mark.parametrize("name", ["y[0]", "x[-1]", "x[a]", "x[1", "x[1][2]", "x[٣]"])
    def test_other_names_are_not_the_inputs(self, name: str) -> None:
        with pytest.raises(ValueError, match="is not a feature of input 'x'"):
            feature_column(name, "x")


def test_a_reference_built_in_code_serialises_to_the_documented_keys() -> None:
    reference = Reference(
        ModelIdentity(SHA, "x"),
        10,
        (Feature("x", "numeric", (1.0,)),),
        (Output("y", "numeric", (0.5, 0.5), edges=(0.0,)),),
    )
    assert reference.to_json() == {
        "schemaVersion": 1,
        "model": {"sha256": SHA, "input": "x"},
        "rows": 10,
        "features": [{"name": "x", "kind": "numeric", "edges": [], "shares": [1.0]}],
        "outputs": [{"name": "y", "kind": "numeric", "edges": [0.0], "shares": [0.5, 0.5]}],
    }
