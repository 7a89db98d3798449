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
