"""Where two neighbouring slices agree (margins, padding, flat regions) the new slice agrees with them,
and the model sees margins filled with the tissue mirrored across their edge."""

import numpy as np
import pytest

from emzoo.engine.midpoint import MidpointEngine, fill_margins, keep_flat_regions


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


def reference_fill(image, tolerance=1 / 255, window=5):
    """Row by row, then column by column: a flat run from an edge mirrored across its end."""
    height, width = image.shape
    half = window // 2
    padded = np.pad(image, half, mode="edge")
    core = np.array([[np.ptp(padded[y:y + window, x:x + window]) <= tolerance + 1e-6
                      for x in range(width)] for y in range(height)])
    padded = np.pad(core, half, mode="edge")
    flat = np.array([[padded[y:y + window, x:x + window].any() for x in range(width)]
                     for y in range(height)])

    def mirror(values, mask):
        out, n = values.copy(), len(values)
        if mask.all():
            return out
        first = int(np.argmax(~mask))
        last = n - int(np.argmax(~mask[::-1]))
        for x in range(first):
            out[x] = values[min(max(2 * first - 1 - x, 0), n - 1)]
        for x in range(last, n):
            out[x] = values[min(max(2 * last - 1 - x, 0), n - 1)]
        return out

    out = np.stack([mirror(image[y], flat[y]) for y in range(height)])
    full_rows = flat.all(axis=1)
    if full_rows.any() and not full_rows.all():
        out = np.stack([mirror(out[:, x], full_rows) for x in range(width)], axis=1)
    return out


def test_fill_margins_matches_the_reference_on_edge_margins_and_keeps_inner_flat_regions():
    rng = np.random.default_rng(2)
    image = rng.random((18, 22)).astype(np.float32)
    image[:, :6] = 0.0  # a left margin
    image[:4, :] = 0.0  # a top margin, rows flat throughout
    for y in range(4, 18):  # a wedge on the right, as a rotated alignment leaves
        image[y, 22 - (y // 3):] = 0.0
    image[9:15, 10:16] = 1.0  # a flat region inside the tissue: left as it is
    filled = fill_margins(image)
    np.testing.assert_array_equal(filled, reference_fill(image))
    np.testing.assert_array_equal(filled[9:15, 10:16], 1.0)
    np.testing.assert_array_equal(filled[4:, 6:15], image[4:, 6:15])  # tissue itself untouched
    assert filled[6, 0] == image[6, 11] and filled[0, 8] == image[7, 8]  # mirrored across the edges
    np.testing.assert_array_equal(fill_margins(image[..., None])[..., 0], filled)


def test_fill_margins_leaves_tissue_and_constant_slices_alone():
    tissue = np.random.default_rng(3).random((12, 12)).astype(np.float32)
    np.testing.assert_array_equal(fill_margins(tissue), tissue)
    constant = np.full((12, 12), 0.25, np.float32)
    np.testing.assert_array_equal(fill_margins(constant), constant)


class RecordingModel:
    """Returns the mean of its inputs and records what it was shown."""

    size_multiple, channels = 1, 1

    def __init__(self):
        self.seen = []

    def __call__(self, inputs, training=False):
        self.seen.append(np.asarray(inputs["x0"]))
        return {"image": 0.5 * (np.asarray(inputs["x0"]) + np.asarray(inputs["x1"]))}


def test_the_model_sees_filled_margins_and_the_new_slice_keeps_them():
    rng = np.random.default_rng(4)
    first, last = rng.random((2, 16, 16, 1)).astype(np.float32)
    first[:, :5] = last[:, :5] = 0.0
    model = RecordingModel()
    engine = MidpointEngine(model, 16, 16, jit_compile=False)
    middle, = engine.midpoints([(0, 1)], {0: first, 1: last})
    assert model.seen[0][0, :, :5].min() > 0.0  # the model saw tissue, not the margin
    np.testing.assert_array_equal(middle[:, :5], 0.0)
    np.testing.assert_allclose(middle[:, 8:], 0.5 * (first + last)[:, 8:], atol=1e-6)


def test_a_window_of_a_slice_gets_the_values_of_the_whole_slice():
    """The blockwise engine passes parts of slices (a tiler window): a flat region cut by the
    part's edge is no margin there either, and the new slice's margins are the same."""
    from emzoo.engine.tiler import Tiler

    rng = np.random.default_rng(5)
    first, last = rng.random((2, 32, 32, 1)).astype(np.float32)
    first[:, :4] = last[:, :4] = 0.0  # a margin at the slice's left edge
    first[2:12, 6:22] = 1.0  # a flat region inside the tissue of one slice only
    engine = MidpointEngine(RecordingModel(), 32, 32, tile=16, overlap=4, jit_compile=False)
    whole, = engine.midpoints([(0, 1)], {0: first, 1: last})
    for region in ((0, 16, 16, 32), (8, 24, 0, 16), (16, 32, 10, 26)):
        y0, y1, x0, x1 = engine.tiler.span(*region)
        window = engine.tiler.window(*region)
        part = MidpointEngine(RecordingModel(), 32, 32, tile=16, overlap=4, jit_compile=False)
        part.tiler = window
        got, = part.midpoints([(0, 1)], {0: first[y0:y1, x0:x1], 1: last[y0:y1, x0:x1]})
        np.testing.assert_allclose(got, whole[region[0]:region[1], region[2]:region[3]], atol=1e-6)
