"""The one conversion of measured seconds to reported milliseconds (``pytest_migsafe.units``)."""

from __future__ import annotations

import math
import random
from decimal import ROUND_HALF_UP, Decimal

import pytest

from pytest_migsafe.units import milliseconds


def _decimal_ms(seconds: float) -> float:
    """The expected value, from the float's exact decimal expansion, half up to 0.001 ms."""
    return float((Decimal(seconds) * 1000).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


@pytest.mark.parametrize("seconds", [0.0, -0.0, -1.0, math.nan, -math.inf])
def test_zero_negative_and_nan_are_zero(seconds: float) -> None:
    assert milliseconds(seconds) == 0.0


@pytest.mark.parametrize(("seconds", "expected"), [
    (0.0012344, 1.234), (0.0012346, 1.235), (0.0000004, 0.0), (0.0000006, 0.001),
    (1.5, 1500.0), (0.000123, 0.123), (2.0004999, 2000.5), (12.3456789, 12345.679),
])
def test_to_the_microsecond(seconds: float, expected: float) -> None:
    assert milliseconds(seconds) == expected


def test_agrees_with_decimal_rounding_off_ties() -> None:
    """Timings as perf_counter differences give: the float nearest the decimal rounding of
    the float's exact value (ties, which cannot be told apart from a float product, aside)."""
    rng = random.Random(7)
    for _ in range(20_000):
        seconds = rng.choice((rng.uniform(0, 0.01), rng.uniform(0, 5), rng.expovariate(300)))
        expected = _decimal_ms(seconds)
        scaled = Decimal(seconds) * 1_000_000
        if abs(scaled - scaled.to_integral_value() - Decimal("0.5")) < Decimal("1e-6") or \
                abs(scaled - scaled.to_integral_value() + Decimal("0.5")) < Decimal("1e-6"):
            continue  # within a millionth of a microsecond of a tie: either side is right
        assert milliseconds(seconds) == expected, seconds
