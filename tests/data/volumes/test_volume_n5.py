"""emzoo.data.volumes.n5: round trips, BigDataViewer / n5-viewer layouts (x first), clear messages."""

import gzip
import json
import os
import struct

import numpy as np
import pytest

from emzoo.data import volumes as V
from emzoo.errors import VolumeError

pytest.importorskip("tensorstore")


def write_attributes(folder, attrs):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "attributes.json"), "w", encoding="utf-8") as handle:
        json.dump(attrs, handle)


def write_java_style(folder, array, attrs=None):
    """An N5 dataset written block by block as the Java N5 library does: dimensions (x, y, z), one
    gzip block per z-slice holding the header (mode, rank, block size) and big-endian samples."""
    z, y, x = array.shape
    write_attributes(folder, {"dimensions": [x, y, z], "blockSize": [x, y, 1], "dataType": array.dtype.name,
                              "compression": {"type": "gzip"}, **(attrs or {})})
    for index in range(z):
        header = struct.pack(">HH", 0, 3) + struct.pack(">III", x, y, 1)
        os.makedirs(os.path.join(folder, "0", "0"), exist_ok=True)
        with open(os.path.join(folder, "0", "0", str(index)), "wb") as handle:
            handle.write(header + gzip.compress(array[index].astype(array.dtype.newbyteorder(">")).tobytes()))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_round_trip_keeps_dtype_values_and_voxel_size(tmp_path, random_stack, dtype):
    array = random_stack(dtype, (5, 12, 10))
    for address in (f"{tmp_path}/a.n5", f"{tmp_path}/b.n5:/setup0/timepoint0/s0"):
        V.write_volume(address, array, (40, 4, 4.5))
        with V.open_volume(address) as vol:
            assert isinstance(vol, V.n5.N5Volume)
            assert vol.shape == (5, 12, 10) and vol.dtype == np.dtype(dtype) and vol.voxel_size == (40.0, 4.0, 4.5)
            np.testing.assert_array_equal(vol.read_range(0, 5), array)
            np.testing.assert_array_equal(vol.read_crop(4, 3, 2, 4, 4), array[4, 3:7, 2:6])
    attrs = json.loads((tmp_path / "a.n5" / "raw" / "attributes.json").read_text())
    assert attrs["dimensions"] == [10, 12, 5]  # x first, as Java N5 and BigDataViewer read it
    assert attrs["pixelResolution"] == {"dimensions": [4.5, 4.0, 40.0], "unit": "nm"}
    assert json.loads((tmp_path / "a.n5" / "attributes.json").read_text())["n5"]


def test_reads_blocks_written_the_java_way(tmp_path, random_stack):
    array = random_stack("uint16", (3, 4, 6))
    container = tmp_path / "bdv.n5"
    write_attributes(container, {"n5": "2.1.0"})
    write_attributes(container / "setup0", {"pixelResolution": {"dimensions": [0.004, 0.004, 0.05], "unit": "um"}})
    write_java_style(str(container / "setup0" / "timepoint0" / "s0"), array, {"downsamplingFactors": [1, 1, 1]})
    write_java_style(str(container / "setup0" / "timepoint0" / "s1"), array[:, :2, :3],
                     {"downsamplingFactors": [2, 2, 1]})
    with V.open_volume(container) as vol:  # bare: the only s0
        assert vol.path.endswith("bdv.n5:/setup0/timepoint0/s0")
        assert vol.voxel_size == (50.0, 4.0, 4.0)
        np.testing.assert_array_equal(vol.read_range(0, 3), array)
    assert V.open_volume(f"{container}:/setup0/timepoint0/s1").voxel_size == (50.0, 8.0, 8.0)


def test_writes_chunk_aligned_blocks(tmp_path, random_stack):
    array = random_stack("uint8", (5, 12, 10))
    with V.create_volume(f"{tmp_path}/c.n5", array.shape, array.dtype, chunks=(2, 8, 8)) as out:
        for z in reversed(range(5)):
            out.write(z, array[z])
    attrs = json.loads((tmp_path / "c.n5" / "raw" / "attributes.json").read_text())
    assert attrs["blockSize"] == [8, 8, 2] and "pixelResolution" not in attrs
    assert sorted(os.listdir(tmp_path / "c.n5" / "raw" / "0" / "0")) == ["0", "1", "2"]  # z-blocks
    np.testing.assert_array_equal(V.read_volume(f"{tmp_path}/c.n5")[0], array)


def test_bad_inputs_say_so_in_one_line(tmp_path, random_stack):
    V.write_volume(f"{tmp_path}/v.n5:/volumes/raw", random_stack("uint8", (3, 4, 5)))
    with pytest.raises(VolumeError, match="not found in the N5 container") as error:
        V.open_volume(f"{tmp_path}/v.n5:/volumes/nope")
    assert "\n" not in str(error.value) and "/volumes/raw" in str(error.value)
    write_attributes(tmp_path / "flat.n5" / "img", {"dimensions": [5, 4], "blockSize": [5, 4], "dataType": "uint8",
                                                   "compression": {"type": "raw"}})
    with pytest.raises(VolumeError, match="2-D") as error:
        V.open_volume(f"{tmp_path}/flat.n5:/img")
    assert "\n" not in str(error.value)
    with pytest.raises(VolumeError, match="without one 3-D array") as error:
        V.open_volume(f"{tmp_path}/flat.n5")
    assert "/img" in str(error.value)
    with pytest.raises(VolumeError, match="already exists"):
        V.create_volume(f"{tmp_path}/v.n5", (2, 3, 3), "uint8")
    with pytest.raises(FileNotFoundError):
        V.open_volume(f"{tmp_path}/missing.n5")


def test_missing_library_names_the_extra(tmp_path, monkeypatch, random_stack):
    import sys

    V.write_volume(f"{tmp_path}/v.n5", random_stack("uint8", (2, 3, 3)))
    monkeypatch.setitem(sys.modules, "tensorstore", None)  # as if TensorStore were not installed
    with pytest.raises(VolumeError, match=r"pip install 'emzoo\[n5\]'"):
        V.open_volume(f"{tmp_path}/v.n5")
