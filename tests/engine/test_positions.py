"""Tests of emzoo.engine.positions: the factor, output positions and the dense grid."""

import fractions

import pytest

from emzoo.engine.positions import (check_factor, isotropic_factor, parse_factor,
                                    repair_positions, upscale_positions)
from emzoo.errors import EmzooError, VolumeError


def test_positions_power_of_two_and_fractional():
    positions, grid = upscale_positions(5, 4)
    assert grid == 4 and len(positions) == 17 and positions[-1] == 4
    positions, grid = upscale_positions(5, 3)
    assert grid == 4 and len(positions) == 13
    positions, grid = upscale_positions(4, 2.5)  # (4 - 1) * 2.5 = 7.5 -> 8 slices up to z = 2.8
    assert grid == 4 and len(positions) == 8 and float(positions[-1]) == pytest.approx(2.8)
    assert upscale_positions(3, 1) == ([0, 1, 2], 1)


@pytest.mark.parametrize("text, value", [("2", 2.0), ("2.5", 2.5), (3, 3.0), ("1", 1.0),
                                         (6.25, 6.25)])
def test_parse_factor_takes_any_number_from_one(text, value):
    assert parse_factor(text) == value
    assert check_factor(text) == fractions.Fraction(value)


@pytest.mark.parametrize("bad", [0.5, 0, "abc", float("nan"), float("inf"), None, True, "2,5",
                                 "inf", "nan", "-inf", "1e400"])
def test_bad_factors_say_what_a_factor_must_be(bad):
    with pytest.raises(EmzooError, match=r"`factor`\. Expected a number >= 1\. Received: factor="):
        check_factor(bad)


def test_repair_positions_are_evenly_spaced_between_the_good_slices():
    assert repair_positions(1) == ([1], 2)
    assert repair_positions(3) == ([1, 2, 3], 4)
    positions, grid = repair_positions(2)
    assert grid == 4 and positions == [fractions.Fraction(4, 3), fractions.Fraction(8, 3)]


def test_isotropic_factor_needs_a_coarser_z():
    assert isotropic_factor((50.0, 4.0, 4.0)) == 12.5
    with pytest.raises(VolumeError, match="voxel_size"):   # the apps word it as --voxel-size
        isotropic_factor(None)
    with pytest.raises(VolumeError, match="finer"):
        isotropic_factor((2.0, 4.0, 4.0))


def test_positions_of_a_huge_factor_are_computed_on_demand():
    positions, grid = upscale_positions(3, 1e9)  # returns at once: nothing is listed
    assert positions.count == 2_000_000_001 and grid == 2**30
    assert positions[1] == fractions.Fraction(1, 10**9) and positions[-1] == 2
    with pytest.raises(IndexError):
        positions[positions.count]
    assert list(upscale_positions(3, 2.5)[0][1:3]) == [fractions.Fraction(2, 5), fractions.Fraction(4, 5)]
