"""Numbers in words, for analysis reasons a person reads ("error rate 1.04% > 1.0%")."""

from __future__ import annotations

from typing import Final

SLACK: Final = 1e-9
"""Float comparisons of a value with its limit allow this relative slack."""


def pods(n: int) -> str:
    return f"{n} canary pod" if n == 1 else f"{n} canary pods"


def count(value: float) -> str:
    return f"{value:.0f}" if value == round(value) else f"{value:.1f}"


def _distinct(value: float, other: float, digits: int) -> str:
    """`value` with `digits` decimals, or more when that would print it equal to a different
    `other` (so that "1.0% > 1.0%" reads "1.04% > 1.0%")."""
    text = f"{value:.{digits}f}"
    different = abs(value - other) > SLACK * max(1.0, abs(other))
    while different and text == f"{other:.{digits}f}" and digits < 6:
        digits += 1
        text = f"{value:.{digits}f}"
    return text


def percent(value: float, other: float) -> str:
    percent = value * 100
    return _distinct(percent, other * 100, 1 if percent == 0 or percent >= 0.1 else 3) + "%"


def ms(value: float, other: float) -> str:
    return _distinct(value, other, 0 if value >= 100 else 1 if value >= 1 else 2)


def ratio(value: float, other: float) -> str:
    return _distinct(value, other, 2)
