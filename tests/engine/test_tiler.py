"""Tests of emzoo.engine.tiler: splitting, padding and blending of tiles."""

import numpy as np

from emzoo.engine import Tiler, upscale_volume
from emzoo_test_helpers import TinyConvModel, random_volume


def test_tiler_split_merge_round_trip_and_padding():
    image = np.random.default_rng(0).random((100, 150, 1)).astype(np.float32)
    tiler = Tiler(100, 150, tile=60, overlap=16, multiple=8)
    tiles = tiler.split(image)
    assert tiles.shape[1:] == (64, 64, 1)  # 60 padded to the multiple 8
    np.testing.assert_allclose(tiler.merge(tiles), image, atol=1e-6)
    assert len(Tiler(100, 150, tile=None, multiple=8)) == 1


def test_tiled_equals_untiled_for_a_model_with_small_receptive_field():
    volume = random_volume((2, 1024, 1024), np.uint8, seed=4)
    model = TinyConvModel()
    whole = upscale_volume(volume, model, factor=2, progress=False)["array"]
    tiled = upscale_volume(volume, model, factor=2, tile=256, overlap=32, progress=False)["array"]
    inner = (slice(None), slice(16, -16), slice(16, -16))
    difference = np.abs(whole[inner].astype(int) - tiled[inner].astype(int))
    assert difference.max() <= 1  # 1/255; in fact identical but for float rounding
    assert difference.mean() < 1e-3
