"""Tests of the volume engine (emzoo.upscale): recursion, resampling, tiles, streaming, I/O.

Most tests use tiny interpolators defined here whose output is a known function of the inputs:
``AverageModel`` returns (x0 + x1) / 2, so recursive midpoints are exactly linear interpolation
along z and every expected output can be computed with ``np.interp``.
"""

import errno
import os

import keras
import numpy as np
import pytest
from keras import ops

from emzoo.data.volume import VolumeWriter, open_volume, write_volume
from emzoo.errors import EmzooError, VolumeError
from emzoo.models.base import Interpolator
from emzoo.upscale import (MidpointEngine, Progress, Tiler, parse_slices, repair_volume,
                           upscale_positions, upscale_volume)


class AverageModel(Interpolator):
    """Midpoint = mean of the two inputs; refuses sizes that are not multiples (tests padding)."""

    size_multiple = 8

    def call(self, inputs, training=False):
        x0, x1 = inputs["x0"], inputs["x1"]
        assert x0.shape[1] % self.size_multiple == 0 and x0.shape[2] % self.size_multiple == 0
        assert x0.shape[-1] == self.channels
        return {"image": 0.5 * (x0 + x1)}


class TinyConvModel(Interpolator):
    """Average plus a small learned-looking term with a 5x5 receptive field (two 3x3 convs)."""

    size_multiple = 8

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        init = keras.initializers.RandomNormal(stddev=0.5, seed=1)
        self.conv1 = keras.layers.Conv2D(8, 3, padding="same", activation="tanh",
                                         kernel_initializer=init, bias_initializer=init)
        self.conv2 = keras.layers.Conv2D(self.channels, 3, padding="same", kernel_initializer=init)

    def call(self, inputs, training=False):
        x0, x1 = inputs["x0"], inputs["x1"]
        detail = self.conv2(self.conv1(ops.concatenate([x0, x1], axis=-1)))
        return {"image": 0.5 * (x0 + x1) + 0.1 * ops.tanh(detail)}


class FeatureModel(TinyConvModel):
    """A FILM-shaped model: ``call`` = ``interpolate_from_features(extract(x0), extract(x1))``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.extract_calls = 0

    def extract(self, image):
        self.extract_calls += 1  # counts traces, not images; the engine counts images
        return {"images": [image], "features": [self.conv1(ops.concatenate([image, image], -1))]}

    def interpolate_from_features(self, features0, features1, time=None):
        x0, x1 = features0["images"][0], features1["images"][0]
        detail = self.conv2(features0["features"][0] - features1["features"][0])
        return {"image": 0.5 * (x0 + x1) + 0.1 * ops.tanh(detail)}

    def call(self, inputs, training=False):
        return self.interpolate_from_features(self.extract(inputs["x0"]),
                                              self.extract(inputs["x1"]), inputs["time"])


def linear_along_z(volume, positions):
    """Reference: linear interpolation of a float volume at fractional z positions."""
    volume = np.asarray(volume, np.float64)
    lower = np.clip(np.floor(positions).astype(int), 0, len(volume) - 1)
    upper = np.clip(lower + 1, 0, len(volume) - 1)
    weight = (np.asarray(positions) - lower)[:, None, None]
    return (1 - weight) * volume[lower] + weight * volume[upper]


def random_volume(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.random(shape).astype(np.float32)
    top = np.iinfo(dtype).max
    return rng.integers(0, top + 1, shape).astype(dtype)


# ------------------------------------------------------------------------------------ factors
def test_positions_power_of_two_and_fractional():
    positions, grid = upscale_positions(5, 4)
    assert grid == 4 and len(positions) == 17 and positions[-1] == 4
    positions, grid = upscale_positions(5, 3)
    assert grid == 4 and len(positions) == 13
    positions, grid = upscale_positions(4, 2.5)  # (4 - 1) * 2.5 = 7.5 -> 8 slices up to z = 2.8
    assert grid == 4 and len(positions) == 8 and float(positions[-1]) == pytest.approx(2.8)
    assert upscale_positions(3, 1) == ([0, 1, 2], 1)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_power_of_two_factors_are_linear_for_the_average_model(factor):
    volume = random_volume((4, 16, 24))
    out = upscale_volume(volume, AverageModel(), factor=factor, progress=False)
    assert out.shape == ((4 - 1) * factor + 1, 16, 24) and out.dtype == np.float32
    expected = linear_along_z(volume, np.arange(out.shape[0]) / factor)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(out[::factor], volume)  # input slices kept exactly


@pytest.mark.parametrize("factor", [3, 5, 2.5, 1.5, 6.25])
def test_other_factors_resample_at_exact_positions_on_non_square_slices(factor):
    volume = random_volume((5, 16, 40), seed=1)  # non-square: the original tool resized H to W
    out = upscale_volume(volume, AverageModel(), factor=factor, progress=False)
    count = int(np.floor(4 * factor + 1e-9)) + 1
    assert out.shape == (count, 16, 40)
    expected = linear_along_z(volume, np.arange(count) / factor)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(out[0], volume[0])


def test_non_linear_model_is_resampled_between_the_dense_grid_slices():
    volume = random_volume((3, 16, 16), seed=2)
    model = TinyConvModel()
    dense = upscale_volume(volume, model, factor=4, progress=False)  # grid of quarters
    out = upscale_volume(volume, model, factor=3, progress=False)   # positions j / 3
    expected = linear_along_z(dense, np.arange(out.shape[0]) * 4 / 3)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_dtype_kept_and_normalised_by_dtype_range(dtype):
    if dtype == np.float32:
        volume = np.stack([np.full((8, 8), v, np.float32) for v in (0.1, 0.3, 0.9)])
    else:
        # Small values in a wide dtype: per-slice min-max would stretch them, dtype range must not.
        volume = np.stack([np.full((8, 8), v, dtype) for v in (10, 30, 90)])
    out = upscale_volume(volume, AverageModel(), factor=2, progress=False)
    assert out.dtype == dtype
    np.testing.assert_allclose(out[1].astype(float), (volume[0].astype(float) + volume[1]) / 2,
                               atol=1e-6)
    np.testing.assert_array_equal(out[::2], volume)


def test_uint8_matches_rounded_linear_reference():
    volume = random_volume((4, 24, 32), np.uint8, seed=3)
    out = upscale_volume(volume, AverageModel(), factor=3, progress=False)
    expected = linear_along_z(volume.astype(float) / 255, np.arange(out.shape[0]) / 3) * 255
    assert np.abs(out.astype(float) - expected).max() <= 0.5 + 1e-3


def test_factor_one_copies_the_volume():
    volume = random_volume((3, 8, 8), np.uint8)
    np.testing.assert_array_equal(upscale_volume(volume, AverageModel(), factor=1,
                                                 progress=False), volume)


# ---------------------------------------------------------------------------- files and voxels
def test_writes_file_with_new_voxel_size(tmp_path):
    path = str(tmp_path / "in.tif")
    write_volume(path, random_volume((3, 16, 16), np.uint8), voxel_size=(40, 4, 4))
    summary = upscale_volume(path, AverageModel(), factor=4, output=str(tmp_path / "out.tif"),
                             progress=False)
    assert summary["output_shape"] == (9, 16, 16) and summary["voxel_size"] == (10, 4, 4)
    with open_volume(str(tmp_path / "out.tif")) as out:
        assert out.shape == (9, 16, 16) and out.dtype == np.uint8
        assert out.voxel_size == pytest.approx((10, 4, 4))
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "out.tif"]  # no temporary left behind


def test_isotropic_uses_voxel_size_and_hdf5_output(tmp_path):
    volume = random_volume((3, 16, 20), np.uint16)
    out_path = str(tmp_path / "iso.h5")
    summary = upscale_volume(volume, AverageModel(), isotropic=True, voxel_size=(50, 4, 4),
                             output=out_path, progress=False)
    assert summary["factor"] == 12.5 and summary["output_shape"] == (26, 16, 20)
    with open_volume(out_path + ":/volumes/raw") as out:
        assert out.voxel_size == pytest.approx((4, 4, 4)) and out.dtype == np.uint16
        expected = linear_along_z(volume.astype(float), np.arange(26) / 12.5)
        assert np.abs(out.read_range(0, 26).astype(float) - expected).max() <= 0.5 + 1e-3


def test_isotropic_without_voxel_size_says_how_to_give_it():
    with pytest.raises(VolumeError, match="--voxel-size"):
        upscale_volume(random_volume((3, 8, 8)), AverageModel(), isotropic=True, progress=False)


def test_existing_output_is_not_overwritten(tmp_path):
    path = tmp_path / "out.tif"
    path.write_bytes(b"keep me")
    with pytest.raises(VolumeError, match="already exists"):
        upscale_volume(random_volume((3, 8, 8)), AverageModel(), output=str(path), progress=False)
    assert path.read_bytes() == b"keep me"
    upscale_volume(random_volume((3, 8, 8)), AverageModel(), output=str(path), overwrite=True,
                   progress=False)
    assert open_volume(str(path)).shape == (5, 8, 8)


def test_disk_full_leaves_no_partial_output_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.tif"
    write_volume(str(path), np.zeros((2, 8, 8), np.uint8))
    before = path.read_bytes()
    original_write = VolumeWriter.write

    def failing_write(self, *args):
        if args[0] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original_write(self, *args)

    monkeypatch.setattr(VolumeWriter, "write", failing_write)
    with pytest.raises(VolumeError, match="ran out of space"):
        upscale_volume(random_volume((3, 8, 8), np.uint8), AverageModel(), output=str(path),
                       overwrite=True, progress=False)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.tif"]


@pytest.mark.parametrize("kwargs, match", [
    ({"factor": 0.5}, "factor"), ({"factor": "abc"}, "factor"), ({"factor": float("nan")}, "factor"),
    ({"tile": 4}, "size multiple"), ({"batch_size": 0}, "batch_size"),
    ({"tile": 16, "overlap": 16}, "overlap"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(EmzooError, match=match):
        upscale_volume(random_volume((3, 8, 8)), AverageModel(), progress=False, **kwargs)


def test_single_slice_is_refused():
    with pytest.raises(VolumeError, match="at least 2"):
        upscale_volume(random_volume((1, 8, 8)), AverageModel(), progress=False)


def test_corrupt_file_is_a_volume_error(tmp_path):
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\x00garbage" * 3)
    with pytest.raises(VolumeError):
        upscale_volume(str(path), AverageModel(), progress=False)


# ------------------------------------------------------------------------------------ channels
def test_rgb_model_gets_replicated_grey_and_is_averaged_back():
    volume = random_volume((3, 8, 16))
    out = upscale_volume(volume, AverageModel(channels=3), factor=2, progress=False)
    np.testing.assert_allclose(out[1], (volume[0] + volume[1]) / 2, atol=1e-6)


def test_model_with_unusable_channels_is_refused():
    model = AverageModel()
    model.channels = 2
    with pytest.raises(EmzooError, match="2-channel"):
        upscale_volume(random_volume((3, 8, 8)), model, progress=False)


# ----------------------------------------------------------------------------------- tiles
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
    whole = upscale_volume(volume, model, factor=2, progress=False)
    tiled = upscale_volume(volume, model, factor=2, tile=256, overlap=32, progress=False)
    inner = (slice(None), slice(16, -16), slice(16, -16))
    difference = np.abs(whole[inner].astype(int) - tiled[inner].astype(int))
    assert difference.max() <= 1  # 1/255; in fact identical but for float rounding
    assert difference.mean() < 1e-3


def test_batch_size_does_not_change_the_result():
    volume = random_volume((4, 40, 24), seed=5)
    model = TinyConvModel()
    one = upscale_volume(volume, model, factor=4, batch_size=1, progress=False)
    many = upscale_volume(volume, model, factor=4, batch_size=5, tile=16, overlap=8,
                          progress=False)
    batched = upscale_volume(volume, model, factor=4, batch_size=5, progress=False)
    np.testing.assert_allclose(one, batched, atol=1e-5)
    assert many.shape == one.shape


# ---------------------------------------------------------------------------- feature reuse
def test_feature_reuse_equals_pairwise_and_extracts_each_slice_once():
    volume = random_volume((5, 16, 24), seed=6)
    model = FeatureModel()
    naive = MidpointEngine(model, 16, 24, batch_size=3, reuse_features=False)
    reused = MidpointEngine(model, 16, 24, batch_size=3)
    assert reused.reuse_features
    results = []
    for engine in (naive, reused):
        dense = {4 * z: volume[z][..., None] for z in range(5)}
        engine.fill_grid(dense, 0, 16, levels=2)
        results.append(np.stack([dense[k] for k in range(17)]))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
    # 5 inputs + the 4 first-level midpoints; the 8 last-level midpoints are never extracted.
    assert reused.calls["extract"] == 9 and reused.calls["pairs"] == 12


def test_feature_reuse_through_upscale_volume_with_tiles():
    volume = random_volume((4, 40, 56), seed=7)
    model = FeatureModel()
    args = dict(factor=4, tile=24, overlap=8, batch_size=4, progress=False)
    np.testing.assert_allclose(upscale_volume(volume, model, reuse_features=True, **args),
                               upscale_volume(volume, model, reuse_features=False, **args),
                               atol=1e-5)


def test_small_film_feature_reuse_equals_pairwise():
    film = pytest.importorskip("emzoo.models.film")
    model = film.FILM(pyramid_levels=3, fusion_pyramid_levels=3, specialized_levels=1,
                      sub_levels=2, filters=4, flow_convs=[1, 1], flow_filters=[4, 4], channels=1)
    volume = random_volume((3, 18, 34), np.uint8, seed=8)  # not multiples of 4: padded
    args = dict(factor=4, batch_size=2, progress=False)
    reused = upscale_volume(volume, model, reuse_features=True, **args)
    naive = upscale_volume(volume, model, reuse_features=False, **args)
    np.testing.assert_array_equal(reused, naive)
    # And each engine midpoint equals one plain model call on the padded pair.
    engine = MidpointEngine(model, 18, 34, reuse_features=True)
    import keras

    # FILM's calls are XLA-compiled by default on TensorFlow (and still match the plain call).
    assert engine.jit_compile == (keras.backend.backend() == "tensorflow")
    assert not MidpointEngine(model, 18, 34, reuse_features=False).jit_compile
    slices = {0: volume[0, ..., None] / 255.0, 2: volume[1, ..., None] / 255.0}
    middle = engine.midpoints([(0, 2)], slices)[0]
    padded = [np.pad(slices[k], ((0, 2), (0, 2), (0, 0)), mode="reflect")[None] for k in (0, 2)]
    direct = model({"x0": padded[0].astype("float32"), "x1": padded[1].astype("float32"),
                    "time": np.full((1, 1), 0.5, "float32")})["image"]
    np.testing.assert_allclose(middle, np.clip(np.asarray(direct)[0, :18, :34], 0, 1), atol=1e-5)


# -------------------------------------------------------------------------------- streaming
class RecordingVolume:
    """A Volume that logs reads, to check that output is written while input is still read."""

    def __init__(self, array, events):
        from emzoo.data.volume import ArrayVolume

        self.inner, self.events = ArrayVolume(array), events
        self.shape, self.dtype, self.voxel_size = self.inner.shape, self.inner.dtype, None

    def read(self, z):
        self.events.append(("read", z))
        return self.inner.read(z)

    def slice(self, z):
        self.events.append(("read", z))
        return self.inner.slice(z)


def test_streams_reads_and_writes_in_order(tmp_path, monkeypatch):
    events = []
    original_write = VolumeWriter.write

    def logging_write(self, z, raw):
        events.append(("write", z))
        return original_write(self, z, raw)

    monkeypatch.setattr(VolumeWriter, "write", logging_write)
    volume = RecordingVolume(random_volume((12, 8, 8), np.uint8), events)
    upscale_volume(volume, AverageModel(), factor=2, batch_size=2, output=str(tmp_path / "o.tif"),
                   progress=False)
    writes = [z for kind, z in events if kind == "write"]
    assert writes == list(range(23))
    first_write = events.index(("write", 0))
    last_read = max(i for i, (kind, _) in enumerate(events) if kind == "read")
    assert first_write < last_read  # written while reading, not after loading everything
    slices_read = [z for kind, z in events[:first_write] if kind == "read"]
    assert max(slices_read) <= 3  # only the first chunk had been read


# ------------------------------------------------------------------------------------- repair
def test_parse_slices():
    assert parse_slices("3,1, 7-9") == [1, 3, 7, 8, 9]
    with pytest.raises(EmzooError):
        parse_slices("a,b")


def test_repair_single_and_runs_of_slices():
    volume = random_volume((10, 16, 24), seed=9)
    damaged = [2, 5, 6, 7] + [8]  # 2 alone; 5..8 is a run of four (positions k / 5)
    out = repair_volume(volume, damaged, AverageModel(), progress=False)
    np.testing.assert_allclose(out[2], (volume[1] + volume[3]) / 2, atol=1e-6)
    for k, z in enumerate(range(5, 9), start=1):
        np.testing.assert_allclose(out[z], (1 - k / 5) * volume[4] + k / 5 * volume[9],
                                   atol=1e-6)
    good = [z for z in range(10) if z not in damaged]
    np.testing.assert_array_equal(out[good], volume[good])


def test_repair_writes_file_and_refuses_edges(tmp_path):
    volume = random_volume((5, 8, 8), np.uint8)
    summary = repair_volume(volume, "2", AverageModel(), output=str(tmp_path / "r.tif"),
                            voxel_size=(10, 10, 10), progress=False)
    assert summary["repaired"] == [2]
    assert open_volume(str(tmp_path / "r.tif")).voxel_size == pytest.approx((10, 10, 10))
    with pytest.raises(EmzooError, match="both sides"):
        repair_volume(volume, [0], AverageModel(), progress=False)
    with pytest.raises(EmzooError, match="outside"):
        repair_volume(volume, [7], AverageModel(), progress=False)


# ------------------------------------------------------------------------- progress and sample
def test_progress_line_shows_done_rate_and_eta():
    import io

    stream = io.StringIO()
    bar = Progress(10, "upscale", stream=stream, interval=0)
    bar.update(4)
    bar.close()
    text = stream.getvalue()
    assert "4/10 slices" in text and "slices/s" in text and "ETA" in text
    assert bar.done == 4 and text.endswith("\n")


def test_bundled_sample_is_a_small_fibsem_stack_with_voxel_size():
    import emzoo.samples

    assert emzoo.samples.resolve_input("sample") == emzoo.samples.sample_path()
    assert emzoo.samples.resolve_input("stack.tif") == "stack.tif"
    with open_volume(emzoo.samples.sample_path()) as sample:
        assert sample.shape == (17, 256, 256) and sample.dtype == np.uint8
        assert sample.voxel_size == pytest.approx((10, 10, 10))
