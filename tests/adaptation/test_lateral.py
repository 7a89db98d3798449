"""Lateral triplets: the gap of each recursion level, planes stretched along z, and the held-out
x range kept apart."""

import numpy as np

from emzoo.adaptation import LateralTriplets, lateral_gaps, stretch_along_z


def test_lateral_gaps_match_each_recursion_level():
    assert lateral_gaps(40.0, 10.0, 4) == [2, 1]        # outer frames 40 nm and 20 nm apart
    assert lateral_gaps(50.0, 4.0, 8) == [6, 3, 2]
    assert lateral_gaps(10.0, 10.0, 2) == [1]           # isotropic input: never below 1 px


def test_stretch_along_z_is_linear_and_keeps_rows():
    plane = np.array([[0.0, 1.0], [4.0, 5.0], [8.0, 9.0]], np.float32)
    stretched = stretch_along_z(plane, 2.0)
    assert stretched.shape == (5, 2)
    np.testing.assert_allclose(stretched[:, 0], [0, 2, 4, 6, 8])
    np.testing.assert_allclose(stretched[::2], plane)


def test_held_out_triplets_use_only_the_held_out_x_range():
    block = np.broadcast_to(np.arange(64, dtype=np.float32)[None, None, :], (10, 64, 64)).copy()
    triplets = LateralTriplets(block / 64.0, ratio=4.0, gaps=[1, 2], crop=32)
    rng = np.random.default_rng(0)
    for held_out in (False, True):
        inputs, target = triplets.batch(rng, 16, 1, held_out=held_out)
        values = np.concatenate([inputs["x0"].ravel(), inputs["x1"].ravel(), target.ravel()]) * 64
        if held_out:
            assert values.min() >= triplets.split - 0.5
        else:
            assert values.max() <= triplets.split + 0.5


def test_slices_narrower_than_the_splits_need_for_y_planes_still_give_triplets():
    # 40 px wide: the training x range (32 px) is narrower than the 37-px crops, so only planes
    # perpendicular to x (Z, Y images, 40 px wide) are cut, and held-out ones stay apart.
    block = np.broadcast_to(np.arange(40, dtype=np.float32)[None, None, :], (10, 40, 40)).copy()
    triplets = LateralTriplets(block / 40.0, ratio=4.0, gaps=[1, 2], crop=128)
    assert triplets.crop == 37 and triplets.split == 32
    rng = np.random.default_rng(0)
    for held_out in (False, True):
        inputs, target = triplets.batch(rng, 16, 1, held_out=held_out)
        assert target.shape == (16, 37, 37, 1)
        values = np.concatenate([inputs["x0"].ravel(), inputs["x1"].ravel(), target.ravel()]) * 40
        assert values.min() >= triplets.split - 0.5 if held_out else values.max() <= triplets.split + 0.5
