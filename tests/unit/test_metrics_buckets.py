"""The latency histogram is fine enough to read a p99 between 1 ms and 10 s within 10%."""

from __future__ import annotations

import bisect
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weir_server.metrics import LATENCY_BUCKETS, latency_buckets


def interpolated_quantile(q: float, samples: list[float], bounds: tuple[float, ...]) -> float:
    """What Prometheus' histogram_quantile reads from the bucket counts of `samples`."""
    counts = [0] * (len(bounds) + 1)
    for sample in samples:
        counts[bisect.bisect_left(bounds, sample)] += 1
    cumulative = np.cumsum(counts)
    rank = q * cumulative[-1]
    index = int(np.searchsorted(cumulative, rank))
    lower = bounds[index - 1] if index > 0 else 0.0
    upper = bounds[index]
    below = cumulative[index - 1] if index > 0 else 0
    return lower + (upper - lower) * (rank - below) / (cumulative[index] - below)


def test_buckets_are_increasing_and_cover_100_microseconds_to_10_seconds() -> None:
    assert list(LATENCY_BUCKETS) == sorted(set(LATENCY_BUCKETS))
    assert LATENCY_BUCKETS[0] == pytest.approx(1e-4)
    assert LATENCY_BUCKETS[-1] == pytest.approx(10.0)


def test_each_bucket_is_less_than_10_percent_wider_than_the_one_below() -> None:
    ratios = [b / a for a, b in itertools.pairwise(LATENCY_BUCKETS)]
    assert max(ratios) < 1.10


def test_a_coarser_histogram_would_fail_the_same_check() -> None:
    coarse = latency_buckets(per_decade=10)
    ratios = [b / a for a, b in itertools.pairwise(coarse)]
    assert max(ratios) > 1.10


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=1e-3, max_value=10.0),
    st.floats(min_value=0.01, max_value=0.5),
    st.integers(min_value=100, max_value=2000),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_p99_read_from_buckets_is_within_10_percent(
    p99_target: float, spread: float, count: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # Latencies around the target, so that the true p99 lands anywhere in 1 ms .. 10 s.
    samples = list(p99_target * np.exp(rng.normal(0, spread, size=count)))
    samples = [min(max(s, 1e-3), 10.0) for s in samples]
    true_p99 = float(np.quantile(samples, 0.99, method="inverted_cdf"))
    estimate = interpolated_quantile(0.99, samples, LATENCY_BUCKETS)
    assert abs(estimate - true_p99) / true_p99 < 0.10
