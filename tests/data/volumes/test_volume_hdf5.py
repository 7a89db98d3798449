"""emzoo.data.volumes.hdf5: CREMI-style datasets, bare-file addresses, clear messages."""

import h5py
import numpy as np
import pytest

from emzoo.data import volumes as V
from emzoo.errors import VolumeError


def test_split_hdf5_path():
    assert V.split_hdf5_path("sample_A.hdf:/volumes/raw") == ("sample_A.hdf", "/volumes/raw")
    assert V.split_hdf5_path("a.H5") == ("a.H5", None)
    assert V.split_hdf5_path("stack.tif") == ("stack.tif", None)


def test_cremi_layout_written_by_others(tmp_path):
    path = tmp_path / "sample_A.hdf"
    with h5py.File(path, "w") as f:
        data = f.create_dataset("volumes/raw", data=np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5))
        data.attrs["resolution"] = (40.0, 4.0, 4.0)
        f.create_dataset("volumes/labels/neuron_ids", data=np.zeros((3, 4, 5), np.uint64))
    vol = V.open_volume(f"{path}:/volumes/raw")
    assert vol.voxel_size == (40.0, 4.0, 4.0) and vol.shape == (3, 4, 5)


def test_bare_hdf5_path_uses_volumes_raw_when_present(tmp_path, random_stack):
    path = tmp_path / "written.h5"
    array = random_stack("uint8", (3, 6, 5))
    V.write_volume(str(path), array, (40, 4, 4))  # the writer's default dataset: /volumes/raw
    with h5py.File(path, "a") as f:
        f.create_dataset("volumes/labels", data=np.ones((3, 6, 5), np.uint8))  # a second 3-D dataset
    with V.open_volume(path) as vol:
        assert vol.path == f"{path}:/volumes/raw" and vol.voxel_size == (40.0, 4.0, 4.0)
        np.testing.assert_array_equal(vol.read_range(0, 3), array)


def test_bare_hdf5_path_uses_the_only_3d_dataset(tmp_path, random_stack):
    path = tmp_path / "other_tool.hdf5"
    array = random_stack("uint16", (4, 5, 6))
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


def test_missing_and_unsupported_datasets_give_clear_messages(tmp_path):
    h5 = tmp_path / "s.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("volumes/raw", data=np.zeros((2, 4, 4), np.uint8))
        f.create_dataset("volumes/ints", data=np.zeros((2, 4, 4), np.int64))
    with pytest.raises(VolumeError, match="not found.*/volumes/raw"):
        V.open_volume(f"{h5}:/volumes/nope")
    with pytest.raises(VolumeError, match="Unsupported data type.*int64"):
        V.open_volume(f"{h5}:/volumes/ints")


def test_writer_writes_the_named_dataset_with_resolution(tmp_path):
    V.write_volume(f"{tmp_path / 'out.h5'}:/em/stack", np.ones((2, 4, 4), np.uint16), (30, 5, 5))
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert f["em/stack"].shape == (2, 4, 4) and tuple(f["em/stack"].attrs["resolution"]) == (30, 5, 5)
