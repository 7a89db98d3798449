"""Where two neighbouring slices agree (margins, padding, flat regions) the new slice agrees with them."""

import numpy as np
import pytest

from emzoo.engine.midpoint import MidpointEngine, keep_flat_regions


def reference(x0, x1, midpoint, tolerance=1 / 255, window=5, ramp=2):
    """Pixel by pixel: agree = inside some all-equal window x window square (edges repeated);
    weight = max(0, 1 - d / (ramp + 1)), d the chessboard distance to the nearest agreeing pixel."""
    height, width = x0.shape
    equal = np.abs(x0 - x1) <= tolerance + 1e-6
    padded = np.pad(equal, window // 2, mode="edge")
    core = np.array([[padded[y:y + window, x:x + window].all() for x in range(width)]
                     for y in range(height)])
    padded = np.pad(core, window // 2, mode="edge")
    agree = np.array([[padded[y:y + window, x:x + window].any() for x in range(width)]
                      for y in range(height)]) & equal
    out = midpoint.astype(np.float64).copy()
    points = np.argwhere(agree)
    for y in range(height):
        for x in range(width):
            if len(points) == 0:
                continue
            distance = np.abs(points - (y, x)).max(axis=1).min()
            weight = max(0.0, 1.0 - distance / (ramp + 1))
            out[y, x] += weight * (0.5 * (x0[y, x] + x1[y, x]) - midpoint[y, x])
    return out


def test_matches_the_numpy_reference_on_a_margin_and_random_tissue():
    rng = np.random.default_rng(0)
    x0, x1 = rng.random((2, 16, 20)).astype(np.float32)
    x0[:, :6] = x1[:, :6] = 0.0  # a black margin
    x0[10:13, 15:18] = x1[10:13, 15:18] = 0.3  # a 3 x 3 equal patch: too small to count
    x1[3, 12] = x0[3, 12]  # one coincidentally equal pixel in tissue
    midpoint = rng.random((16, 20)).astype(np.float32)
    got = keep_flat_regions(x0, x1, midpoint)
    np.testing.assert_allclose(got, reference(x0, x1, midpoint), atol=1e-6)
    assert np.all(got[:, :6] == 0.0)  # the whole margin, its edge pixels included
    np.testing.assert_array_equal(got[:, 9:], midpoint[:, 9:])  # tissue past the ramp untouched
    assert got.dtype == np.float32


def test_constant_and_nearly_equal_neighbours_give_their_value_and_channels_are_kept():
    flat = np.full((12, 12, 1), 7 / 255, np.float32)
    painted = np.random.default_rng(1).random((12, 12, 1)).astype(np.float32)
    np.testing.assert_allclose(keep_flat_regions(flat, flat, painted), flat, atol=1e-7)
    np.testing.assert_allclose(keep_flat_regions(flat, flat + 1 / 255, painted), flat + 0.5 / 255, atol=1e-6)
    apart = keep_flat_regions(flat, flat + 2 / 255, painted)  # two grey levels apart: the model's
    np.testing.assert_array_equal(apart, painted)


class PaintingModel:
    """Paints 0.3 everywhere, like a model that invents structure in flat regions."""

    size_multiple, channels = 1, 1

    def __call__(self, inputs, training=False):
        return {"image": np.full(np.shape(inputs["x0"]), 0.3, np.float32)}


@pytest.mark.parametrize("tile", [None, 8])
def test_the_engine_keeps_margins_in_every_new_slice(tile):
    engine = MidpointEngine(PaintingModel(), 16, 16, tile=tile, overlap=2, jit_compile=False)
    first = np.full((16, 16, 1), 0.6, np.float32)
    last = np.full((16, 16, 1), 0.8, np.float32)
    first[:, :5] = last[:, :5] = 0.0  # margin
    slices = engine.fill_grid({0: first, 4: last}, 0, 4, 2)
    for key in (1, 2, 3):
        assert np.all(slices[key][:, :5] == 0.0)
        np.testing.assert_allclose(slices[key][:, 8:], 0.3)  # tissue: the model's output
