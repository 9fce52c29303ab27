"""Stacking requests into a batch and splitting the outputs back is lossless and order-keeping."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from weir_server.batching import batch_key, split, stack


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=8))
def test_split_of_stack_gives_back_each_request(rows: list[int]) -> None:
    requests = [{"x": np.full((n, 3), i, dtype=np.float32)} for i, n in enumerate(rows)]
    parts = split(stack(requests), rows)
    assert parts is not None
    for request, part in zip(requests, parts, strict=True):
        np.testing.assert_array_equal(part["x"], request["x"])


def test_outputs_without_a_batch_dimension_cannot_be_split() -> None:
    assert split({"y": np.zeros((3,))}, [1, 1]) is None
    assert split({"y": np.float32(1.0) * np.ones(())}, [1]) is None


def test_requests_batch_together_only_when_names_types_and_inner_dims_agree() -> None:
    a = {"x": np.zeros((1, 4), np.float32)}
    assert batch_key(a) == batch_key({"x": np.zeros((7, 4), np.float32)})
    assert batch_key(a) != batch_key({"x": np.zeros((1, 5), np.float32)})
    assert batch_key(a) != batch_key({"x": np.zeros((1, 4), np.float64)})
    assert batch_key(a) != batch_key({"z": np.zeros((1, 4), np.float32)})
