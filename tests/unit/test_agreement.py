"""Do two models agree (weir_server.agreement): top1 and close, row by row, with every way two
answers can fail to be comparable counted as a disagreement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from weir_server.agreement import AgreementRule, compare

TOP1 = AgreementRule("top1")
CLOSE = AgreementRule("close", atol=1e-4, rtol=1e-3)


def probs(*rows: list[float]) -> dict[str, np.ndarray]:
    return {"probs": np.array(rows, dtype=np.float32)}


class TestTop1:
    def test_the_same_argmax_agrees_whatever_the_probabilities(self) -> None:
        result = compare(probs([0.1, 0.8, 0.1]), probs([0.3, 0.4, 0.3]), TOP1)
        assert (result.rows, result.agreed) == (1, 1)

    def test_another_argmax_disagrees(self) -> None:
        result = compare(probs([0.8, 0.1, 0.1]), probs([0.1, 0.8, 0.1]), TOP1)
        assert (result.rows, result.agreed) == (1, 0)

    def test_each_row_of_a_batch_is_one_sample(self) -> None:
        canary = probs([0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.1, 0.9])
        stable = probs([0.7, 0.3], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8])
        assert (compare(canary, stable, TOP1).rows, compare(canary, stable, TOP1).agreed) == (4, 3)

    def test_labels_compare_by_equality(self) -> None:
        canary = {"label": np.array([1, 2, 0], dtype=np.int64)}
        stable = {"label": np.array([1, 2, 2], dtype=np.int64)}
        result = compare(canary, stable, AgreementRule("top1", output="label"))
        assert result.rows == 1  # a 1-D output is one sample
        assert result.agreed == 0

    @given(hnp.arrays(np.float32, (5, 3), elements=st.floats(-10, 10, width=32)))
    def test_a_model_always_agrees_with_itself(self, values: np.ndarray) -> None:
        result = compare({"probs": values}, {"probs": values.copy()}, TOP1)
        assert result.agreed == result.rows == 5


class TestClose:
    def test_within_atol_plus_rtol_times_the_stables_value_agrees(self) -> None:
        stable = probs([1.0, 100.0])
        # 100 * 1e-3 + 1e-4 = 0.1001 allowed on the second element, 1e-4 + 1e-3 on the first.
        assert compare(probs([1.0011, 100.1]), stable, CLOSE).agreed == 1
        assert compare(probs([1.0, 100.11]), stable, CLOSE).agreed == 0
        assert compare(probs([1.0012, 100.0]), stable, CLOSE).agreed == 0

    def test_every_element_of_a_row_must_be_close(self) -> None:
        canary = probs([0.5, 0.5], [0.5, 0.6])
        stable = probs([0.5, 0.5], [0.5, 0.5])
        assert compare(canary, stable, CLOSE).agreed == 1

    def test_tolerances_come_from_the_rule(self) -> None:
        loose = AgreementRule("close", atol=0.2, rtol=0.0)
        assert compare(probs([0.5, 0.6]), probs([0.5, 0.45]), loose).agreed == 1


class TestWhatNeverAgrees:
    @pytest.mark.parametrize("rule", [TOP1, CLOSE], ids=["top1", "close"])
    def test_nan_agrees_with_nothing_not_even_nan(self, rule: AgreementRule) -> None:
        nan = float("nan")
        assert compare(probs([nan, 0.5]), probs([0.1, 0.5]), rule).agreed == 0
        assert compare(probs([nan, 0.5]), probs([nan, 0.5]), rule).agreed == 0
        assert compare(probs([0.9, 0.1]), probs([nan, 0.1]), rule).agreed == 0

    @pytest.mark.parametrize("rule", [TOP1, CLOSE], ids=["top1", "close"])
    def test_another_shape_disagrees_on_every_row(self, rule: AgreementRule) -> None:
        result = compare(probs([0.9, 0.1, 0.0]), probs([0.9, 0.1]), rule)
        assert (result.rows, result.agreed) == (1, 0)
        assert "shape" in result.why
        batch = compare(probs([0.9, 0.1]), probs([0.9, 0.1], [0.2, 0.8]), rule)
        assert (batch.rows, batch.agreed) == (2, 0), "the stable's rows are the samples"

    def test_another_dtype_disagrees(self) -> None:
        canary = {"probs": np.array([[0.9, 0.1]], dtype=np.float64)}
        result = compare(canary, probs([0.9, 0.1]), CLOSE)
        assert (result.rows, result.agreed) == (1, 0)
        assert "datatype" in result.why

    def test_a_missing_output_disagrees(self) -> None:
        result = compare({"other": np.zeros((1, 2), np.float32)}, probs([0.9, 0.1]), TOP1)
        assert (result.rows, result.agreed) == (1, 0)
        assert "no output 'probs'" in result.why


class TestSeveralOutputs:
    def test_the_rules_output_is_compared_else_the_first(self) -> None:
        stable = {
            "label": np.array([[1]], dtype=np.int64),
            "probs": np.array([[0.2, 0.8]], dtype=np.float32),
        }
        canary = {
            "label": np.array([[1]], dtype=np.int64),
            "probs": np.array([[0.8, 0.2]], dtype=np.float32),
        }
        assert compare(canary, stable, TOP1, first_output="label").agreed == 1
        assert compare(canary, stable, AgreementRule("top1", output="probs")).agreed == 0
        assert compare(canary, stable, TOP1).agreed == 1  # the stable's first output: label
