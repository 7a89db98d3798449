"""Tests of emzoo.engine.sources: input volumes, voxel sizes and outputs are checked first."""

import numpy as np
import pytest

from emzoo.engine import parse_voxel_size, upscale_volume
from emzoo.engine.sources import check_output, source_voxel_size
from emzoo.errors import EmzooError, VolumeError
from emzoo_test_helpers import MeanModel, random_volume


def test_parse_voxel_size():
    assert parse_voxel_size("40,4,4") == (40.0, 4.0, 4.0)
    assert parse_voxel_size("40x4x4") == (40.0, 4.0, 4.0)
    assert parse_voxel_size("10") == (10.0, 10.0, 10.0)
    for bad in ("1,2", "a,b,c", "0,4,4", "-1", "nan"):
        with pytest.raises(EmzooError, match=r"z,y,x in nm, e\.g\. 40,4,4\. Received: voxel_size="):
            parse_voxel_size(bad)


def test_voxel_size_given_replaces_the_files():
    class Source:
        voxel_size = (50, 4, 4)

    assert source_voxel_size(Source(), None) == (50.0, 4.0, 4.0)
    assert source_voxel_size(Source(), (40, 8, 8)) == (40.0, 8.0, 8.0)
    assert source_voxel_size(object(), None) is None
    with pytest.raises(EmzooError, match="voxel_size"):
        source_voxel_size(Source(), (1, 2))


def test_single_slice_is_refused():
    with pytest.raises(VolumeError, match="at least 2"):
        upscale_volume(random_volume((1, 8, 8)), MeanModel(), progress=False)


def test_unsupported_dtype_and_inputs_are_refused():
    with pytest.raises(VolumeError, match="dtype"):
        upscale_volume(np.zeros((3, 8, 8), np.int32), MeanModel(), progress=False)
    with pytest.raises(EmzooError, match="volume"):
        upscale_volume([1, 2, 3], MeanModel(), progress=False)


def test_corrupt_file_is_a_volume_error(tmp_path):
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\x00garbage" * 3)
    with pytest.raises(VolumeError):
        upscale_volume(str(path), MeanModel(), progress=False)


def test_output_folder_must_exist(tmp_path):
    assert check_output(None, overwrite=False) is None
    with pytest.raises(VolumeError, match="does not exist"):
        check_output(str(tmp_path / "nowhere" / "out.tif"), overwrite=False)


class _NeverCalled(MeanModel):
    """A model whose use means a check came too late."""

    def call(self, inputs):
        raise AssertionError("the model ran before the output was refused")


def test_the_input_is_never_the_output_even_with_overwrite(tmp_path):
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, random_volume((3, 8, 8), np.uint8))
    before = path.read_bytes()
    with pytest.raises(VolumeError, match="input"):
        upscale_volume(str(path), _NeverCalled(), output=str(path), overwrite=True, progress=False)
    assert path.read_bytes() == before


def test_a_new_dataset_in_an_existing_hdf5_file_needs_no_overwrite(tmp_path):
    import h5py

    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["volumes/raw"] = random_volume((3, 8, 8), np.uint8)
        f["volumes/labels"] = np.ones((3, 8, 8), np.uint8)
    assert check_output(f"{path}:/volumes/up", overwrite=False) == f"{path}:/volumes/up"
    with pytest.raises(VolumeError, match="already exists"):
        check_output(f"{path}:/volumes/labels", overwrite=False)
