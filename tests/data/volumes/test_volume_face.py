"""emzoo.data.volumes (the face): format dispatch by address, round trips through every format."""

import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from emzoo.data import volumes as V
from emzoo.errors import VolumeError

FORMATS = ["stack.tif", "stack.h5:/volumes/raw", "slices", "big.tif"]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("name", FORMATS)
def test_round_trip_values_dtype_and_voxel_size(tmp_path, name, dtype, random_stack):
    array = random_stack(dtype)
    path = str(tmp_path / name)
    with V.create_volume(path, array.shape, dtype, (50, 4.5, 4), bigtiff=(name == "big.tif") or None) as out:
        for z in range(array.shape[0]):
            out.write(array[z])
    with V.open_volume(path) as vol:
        assert vol.shape == array.shape
        assert vol.dtype == np.dtype(dtype)
        assert vol.voxel_size == (50.0, 4.5, 4.0)
        assert len(vol) == 5
        np.testing.assert_array_equal(vol.read(2), array[2])
        np.testing.assert_array_equal(vol.read(-1), array[-1])
        np.testing.assert_array_equal(vol.read_range(1, 4), array[1:4])
        expected = V.normalise(array[3])
        np.testing.assert_allclose(vol.slice(3), expected)
        assert vol.slice(3).dtype == np.float32
    if name == "big.tif":
        with tifffile.TiffFile(path) as tif:
            assert tif.is_bigtiff and tif.is_ome


def test_voxel_size_none_when_not_written(tmp_path):
    for name in ["a.tif", "a.h5", "a_dir"]:
        V.write_volume(str(tmp_path / name), np.zeros((2, 4, 4), np.uint8))
        assert V.open_volume(str(tmp_path / name) + (":/volumes/raw" if name.endswith("h5") else "")
                             ).voxel_size is None


@pytest.mark.parametrize("name, writer", [("o.tif", V.TiffVolumeWriter), ("o.TIFF", V.TiffVolumeWriter),
                                          ("o.h5", V.Hdf5VolumeWriter), ("o.hdf:/a/b", V.Hdf5VolumeWriter),
                                          ("o_dir", V.FolderVolumeWriter)])
def test_create_volume_dispatches_by_address(tmp_path, name, writer):
    for factory in (V.create_volume,):
        out = factory(str(tmp_path / name), (2, 2, 2), "uint8", (40, 4, 4), overwrite=True)
        assert type(out) is writer and isinstance(out, V.VolumeWriter)
        out.write(np.zeros((2, 2), np.uint8))
        out.write(np.ones((2, 2), np.uint8))
        out.close()
        assert V.read_volume(str(tmp_path / name))[0][:, 0, 0].tolist() == [0, 1]


def test_unknown_addresses_and_options_are_refused(tmp_path):
    for name in ["out.png", "out.zip"]:
        with pytest.raises(VolumeError, match="Unknown output format.*Received: path="):
            V.create_volume(str(tmp_path / name), (1, 2, 2), "uint8")
    with pytest.raises(VolumeError, match="Unknown option for Hdf5VolumeWriter.*Received: option='bigtiff'"):
        V.create_volume(str(tmp_path / "o.h5"), (1, 2, 2), "uint8", bigtiff=True)
    assert os.listdir(tmp_path) == []
    assert V.format_of("a.h5:/x.png") is V.hdf5 and V.format_of("a.png") is None


def test_unusual_suffix_is_opened_by_its_leading_bytes(tmp_path, random_stack):
    array = random_stack("uint8", (3, 4, 5))
    tifffile.imwrite(tmp_path / "stack.dat", array, photometric="minisblack")
    V.write_volume(str(tmp_path / "a.h5"), array)
    os.rename(tmp_path / "a.h5", tmp_path / "hdf_no_suffix")
    for name in ["stack.dat", "hdf_no_suffix"]:
        np.testing.assert_array_equal(V.read_volume(tmp_path / name)[0], array)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(VolumeError, match="Unknown volume format"):
        V.open_volume(tmp_path / "notes.txt")


def test_bad_inputs_give_clear_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="Received: path="):
        V.open_volume(tmp_path / "missing.tif")
    png = tmp_path / "one.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    with pytest.raises(VolumeError, match="2-D image"):
        V.open_volume(png)


def test_the_word_sample_opens_the_bundled_sample_unless_such_a_file_exists(tmp_path, monkeypatch):
    import emzoo.samples

    monkeypatch.chdir(tmp_path)
    with V.open_volume("sample") as volume:
        assert volume.path == emzoo.samples.sample_path() and len(volume) == 17
    V.write_volume(str(tmp_path / "sample"), np.zeros((2, 3, 3), np.uint8))  # a folder named sample
    with V.open_volume("sample") as volume:
        assert volume.shape == (2, 3, 3)
