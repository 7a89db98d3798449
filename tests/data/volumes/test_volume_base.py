"""emzoo.data.volumes.base: normalisation, dtype and voxel-size checks, the Volume contract."""

import numpy as np
import pytest

from emzoo.data import volumes as V
from emzoo.errors import VolumeError


def test_normalise_by_dtype_and_percentiles():
    assert V.normalise(np.array([0, 65535], np.uint16)).tolist() == [0.0, 1.0]
    assert V.normalise(np.array([0.25], np.float32)).tolist() == [0.25]
    x = np.arange(101, dtype=np.uint8)
    out = V.normalise(x, percentiles=(10, 90))
    assert out[10] == 0.0 and out[90] == 1.0 and abs(out[50] - 0.5) < 1e-6
    np.testing.assert_array_equal(V.denormalise(V.normalise(x), np.uint8), x)
    u16 = np.array([0, 1, 1000, 65535], np.uint16)
    np.testing.assert_array_equal(V.denormalise(V.normalise(u16), np.uint16), u16)


def test_percentile_window_is_per_volume_not_per_slice():
    array = np.stack([np.full((4, 4), 50, np.uint8), np.full((4, 4), 150, np.uint8)])
    array[0, 0, 0], array[1, 0, 0] = 0, 255
    vol = V.open_volume(array, percentiles=(0, 100))
    assert vol.slice(0)[1, 1] == pytest.approx(50 / 255) and vol.slice(1)[1, 1] == pytest.approx(150 / 255)


def test_check_dtype_refuses_what_cannot_be_written():
    assert V.check_dtype("uint16") == np.uint16
    with pytest.raises(VolumeError, match="Unsupported data type.*Received: dtype='int64'"):
        V.check_dtype("int64")


@pytest.mark.parametrize("bad", [(40, 4), (40, 0, 4), (40, float("nan"), 4), "abc", 5])
def test_check_voxel_size_is_three_positive_numbers(bad):
    assert V.check_voxel_size([40, 4, "4.5"]) == (40.0, 4.0, 4.5)
    assert V.check_voxel_size(None) is None
    with pytest.raises(VolumeError, match=r"`voxel_size`\. Expected three positive numbers .* Received: "):
        V.check_voxel_size(bad)


def test_array_volume_reads_ranges_crops_and_refuses_bad_indices():
    array = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    vol = V.ArrayVolume(array, voxel_size=(40, 4, 4))
    assert vol.voxel_size == (40.0, 4.0, 4.0) and len(vol) == 3
    np.testing.assert_array_equal(vol.read_range(1, 3), array[1:3])
    np.testing.assert_array_equal(vol.read_crop(-1, 1, 2, 2, 3), array[2, 1:3, 2:5])
    with pytest.raises(VolumeError, match="out of range"):
        vol.read(3)
    with pytest.raises(VolumeError, match="2-D image"):
        V.ArrayVolume(np.zeros((4, 4), np.uint8))


# A float32 stack partly outside [0, 1] (issue 12: new slices were clipped, kept ones were not).
WIDE = np.stack([np.full((4, 6), v, np.float32) for v in (-0.46, 1.51, 0.2)])
WIDE[1, 0, 0] = 0.7


def test_float_volume_outside_unit_range_is_normalised_by_its_own_range():
    vol = V.ArrayVolume(WIDE)
    assert vol.value_range() == (float(np.float32(-0.46)), float(np.float32(1.51)))
    assert vol.slice(0).min() == 0.0 and vol.slice(1).max() == 1.0
    np.testing.assert_allclose(vol.slice(1)[0, 0], (0.7 + 0.46) / 1.97, rtol=1e-6)
    # Mapped back: the bounds exactly, anything between them to within float32 rounding.
    back = vol.denormalise_raw(vol.slices(0, 3))
    assert back.dtype == np.float32 and back.min() == WIDE.min() and back.max() == WIDE.max()
    np.testing.assert_allclose(back, WIDE, atol=1e-6)


def test_float_volume_inside_unit_range_is_passed_through_unchanged():
    inside = np.stack([np.full((4, 6), v, np.float32) for v in (0.0, 0.3, 1.0)])
    vol = V.ArrayVolume(inside)
    np.testing.assert_array_equal(vol.slices(0, 3), inside)
    np.testing.assert_array_equal(vol.denormalise_raw(np.array([0.25, 1.5], np.float32)), [0.25, 1.0])


def test_float_range_is_read_chunk_by_chunk_and_refuses_nan(monkeypatch):
    from emzoo.data.volumes import base

    monkeypatch.setattr(base, "_RANGE_CHUNK_BYTES", 2 * 4 * 6 * 4)  # two slices at a time
    vol = V.ArrayVolume(np.concatenate([WIDE, WIDE]))
    reads = []
    original = vol._read_raw_range
    vol._read_raw_range = lambda z0, z1: reads.append((z0, z1)) or original(z0, z1)
    vol.value_range()
    vol.slice(0), vol.slice(5)  # computed once, not per slice
    assert reads == [(0, 2), (2, 4), (4, 6)]
    bad = WIDE.copy()
    bad[2, 1, 1] = np.nan
    with pytest.raises(VolumeError, match=r"NaN or Inf \(1 values\) in <array> slices 2:3"):
        V.ArrayVolume(bad).slice(0)


def test_uint8_percentile_window_maps_back_through_the_window():
    vol = V.ArrayVolume(np.array([[[10]], [[30]]], np.uint8))
    vol._window = (10.0, 30.0)
    assert vol.denormalise_raw(np.array([0.0, 0.5, 1.0])).tolist() == [10, 20, 30]
