"""Median with min-max over repeated runs, and the ceiling rule."""

import math

import pytest

from loadtests.bench.stats import Spread, at_ceiling, ratio, spread


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([5.0], Spread(5.0, 5.0, 5.0, 1)),
        ([3, 1, 2], Spread(2, 1, 3, 3)),
        ([4, 1, 3, 2], Spread(2.5, 1, 4, 4)),
        ([7, 7, 7], Spread(7, 7, 7, 3)),
    ],
)
def test_spread(values, expected):
    assert spread(values) == expected


@pytest.mark.parametrize("values", [[], [1.0, math.nan], [math.inf, 2.0]])
def test_spread_refuses_what_was_not_measured(values):
    with pytest.raises(ValueError, match="measured"):
        spread(values)


@pytest.mark.parametrize(
    ("value", "reference", "expected"),
    [(50, 100, 0.5), (0, 100, 0.0), (10, 0, None), (10, -1, None), (math.nan, 1, None), (1, math.inf, None)],
)
def test_ratio(value, reference, expected):
    assert ratio(value, reference) == expected


@pytest.mark.parametrize(
    ("value", "ceiling", "limited"),
    [
        (79.9, 100, False),
        (80.0, 100, True),  # "within 80 % of the ceiling" includes 80 % itself
        (120.0, 100, True),  # above the ceiling: the generator ran out first, noise aside
        (10.0, 0, False),  # no usable ceiling: nothing can be claimed
    ],
)
def test_at_ceiling(value, ceiling, limited):
    assert at_ceiling(value, ceiling, 0.8) is limited
