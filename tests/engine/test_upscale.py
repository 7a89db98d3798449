"""Tests of emzoo.engine.upscale: recursion, resampling, dtypes, files and streaming.

Most tests use :class:`emzoo_test_helpers.MeanModel`, whose midpoint is (x0 + x1) / 2, so
recursive midpoints are exactly linear interpolation along z and every expected output can be
computed with :func:`emzoo_test_helpers.linear_along_z`.
"""

import errno
import os

import numpy as np
import pytest

from emzoo.data.volumes import ArrayVolume, VolumeWriter, open_volume, write_volume
from emzoo.engine import upscale_volume
from emzoo.errors import EmzooError, VolumeError
from emzoo_test_helpers import MeanModel, TinyConvModel, linear_along_z, random_volume


# ------------------------------------------------------------------------------------ factors
@pytest.mark.parametrize("factor", [2, 4, 8])
def test_power_of_two_factors_are_linear_for_the_average_model(factor):
    volume = random_volume((4, 16, 24))
    out = upscale_volume(volume, MeanModel(), factor=factor, progress=False)["array"]
    assert out.shape == ((4 - 1) * factor + 1, 16, 24) and out.dtype == np.float32
    expected = linear_along_z(volume, np.arange(out.shape[0]) / factor)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(out[::factor], volume)  # input slices kept exactly


@pytest.mark.parametrize("factor", [3, 5, 2.5, 1.5, 6.25])
def test_other_factors_resample_at_exact_positions_on_non_square_slices(factor):
    volume = random_volume((5, 16, 40), seed=1)  # non-square: the original tool resized H to W
    out = upscale_volume(volume, MeanModel(), factor=factor, progress=False)["array"]
    count = int(np.floor(4 * factor + 1e-9)) + 1
    assert out.shape == (count, 16, 40)
    expected = linear_along_z(volume, np.arange(count) / factor)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_array_equal(out[0], volume[0])


def test_non_linear_model_is_resampled_between_the_dense_grid_slices():
    volume = random_volume((3, 16, 16), seed=2)
    model = TinyConvModel()
    dense = upscale_volume(volume, model, factor=4, progress=False)["array"]  # grid of quarters
    out = upscale_volume(volume, model, factor=3, progress=False)["array"]  # positions j / 3
    expected = linear_along_z(dense, np.arange(out.shape[0]) * 4 / 3)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_dtype_kept_and_normalised_by_dtype_range(dtype):
    if dtype == np.float32:
        volume = np.stack([np.full((8, 8), v, np.float32) for v in (0.1, 0.3, 0.9)])
    else:
        # Small values in a wide dtype: per-slice min-max would stretch them, dtype range must not.
        volume = np.stack([np.full((8, 8), v, dtype) for v in (10, 30, 90)])
    out = upscale_volume(volume, MeanModel(), factor=2, progress=False)["array"]
    assert out.dtype == dtype
    np.testing.assert_allclose(out[1].astype(float), (volume[0].astype(float) + volume[1]) / 2,
                               atol=1e-6)
    np.testing.assert_array_equal(out[::2], volume)


def test_uint8_matches_rounded_linear_reference():
    volume = random_volume((4, 24, 32), np.uint8, seed=3)
    out = upscale_volume(volume, MeanModel(), factor=3, progress=False)["array"]
    expected = linear_along_z(volume.astype(float) / 255, np.arange(out.shape[0]) / 3) * 255
    assert np.abs(out.astype(float) - expected).max() <= 0.5 + 1e-3


def test_factor_one_copies_the_volume():
    volume = random_volume((3, 8, 8), np.uint8)
    np.testing.assert_array_equal(upscale_volume(volume, MeanModel(), factor=1,
                                                 progress=False)["array"], volume)


# ---------------------------------------------------------------------------- files and voxels
def test_writes_file_with_new_voxel_size(tmp_path):
    path = str(tmp_path / "in.tif")
    write_volume(path, random_volume((3, 16, 16), np.uint8), voxel_size=(40, 4, 4))
    summary = upscale_volume(path, MeanModel(), factor=4, output=str(tmp_path / "out.tif"),
                             progress=False)
    assert summary["output_shape"] == (9, 16, 16) and summary["voxel_size"] == (10, 4, 4)
    with open_volume(str(tmp_path / "out.tif")) as out:
        assert out.shape == (9, 16, 16) and out.dtype == np.uint8
        assert out.voxel_size == pytest.approx((10, 4, 4))
    assert sorted(os.listdir(tmp_path)) == ["in.tif", "out.tif"]  # no temporary left behind


def test_isotropic_uses_voxel_size_and_hdf5_output(tmp_path):
    volume = random_volume((3, 16, 20), np.uint16)
    out_path = str(tmp_path / "iso.h5")
    summary = upscale_volume(volume, MeanModel(), isotropic=True, voxel_size=(50, 4, 4),
                             output=out_path, progress=False)
    assert summary["factor"] == 12.5 and summary["output_shape"] == (26, 16, 20)
    with open_volume(out_path + ":/volumes/raw") as out:
        assert out.voxel_size == pytest.approx((4, 4, 4)) and out.dtype == np.uint16
        expected = linear_along_z(volume.astype(float), np.arange(26) / 12.5)
        assert np.abs(out.read_range(0, 26).astype(float) - expected).max() <= 0.5 + 1e-3


def test_isotropic_without_voxel_size_says_how_to_give_it():
    # In the library's words (the argument); the apps word it as their flag.
    with pytest.raises(VolumeError, match="`voxel_size`, z,y,x in nm") as error:
        upscale_volume(random_volume((3, 8, 8)), MeanModel(), isotropic=True, progress=False)
    assert "--" not in str(error.value)


def test_summary_line_is_returned_not_printed(capsys):
    # The apps print one summary line of their own (stdout); the engine prints only progress.
    result = upscale_volume(random_volume((3, 8, 8), np.uint8), MeanModel(), factor=2)
    captured = capsys.readouterr()
    assert "upscale x2: (3, 8, 8) -> (5, 8, 8) uint8, voxel unknown -> unknown" in result["summary"]
    assert "upscale x2" not in captured.err + captured.out


def test_existing_output_is_not_overwritten(tmp_path):
    path = tmp_path / "out.tif"
    path.write_bytes(b"keep me")
    with pytest.raises(VolumeError, match="already exists"):
        upscale_volume(random_volume((3, 8, 8)), MeanModel(), output=str(path), progress=False)
    assert path.read_bytes() == b"keep me"
    upscale_volume(random_volume((3, 8, 8)), MeanModel(), output=str(path), overwrite=True,
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
        upscale_volume(random_volume((3, 8, 8), np.uint8), MeanModel(), output=str(path),
                       overwrite=True, progress=False)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["out.tif"]


@pytest.mark.parametrize("kwargs, match", [
    ({"factor": 0.5}, "factor"), ({"factor": "abc"}, "factor"), ({"factor": float("nan")}, "factor"),
    ({"tile": 4}, "size multiple"), ({"batch_size": 0}, "batch_size"),
    ({"tile": 16, "overlap": 16}, "overlap"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(EmzooError, match=match):
        upscale_volume(random_volume((3, 8, 8)), MeanModel(), progress=False, **kwargs)


# -------------------------------------------------------------------------------- streaming
class RecordingVolume:
    """A Volume that logs reads, to check that output is written while input is still read."""

    def __init__(self, array, events):
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
    upscale_volume(volume, MeanModel(), factor=2, batch_size=2, output=str(tmp_path / "o.tif"),
                   progress=False, calibrate=False)
    writes = [z for kind, z in events if kind == "write"]
    assert writes == list(range(23))
    first_write = events.index(("write", 0))
    last_read = max(i for i, (kind, _) in enumerate(events) if kind == "read")
    assert first_write < last_read  # written while reading, not after loading everything
    slices_read = [z for kind, z in events[:first_write] if kind == "read"]
    assert max(slices_read) <= 3  # only the first chunk had been read


def test_calibration_reads_a_few_slices_before_the_job_streams(tmp_path, monkeypatch):
    from emzoo.engine.calibration import SAMPLES

    events = []
    original_write = VolumeWriter.write
    monkeypatch.setattr(VolumeWriter, "write", lambda self, z, raw: (
        events.append(("write", z)), original_write(self, z, raw)))
    volume = RecordingVolume(random_volume((40, 8, 8), np.uint8), events)
    done = upscale_volume(volume, TinyConvModel(), factor=2, output=str(tmp_path / "o.tif"),
                          progress=False)
    assert len(done["residual_scales"]) == 1
    before = [z for kind, z in events[:events.index(("write", 0))] if kind == "read"]
    # three slices a place, each read once for every level, then the first chunk's
    assert 0 < len(before) <= 2 * 3 * SAMPLES + 4


def test_emzoo_upscale_volume_is_the_engine_function():
    import emzoo

    assert emzoo.upscale_volume is upscale_volume  # help() shows its signature and docstring


# ------------------------------------------------------------------ float data outside [0, 1]
def _wide_float_stack():
    """float32 slices in [-0.46, 1.51] (each slice varies, so midpoints are not constant)."""
    ramp = np.linspace(0.0, 1.0, 8 * 8, dtype=np.float32).reshape(8, 8)
    return np.stack([-0.46 + 0.5 * ramp, 1.51 - 0.5 * ramp, 0.3 + 0.0 * ramp]).astype(np.float32)


def test_float_data_outside_unit_range_keeps_its_range(tmp_path):
    volume = _wide_float_stack()
    path = str(tmp_path / "wide.tif")
    write_volume(path, volume)
    for source in (volume, path):
        out = upscale_volume(source, MeanModel(), factor=2, progress=False)["array"]
        assert out.dtype == np.float32
        assert out.min() == volume.min() and out.max() == volume.max()  # range matches
        np.testing.assert_array_equal(out[::2], volume)  # kept slices bit-identical
        np.testing.assert_allclose(out[1::2], (volume[:-1] + volume[1:]) / 2, atol=1e-6)  # not clipped
    result = upscale_volume(path, MeanModel(), factor=4, output=str(tmp_path / "out.tif"),
                            progress=False)
    with open_volume(result["output"]) as written:
        out = written.read_range(0, 9)
    np.testing.assert_array_equal(out[::4], volume)
    np.testing.assert_allclose(out, linear_along_z(volume, np.arange(9) / 4), atol=1e-6)


def test_float_nan_is_refused_before_any_output(tmp_path):
    volume = _wide_float_stack()
    volume[2, 3, 3] = np.nan
    with pytest.raises(VolumeError, match="NaN or Inf"):
        upscale_volume(volume, MeanModel(), factor=2, output=str(tmp_path / "o.tif"), progress=False)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------- bounded output size
def test_huge_factor_is_refused_before_any_work(tmp_path, monkeypatch):
    import emzoo.engine.runner as runner_module

    def no_engine(*args, **kwargs):
        raise AssertionError("the model must not be prepared for an output that is refused")

    monkeypatch.setattr(runner_module, "midpoint_engine", no_engine)
    volume = random_volume((3, 64, 64), np.uint8)
    with pytest.raises(VolumeError) as error:
        upscale_volume(volume, MeanModel(), factor=1e9, output=str(tmp_path / "o.tif"),
                       progress=False)
    assert "\n" not in str(error.value)
    with pytest.raises(VolumeError, match=r"would be 7\.45 TiB \(2000000001 x 64 x 64 uint8\), more "
                                          r"than the limit of 1 TiB \(EMZOO_MAX_OUTPUT_BYTES\)"):
        upscale_volume(volume, MeanModel(), factor="1e9", output=str(tmp_path / "o.tif"),
                       progress=False)
    with pytest.raises(VolumeError, match="more than the limit"):  # in memory alike
        upscale_volume(volume, MeanModel(), factor=1e300, progress=False)
    assert os.listdir(tmp_path) == []


def test_output_larger_than_the_free_disk_names_both_sizes(tmp_path, monkeypatch):
    import collections

    from emzoo.engine import sources

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(sources.shutil, "disk_usage", lambda folder: usage(10**6, 0, 10**6))
    with pytest.raises(VolumeError, match=r"would be 3 MiB \(3 x 512 x 512 float32\), more than "
                                          r"the free space in .* \(977 KiB\)"):
        upscale_volume(random_volume((2, 512, 512)), MeanModel(), factor=2,
                       output=str(tmp_path / "o.tif"), progress=False)
    assert os.listdir(tmp_path) == []


def test_output_limit_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EMZOO_MAX_OUTPUT_BYTES", "1000")
    with pytest.raises(VolumeError, match=r"more than the limit of 1000 bytes"):
        upscale_volume(random_volume((3, 16, 16), np.uint8), MeanModel(), factor=2, progress=False)
    monkeypatch.setenv("EMZOO_MAX_OUTPUT_BYTES", "lots")
    with pytest.raises(EmzooError, match="EMZOO_MAX_OUTPUT_BYTES"):
        upscale_volume(random_volume((3, 16, 16), np.uint8), MeanModel(), factor=2, progress=False)


# ----------------------------------------------------------------------------- the result
def test_result_is_the_same_kind_with_or_without_output(tmp_path):
    volume = random_volume((3, 8, 8), np.uint8)
    in_memory = upscale_volume(volume, MeanModel(), factor=2, voxel_size=(40, 4, 4), progress=False)
    on_disk = upscale_volume(volume, MeanModel(), factor=2, voxel_size=(40, 4, 4),
                             output=str(tmp_path / "o.tif"), progress=False)
    assert set(in_memory) == set(on_disk)
    assert in_memory["output"] is None and on_disk["array"] is None
    assert on_disk["output"] == str(tmp_path / "o.tif")
    for key in ("input_shape", "output_shape", "dtype", "voxel_size", "factor"):
        assert in_memory[key] == on_disk[key], key
    assert in_memory["output_shape"] == (5, 8, 8) and in_memory["voxel_size"] == (20, 4, 4)
    with open_volume(on_disk["output"]) as written:
        np.testing.assert_array_equal(written.read_range(0, 5), in_memory["array"])
