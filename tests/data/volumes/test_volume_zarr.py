"""emzoo.data.volumes.zarr_array: Zarr v2 / v3 round trips, addresses, chunk-aligned writes, clear messages."""

import os
import sys

import numpy as np
import pytest

from emzoo.data import volumes as V
from emzoo.data.volumes.base import split_container_path
from emzoo.errors import VolumeError

zarr = pytest.importorskip("zarr")


def one_line(error):
    message = str(error.value)
    assert "\n" not in message and "Expected" in message and "Received:" in message, message
    return message


def test_split_container_path():
    assert split_container_path("v.zarr:/volumes/raw") == ("v.zarr", "/volumes/raw")
    assert split_container_path("v.zarr/") == ("v.zarr", None)
    assert split_container_path("x.h5:/odd.zarr") == ("x.h5", "/odd.zarr")  # the first container wins
    assert split_container_path("run.zarr/x.h5") == ("run.zarr/x.h5", None)
    assert V.split_container_path("v.zarr:/raw") == ("v.zarr", "/raw")  # the face's splitter
    assert V.format_of("v.zarr:/raw") is V.zarr_array and V.format_of("x.h5:/odd.zarr") is V.hdf5


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_round_trip_keeps_dtype_values_and_voxel_size(tmp_path, random_stack, dtype, zarr_format):
    array = random_stack(dtype, (5, 12, 10))
    for address in (f"{tmp_path}/root.zarr", f"{tmp_path}/deep.zarr:/volumes/raw"):
        with V.create_volume(address, array.shape, dtype, (40, 4, 4.5), zarr_format=zarr_format) as out:
            for z in range(5):
                out.write(array[z])
        with V.open_volume(address) as vol:
            assert isinstance(vol, V.zarr_array.ZarrVolume)
            assert vol.shape == (5, 12, 10) and vol.dtype == np.dtype(dtype)
            assert vol.voxel_size == (40.0, 4.0, 4.5)
            np.testing.assert_array_equal(vol.read_range(0, 5), array)
    assert zarr.open(store=f"{tmp_path}/deep.zarr", mode="r")["volumes/raw"].metadata.zarr_format == zarr_format


def test_writes_are_chunk_aligned_in_any_order_and_atomic(tmp_path, random_stack):
    array = random_stack("uint16", (7, 12, 10))
    path = tmp_path / "out.zarr"
    out = V.create_volume(f"{path}:/raw", array.shape, array.dtype, chunks=(3, 8, 8))
    written = []
    out._write_block = lambda z0, block, write=out._write_block: (written.append((z0, len(block))),
                                                                    write(z0, block))
    for z in (1, 0, 6, 2, 5, 4, 3):  # any order: a z-chunk is written once its last slice arrives
        out.write(z, array[z])
        assert not path.exists()  # only the temporary store exists until close
    out.close()
    assert written == [(6, 1), (0, 3), (3, 3)]
    stored = zarr.open(store=str(path), mode="r")["raw"]
    assert stored.chunks == (3, 8, 8)
    np.testing.assert_array_equal(stored[:], array)
    assert sorted(os.listdir(tmp_path)) == ["out.zarr"]


def test_aborted_or_incomplete_writes_leave_nothing(tmp_path, random_stack):
    array = random_stack("uint8", (4, 6, 6))
    with pytest.raises(VolumeError, match="never written"):
        with V.create_volume(f"{tmp_path}/a.zarr", array.shape, array.dtype) as out:
            out.write(array[0])
    with pytest.raises(RuntimeError):
        with V.create_volume(f"{tmp_path}/b.zarr", array.shape, array.dtype) as out:
            out.write(array[0])
            raise RuntimeError("stop")
    assert os.listdir(tmp_path) == []


def test_lazy_reads_slices_crops_and_the_z_chunk_cache(tmp_path, random_stack):
    array = random_stack("uint8", (7, 12, 10))
    V.write_volume(f"{tmp_path}/v.zarr", array)  # default chunks: up to 8 slices deep
    with V.open_volume(f"{tmp_path}/v.zarr") as vol:
        fetched = []
        fetch = vol._fetch
        vol._fetch = lambda *box: (fetched.append(box), fetch(*box))[1]
        for z in range(7):
            np.testing.assert_array_equal(vol.read(z), array[z])
        assert fetched == [(0, 7, 0, 12, 0, 10)]  # one read for the whole z-chunk
        np.testing.assert_array_equal(vol.read_crop(3, 2, 4, 5, 3), array[3, 2:7, 4:7])
        assert fetched[-1] == (3, 4, 2, 7, 4, 7)  # a crop reads only its window
        np.testing.assert_array_equal(vol.read(-1), array[-1])


def test_arrays_written_by_other_tools(tmp_path):
    root = zarr.open_group(str(tmp_path / "lab.zarr"), mode="w", zarr_format=3)
    raw = root.create_array("em/raw", shape=(3, 4, 5), chunks=(1, 4, 5), dtype="uint8")
    raw[:] = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    raw.attrs["pixelResolution"] = {"dimensions": [0.004, 0.004, 0.04], "unit": "um"}  # (x, y, z)
    root.create_array("em/labels2d", shape=(4, 5), dtype="uint8")  # not a volume: not a candidate
    with V.open_volume(tmp_path / "lab.zarr") as vol:  # the only 3-D array
        assert vol.path.endswith("lab.zarr:/em/raw") and vol.voxel_size == (40.0, 4.0, 4.0)
        np.testing.assert_array_equal(vol.read(2), raw[2])
    # A 4-D (z, y, x, 1) array reads as its 3-D volume, like HDF5's; element_size_um in micrometres.
    channel = zarr.create_array(str(tmp_path / "c.zarr"), shape=(3, 4, 5, 1), dtype="uint16", zarr_format=2)
    channel[:] = 7
    channel.attrs["element_size_um"] = [0.05, 0.004, 0.004]
    with V.open_volume(tmp_path / "c.zarr") as vol:
        assert vol.shape == (3, 4, 5) and vol.voxel_size == (50.0, 4.0, 4.0) and vol.read(1).max() == 7


def test_bare_store_uses_s0_of_a_plain_multiscale(tmp_path):
    root = zarr.open_group(str(tmp_path / "pyr.zarr"), mode="w", zarr_format=2)
    for level, size in (("s0", 8), ("s1", 4)):
        root.create_array(f"raw/{level}", shape=(2, size, size), dtype="uint8")
    assert V.open_volume(tmp_path / "pyr.zarr").path.endswith("pyr.zarr:/raw/s0")


def test_bad_inputs_say_so_in_one_line(tmp_path, random_stack):
    V.write_volume(f"{tmp_path}/v.zarr:/volumes/raw", random_stack("uint8", (3, 4, 5)))
    with pytest.raises(VolumeError, match="not found in the Zarr store") as error:
        V.open_volume(f"{tmp_path}/v.zarr:/volumes/nope")
    assert "/volumes/raw" in one_line(error)  # lists what there is

    flat = zarr.create_array(str(tmp_path / "flat.zarr"), shape=(4, 5), dtype="uint8", zarr_format=2)
    flat[:] = 1
    with pytest.raises(VolumeError, match="2-D") as error:
        V.open_volume(tmp_path / "flat.zarr")
    one_line(error)
    zarr.create_array(str(tmp_path / "rgb.zarr"), shape=(2, 4, 5, 3), dtype="uint8", zarr_format=3)
    with pytest.raises(VolumeError, match="not a grey-level 3-D volume") as error:
        V.open_volume(tmp_path / "rgb.zarr")
    one_line(error)

    two = zarr.open_group(str(tmp_path / "two.zarr"), mode="w", zarr_format=2)
    two.create_array("a", shape=(2, 3, 3), dtype="uint8")
    two.create_array("b", shape=(2, 3, 3), dtype="uint8")
    with pytest.raises(VolumeError, match="without one 3-D array") as error:
        V.open_volume(tmp_path / "two.zarr")
    assert "/a, /b" in one_line(error)

    zarr.create_array(str(tmp_path / "labels.zarr"), shape=(2, 3, 3), dtype="uint64", zarr_format=2)
    with pytest.raises(VolumeError, match="Unsupported data type"):
        V.open_volume(tmp_path / "labels.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(VolumeError, match="Cannot open the Zarr store") as error:
        V.open_volume(tmp_path / "empty.zarr")
    one_line(error)
    with pytest.raises(FileNotFoundError):
        V.open_volume(tmp_path / "missing.zarr:/raw")


def test_existing_output_is_refused_and_kept(tmp_path, random_stack):
    array = random_stack("uint8", (3, 4, 5))
    V.write_volume(f"{tmp_path}/v.zarr:/raw", array)
    with pytest.raises(VolumeError, match="already exists") as error:
        V.create_volume(f"{tmp_path}/v.zarr:/other", array.shape, array.dtype)
    one_line(error)
    np.testing.assert_array_equal(V.read_volume(f"{tmp_path}/v.zarr")[0], array)
    V.write_volume(f"{tmp_path}/v.zarr", array[:2], overwrite=True)  # replaced whole
    assert V.read_volume(f"{tmp_path}/v.zarr")[0].shape == (2, 4, 5)
    assert sorted(os.listdir(tmp_path)) == ["v.zarr"]


def test_bad_writer_options_say_so(tmp_path):
    with pytest.raises(VolumeError, match="Unsupported Zarr format"):
        V.create_volume(f"{tmp_path}/v.zarr", (2, 3, 3), "uint8", zarr_format=4)
    with pytest.raises(VolumeError, match="option `chunks`"):
        V.create_volume(f"{tmp_path}/v.zarr", (2, 3, 3), "uint8", chunks=(0, 3, 3))
    assert os.listdir(tmp_path) == []


def test_missing_library_names_the_extra(tmp_path, monkeypatch, random_stack):
    V.write_volume(f"{tmp_path}/v.zarr", random_stack("uint8", (2, 3, 3)))
    monkeypatch.setitem(sys.modules, "zarr", None)  # as if zarr were not installed
    with pytest.raises(VolumeError, match=r"pip install 'emzoo\[zarr\]'"):
        V.open_volume(f"{tmp_path}/v.zarr")


def test_default_chunks_are_shallow_only_for_buffered_writers_of_large_slices():
    from emzoo.data.volumes.chunked import DEFAULT_DEPTH, DEFAULT_TILE, default_chunks

    large = (100, 20000, 20000)  # 400 MB per uint8 slice: a buffered chunk row holds one slice
    assert default_chunks(large, "uint8") == (1, DEFAULT_TILE, DEFAULT_TILE)
    assert default_chunks(large, "uint8", buffered=False) == (DEFAULT_DEPTH, DEFAULT_TILE, DEFAULT_TILE)
    assert default_chunks((3, 64, 96), "uint8", buffered=False) == (3, 64, 96)
