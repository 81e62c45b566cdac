"""mean_stderr: the summary every table and sentence uses."""

import math

import pytest

from pyrovae.analysis.stats import mean_stderr


def test_mean_and_standard_error():
    mean, se = mean_stderr([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0
    assert se == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3 / 4))
    assert mean_stderr([5.0]) == (5.0, None)
    with pytest.raises(ValueError, match="at least one value"):
        mean_stderr([])


def test_two_values_have_a_standard_error_and_a_fractional_mean():
    # the smallest sample with a standard error, and a mean that is not a whole number
    mean, se = mean_stderr([0.5, 2.0])
    assert mean == 1.25
    assert se == pytest.approx(0.75)  # s = 1.5 / sqrt(2), divided by sqrt(2)
