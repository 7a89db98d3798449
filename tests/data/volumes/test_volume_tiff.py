"""emzoo.data.volumes.tiff: ImageJ / OME / BigTIFF stacks, memory-mapped reads, slice-by-slice writes."""

import os

import numpy as np
import pytest
import tifffile

from emzoo.data import volumes as V
from emzoo.errors import VolumeError


def test_imagej_metadata_written_by_others(tmp_path):
    tif = tmp_path / "ij.tif"
    tifffile.imwrite(tif, np.zeros((3, 4, 5), np.uint16), imagej=True, resolution=(1 / 0.006, 1 / 0.006),
                     metadata={"spacing": 0.03, "unit": "micron", "axes": "ZYX"})
    assert V.open_volume(tif).voxel_size == (30.0, 6.0, 6.0)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_tiff_written_slice_by_slice_reads_back_identically(tmp_path, dtype, random_stack):
    array = random_stack(dtype, (9, 13, 7), seed=3)
    in_order, any_order = str(tmp_path / "in_order.tif"), str(tmp_path / "any_order.tif")
    with V.create_volume(in_order, array.shape, dtype, (30, 6, 5)) as out:
        for z in range(array.shape[0]):
            # Big-endian input must be stored in the file's (little-endian) byte order.
            out.write(array[z].astype(array.dtype.newbyteorder(">")) if z % 2 else array[z])
    with V.create_volume(any_order, array.shape, dtype, (30, 6, 5)) as out:
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


def test_tiff_slices_read_without_the_map_match_it(tmp_path, random_stack):
    # Whole slices come from positional reads, crops and ranges from the map: both must agree,
    # including for big-endian files.
    array = random_stack("uint16", (4, 9, 6), seed=5)
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


def test_compressed_tiff_is_read_page_by_page(tmp_path, random_stack):
    path = tmp_path / "zlib.tif"
    array = random_stack("uint8", (4, 16, 16))
    tifffile.imwrite(path, array, compression="zlib", photometric="minisblack")
    vol = V.open_volume(path)
    assert vol._memmap is None
    np.testing.assert_array_equal(vol.read(3), array[3])


def test_bad_tiffs_give_clear_messages(tmp_path):
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\xff" * 64)
    with pytest.raises(VolumeError, match="corrupt"):
        V.open_volume(corrupt)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.zeros((8, 8), np.uint8))
    with pytest.raises(VolumeError, match="2-D image .* Received: shape=\\(8, 8\\)"):
        V.open_volume(flat)
    nan = tmp_path / "nan.tif"
    values = np.zeros((3, 4, 4), np.float32)
    values[1, 2, 2] = np.nan
    tifffile.imwrite(nan, values, photometric="minisblack")
    vol = V.open_volume(nan)
    vol.read(0)
    with pytest.raises(VolumeError, match="NaN or Inf"):
        vol.slice(1)
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


# ----------------------------------------------------------------- truncated files, guessed axes
@pytest.mark.parametrize("how", [{"imagej": True, "metadata": {"axes": "ZYX"}}, {},
                                 {"compression": "zlib"}])
def test_truncated_tiff_says_it_ends_early(tmp_path, capfd, how):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.arange(10 * 64 * 64, dtype=np.uint16).reshape(10, 64, 64) % 251, **how)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(VolumeError, match=r"The TIFF file ends early .*: expected 10 pages, found [0-9]\."):
        V.open_volume(path)
    assert capfd.readouterr().err == ""  # tifffile's own log lines are not shown as well


def test_truncated_tiff_without_metadata_says_its_pages_stop(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((10, 32, 32), np.uint8), metadata=None)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(VolumeError, match="ends early .*links to a next one past the end of the file"):
        V.open_volume(path)


def test_grey_stack_saved_as_imagej_channels_names_the_axes_and_the_override(tmp_path):
    path = tmp_path / "channels.tif"
    array = np.arange(5 * 8 * 6, dtype=np.uint8).reshape(5, 8, 6)
    tifffile.imwrite(path, array, imagej=True)  # no axes: tifffile stores channels (CYX)
    with pytest.raises(VolumeError) as error:
        V.open_volume(path)
    message = str(error.value)
    assert "multi-channel image, not a z-stack" in message and "axes CYX" in message
    assert "open_volume(path, axes='ZYX')" in message and "metadata={'axes': 'ZYX'}" in message
    assert "colour" not in message
    with V.open_volume(path, axes="ZYX") as vol:
        assert vol.shape == (5, 8, 6)
        np.testing.assert_array_equal(vol.read_range(0, 5), array)


def test_three_slices_saved_without_axes_read_as_rgb_name_the_guess(tmp_path):
    path = tmp_path / "three.tif"
    array = np.arange(3 * 8 * 6, dtype=np.uint8).reshape(3, 8, 6)
    tifffile.imwrite(path, array)  # tifffile takes a first axis of 3 for RGB samples (SYX)
    with pytest.raises(VolumeError, match=r"tifffile took the first axis \(3 planes\).*axes='ZYX'"):
        V.open_volume(path)
    np.testing.assert_array_equal(V.open_volume(path, axes="ZYX").read_range(0, 3), array)


def test_axes_override_is_checked(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((4, 8, 6), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    for bad in ("ZY", "ZXY", "ZZX", 3):
        with pytest.raises(VolumeError, match="`axes`"):
            V.open_volume(path, axes=bad)
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(3):
        tifffile.imwrite(folder / f"{z}.tif", np.zeros((8, 6), np.uint8))
    with pytest.raises(VolumeError, match="`axes` applies to TIFF files only"):
        V.open_volume(folder, axes="ZYX")


@pytest.mark.parametrize("axes, imagej", [("QQYX", False), ("TZYX", True), ("ZCYX", True)])
def test_a_4d_stack_is_refused_naming_its_axes_not_glued_into_one(tmp_path, axes, imagej):
    path = tmp_path / "hyper.tif"
    array = np.zeros((2, 7, 8, 8), np.uint8)
    if imagej:
        tifffile.imwrite(path, array, imagej=True, metadata={"axes": axes})
    else:
        tifffile.imwrite(path, array)
    expected = "more than one z-stack" if "C" not in axes else "multi-channel"
    with pytest.raises(VolumeError, match=rf"{expected}.*axes='{axes}'"):
        V.open_volume(path)


def test_slices_one_pixel_wide_are_refused_clearly_when_read_and_before_writing(tmp_path):
    path = tmp_path / "thin.tif"
    tifffile.imwrite(path, np.zeros((5, 1, 1), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(VolumeError, match="ImageJ metadata do not match its pages: they announce 5 "
                                          "images.*not truncated"):
        V.open_volume(path)
    with pytest.raises(VolumeError, match="cannot hold slices 1 pixel wide"):
        V.create_volume(str(tmp_path / "out.tif"), (5, 1, 1), "uint8")
    assert sorted(os.listdir(tmp_path)) == ["thin.tif"]
