"""Volume I/O: formats, voxel sizes, dtypes, lazy reads, atomic writes and bad-input messages."""

import os

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from emzoo.errors import VolumeError
from emzoo.data import volume as V


def _random_stack(dtype, shape=(5, 12, 10), seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return rng.random(shape, dtype=np.float32)
    top = 255 if dtype == "uint8" else 65535
    return rng.integers(0, top + 1, size=shape).astype(dtype)


FORMATS = ["stack.tif", "stack.h5:/volumes/raw", "slices", "big.tif"]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("name", FORMATS)
def test_round_trip_values_dtype_and_voxel_size(tmp_path, name, dtype):
    array = _random_stack(dtype)
    path = str(tmp_path / name)
    with V.VolumeWriter(path, array.shape, dtype, (50, 4.5, 4), bigtiff=(name == "big.tif") or None) as out:
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


def test_cremi_layout_and_imagej_metadata_written_by_others(tmp_path):
    path = tmp_path / "sample_A.hdf"
    with h5py.File(path, "w") as f:
        data = f.create_dataset("volumes/raw", data=np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5))
        data.attrs["resolution"] = (40.0, 4.0, 4.0)
        f.create_dataset("volumes/labels/neuron_ids", data=np.zeros((3, 4, 5), np.uint64))
    vol = V.open_volume(f"{path}:/volumes/raw")
    assert vol.voxel_size == (40.0, 4.0, 4.0) and vol.shape == (3, 4, 5)
    tif = tmp_path / "ij.tif"
    tifffile.imwrite(tif, np.zeros((3, 4, 5), np.uint16), imagej=True, resolution=(1 / 0.006, 1 / 0.006),
                     metadata={"spacing": 0.03, "unit": "micron", "axes": "ZYX"})
    assert V.open_volume(tif).voxel_size == (30.0, 6.0, 6.0)


def test_bare_hdf5_path_uses_volumes_raw_when_present(tmp_path):
    path = tmp_path / "written.h5"
    array = _random_stack("uint8", (3, 6, 5))
    V.write_volume(str(path), array, (40, 4, 4))  # VolumeWriter's default dataset: /volumes/raw
    with h5py.File(path, "a") as f:
        f.create_dataset("volumes/labels", data=np.ones((3, 6, 5), np.uint8))  # a second 3-D dataset
    with V.open_volume(path) as vol:
        assert vol.path == f"{path}:/volumes/raw" and vol.voxel_size == (40.0, 4.0, 4.0)
        np.testing.assert_array_equal(vol.read_range(0, 3), array)


def test_bare_hdf5_path_uses_the_only_3d_dataset(tmp_path):
    path = tmp_path / "other_tool.hdf5"
    array = _random_stack("uint16", (4, 5, 6))
    with h5py.File(path, "w") as f:
        f.create_dataset("em/stack", data=array)
        f.create_dataset("em/mask_2d", data=np.zeros((5, 6), np.uint8))
        f.create_dataset("meta/offsets", data=np.arange(3))
    with V.open_volume(path) as vol:
        assert vol.path == f"{path}:/em/stack"
        np.testing.assert_array_equal(vol.read(2), array[2])


def test_bare_hdf5_path_with_several_3d_datasets_is_refused_with_the_list(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a/raw", data=np.zeros((2, 4, 4), np.uint8))
        f.create_dataset("b/raw", data=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(VolumeError, match=r"names no dataset.*like .*two\.h5:/a/raw.*/a/raw, /b/raw"):
        V.open_volume(path)
    empty = tmp_path / "empty.h5"
    h5py.File(empty, "w").close()
    with pytest.raises(VolumeError, match="names no dataset.*datasets in the file: none"):
        V.open_volume(empty)
    assert V.open_volume(f"{path}:/b/raw").shape == (2, 4, 4)  # the address the message suggests


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_tiff_written_slice_by_slice_reads_back_identically(tmp_path, dtype):
    array = _random_stack(dtype, (9, 13, 7), seed=3)
    in_order, any_order = str(tmp_path / "in_order.tif"), str(tmp_path / "any_order.tif")
    with V.VolumeWriter(in_order, array.shape, dtype, (30, 6, 5)) as out:
        for z in range(array.shape[0]):
            # Big-endian input must be stored in the file's (little-endian) byte order.
            out.write(array[z].astype(array.dtype.newbyteorder(">")) if z % 2 else array[z])
    with V.VolumeWriter(any_order, array.shape, dtype, (30, 6, 5)) as out:
        for z in [4, 0, 8, 1, 7, 2, 6, 3, 5]:
            out.write(z, array[z])
    for path in (in_order, any_order):
        with V.open_volume(path) as vol:
            assert vol.shape == array.shape and vol.dtype == np.dtype(dtype)
            assert vol.voxel_size == (30.0, 6.0, 5.0)
            np.testing.assert_array_equal(vol.read_range(0, len(vol)), array)
        with tifffile.TiffFile(path) as tif:  # a plain ImageJ stack other readers understand
            assert tif.is_imagej and len(tif.pages) == array.shape[0]
            np.testing.assert_array_equal(tif.pages[5].asarray(), array[5])
    assert sorted(os.listdir(tmp_path)) == ["any_order.tif", "in_order.tif"]  # no temporary left


def test_folder_natural_sort_and_png_slices(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for z in [10, 2, 1]:
        Image.fromarray(np.full((4, 6), z, np.uint8)).save(folder / f"s{z}.png")
    vol = V.open_volume(folder)
    assert vol.shape == (3, 4, 6)
    assert [int(vol.read(z)[0, 0]) for z in range(3)] == [1, 2, 10]


def test_tiff_is_memory_mapped_and_reads_one_slice(tmp_path):
    # 64 slices x 1 MiB: the memmap must not load them all when one slice is asked for.
    path = tmp_path / "big.tif"
    data = np.zeros((64, 1024, 1024), np.uint8)
    data[37] = 7
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "ZYX"})
    del data
    vol = V.open_volume(path)
    assert isinstance(vol._memmap, np.memmap) or isinstance(getattr(vol._memmap, "base", None), np.memmap)
    assert vol.read(37).max() == 7 and vol.read(36).max() == 0


def test_tiff_slices_read_without_the_map_match_it(tmp_path):
    # Whole slices come from positional reads, crops and ranges from the map: both must agree,
    # including for big-endian files.
    array = _random_stack("uint16", (4, 9, 6), seed=5)
    for byteorder in "<>":
        path = tmp_path / f"order{'le' if byteorder == '<' else 'be'}.tif"
        tifffile.imwrite(path, array, byteorder=byteorder, photometric="minisblack")
        with V.open_volume(path) as vol:
            assert vol._reader is not None
            for z in range(4):
                np.testing.assert_array_equal(vol.read(z), array[z])
                np.testing.assert_array_equal(vol.read_range(z, z + 1)[0], vol.read(z))
            np.testing.assert_array_equal(vol.read_crop(2, 1, 2, 3, 3), array[2, 1:4, 2:5])
            np.testing.assert_allclose(vol.slice(1), array[1] / 65535.0, rtol=1e-6)


def test_compressed_tiff_is_read_page_by_page(tmp_path):
    path = tmp_path / "zlib.tif"
    array = _random_stack("uint8", (4, 16, 16))
    tifffile.imwrite(path, array, compression="zlib", photometric="minisblack")
    vol = V.open_volume(path)
    assert vol._memmap is None
    np.testing.assert_array_equal(vol.read(3), array[3])


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


def test_writer_exception_leaves_nothing_and_keeps_existing(tmp_path):
    for name in ["out.tif", "out.h5", "out_dir"]:
        path = tmp_path / name
        with pytest.raises(RuntimeError):
            with V.VolumeWriter(str(path), (3, 4, 4), "uint8") as out:
                out.write(np.zeros((4, 4), np.uint8))
                raise RuntimeError("boom")
        assert os.listdir(tmp_path) == [], name
    existing = tmp_path / "keep.tif"
    V.write_volume(str(existing), np.ones((2, 4, 4), np.uint8))
    before = existing.read_bytes()
    with pytest.raises(VolumeError, match="already exists"):
        V.VolumeWriter(str(existing), (2, 4, 4), "uint8")
    with pytest.raises(VolumeError, match="never written"):
        with V.VolumeWriter(str(existing), (2, 4, 4), "uint8", overwrite=True) as out:
            out.write(np.zeros((4, 4), np.uint8))
    assert existing.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.tif"]
    V.write_volume(str(existing), np.zeros((2, 4, 4), np.uint8), overwrite=True)
    assert V.read_volume(existing)[0].max() == 0


def test_writer_rejects_wrong_slices(tmp_path):
    with V.VolumeWriter(str(tmp_path / "o.h5"), (2, 4, 4), "uint8") as out:
        with pytest.raises(VolumeError, match="shape"):
            out.write(np.zeros((5, 4), np.uint8))
        with pytest.raises(VolumeError, match="write_normalised"):
            out.write(np.zeros((4, 4), np.float32))
        out.write_normalised(np.full((4, 4), 0.5, np.float32))
        out.write(1, np.zeros((4, 4), np.uint8))
    assert V.read_volume(str(tmp_path / "o.h5:/volumes/raw"))[0][0, 0, 0] == 128


def test_bad_inputs_give_clear_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="Received: path="):
        V.open_volume(tmp_path / "missing.tif")
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\xff" * 64)
    with pytest.raises(VolumeError, match="corrupt"):
        V.open_volume(corrupt)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((8, 8), np.uint8))
    with pytest.raises(VolumeError, match="2-D image .* Received: shape=\\(8, 8\\)"):
        V.open_volume(flat)
    png = tmp_path / "one.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    with pytest.raises(VolumeError, match="2-D image"):
        V.open_volume(png)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "0.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(mixed / "1.png")
    with pytest.raises(VolumeError, match="different shapes.*Received: shape=\\(8, 9\\)"):
        V.open_volume(mixed)
    nan = tmp_path / "nan.tif"
    values = np.zeros((3, 4, 4), np.float32)
    values[1, 2, 2] = np.nan
    tifffile.imwrite(nan, values, photometric="minisblack")
    vol = V.open_volume(nan)
    vol.read(0)
    with pytest.raises(VolumeError, match="NaN or Inf"):
        vol.slice(1)
    h5 = tmp_path / "s.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("volumes/raw", data=np.zeros((2, 4, 4), np.uint8))
        f.create_dataset("volumes/ints", data=np.zeros((2, 4, 4), np.int64))
    with pytest.raises(VolumeError, match="not found.*/volumes/raw"):
        V.open_volume(f"{h5}:/volumes/nope")
    with pytest.raises(VolumeError, match="Unsupported data type.*int64"):
        V.open_volume(f"{h5}:/volumes/ints")
    with pytest.raises(VolumeError, match="Unsupported data type"):
        V.VolumeWriter(str(tmp_path / "x.tif"), (2, 4, 4), "int32")
    colour = tmp_path / "rgb.tif"
    tifffile.imwrite(colour, np.zeros((3, 8, 8, 3), np.uint8), photometric="rgb")
    with pytest.raises(VolumeError, match="colour"):
        V.open_volume(colour)


def test_shared_isbi_stack(shared_data):
    with V.open_volume(shared_data / "isbi2012_sstem" / "volume.tif") as vol:
        assert vol.shape == (30, 512, 512) and vol.dtype == np.uint8
        assert vol.voxel_size == (50.0, 4.0, 4.0)
        middle = vol.slice(15)
        assert middle.dtype == np.float32 and 0.0 <= middle.min() < middle.max() <= 1.0
