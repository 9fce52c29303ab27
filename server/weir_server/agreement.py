"""Do two models agree? The canary's output compared with the stable's, for the same request,
row by row (one row of a batch is one sample). Pure (numpy arrays in, booleans out).

Why it exists: latency and errors cannot see a model that answers fast, with 200, and wrongly
(a swapped label map, a bad preprocessing step). The shadow step mirrors live requests to the
canary and compares its answers with the stable's (DESIGN.md, "Model-aware contracts"):
- `top1`: the same argmax along the last axis, per row (an output of labels, integers or
  strings, must be equal instead);
- `close`: |c - s| <= atol + rtol * |s| for every element of the row (numpy.isclose's rule);
- a missing output, another shape or another dtype disagrees on every row, and NaN never
  agrees with anything (not even NaN), in either rule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Compare = Literal["top1", "close"]


@dataclass(frozen=True, slots=True)
class AgreementRule:
    """spec.rollout.analysis.agreement, as the comparison needs it."""

    compare: Compare = "top1"
    output: str | None = None  # None: the model's first output
    atol: float = 1e-4
    rtol: float = 1e-3


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome for one request: how many of its rows agreed, of how many."""

    rows: int
    agreed: int
    why: str = ""  # why they disagree, when they all do for one reason (shape, dtype, output)
    disagreeing: tuple[int, ...] = ()  # rows that disagree, when compared row by row


def rows_of(array: Array) -> int:
    """Samples in an output: its first dimension, or 1 for a scalar or a 1-D output."""
    return int(array.shape[0]) if array.ndim >= 2 else 1


def compare(
    canary: Mapping[str, Array],
    stable: Mapping[str, Array],
    rule: AgreementRule,
    first_output: str | None = None,
) -> Comparison:
    """Compare the outputs named by `rule.output` (else `first_output`, else the stable's
    first) of the two answers to one request."""
    name = rule.output or first_output or next(iter(stable), None)
    if name is None or name not in stable:
        return Comparison(0, 0, f"the stable's answer has no output {name!r}")
    expected = stable[name]
    rows = rows_of(expected)
    found = canary.get(name)
    if found is None:
        return Comparison(rows, 0, f"the canary's answer has no output {name!r}")
    if found.shape != expected.shape:
        return Comparison(rows, 0, f"shape {list(found.shape)} != stable's {list(expected.shape)}")
    if found.dtype != expected.dtype:
        return Comparison(rows, 0, f"datatype {found.dtype} != stable's {expected.dtype}")
    per_row = _top1(found, expected) if rule.compare == "top1" else _close(found, expected, rule)
    wrong = tuple(int(i) for i in np.flatnonzero(~per_row))
    return Comparison(rows, int(np.count_nonzero(per_row)), disagreeing=wrong)


def _as_rows(array: Array) -> Array:
    """The array with one row per sample (a 1-D or scalar output is one sample)."""
    if array.ndim >= 2:
        return array.reshape(array.shape[0], -1) if array.ndim > 2 else array
    return array.reshape(1, -1)


def _numeric(array: Array) -> bool:
    """Scores or probabilities, compared by value; integers, booleans and strings are labels,
    compared by equality (the argmax of class ids would mean nothing)."""
    return array.dtype.kind == "f"


def _top1(canary: Array, stable: Array) -> Array:
    """Per row: the same index of the largest value along the last axis (for every position
    of the other axes), and no NaN in either row."""
    if not (_numeric(canary) and _numeric(stable)):
        return np.asarray(np.asarray(_as_rows(canary) == _as_rows(stable)).all(axis=1))
    c = canary if canary.ndim >= 2 else canary.reshape(1, -1)
    s = stable if stable.ndim >= 2 else stable.reshape(1, -1)
    same = np.argmax(c, axis=-1) == np.argmax(s, axis=-1)
    same = same.reshape(same.shape[0], -1).all(axis=1)
    finite = ~(_nan_rows(c) | _nan_rows(s))
    return np.asarray(same & finite)


def _close(canary: Array, stable: Array, rule: AgreementRule) -> Array:
    """Per row: every element within atol + rtol * |stable|; NaN is never close."""
    c, s = _as_rows(canary), _as_rows(stable)
    if not (_numeric(canary) and _numeric(stable)):
        return np.asarray(np.asarray(c == s).all(axis=1))
    within = np.isclose(
        c.astype(np.float64), s.astype(np.float64), rtol=rule.rtol, atol=rule.atol, equal_nan=False
    )
    return np.asarray(within.all(axis=1))


def _nan_rows(array: Array) -> Array:
    if array.dtype.kind != "f":
        return np.zeros(array.shape[0], dtype=bool)
    return np.asarray(np.isnan(array.reshape(array.shape[0], -1)).any(axis=1))
