"""emzoo.data.volumes.folder: folders of PNG / TIFF slices and their voxel-size sidecar."""

import json

import numpy as np
import pytest
from PIL import Image

from emzoo.data import volumes as V
from emzoo.errors import VolumeError


def test_folder_natural_sort_and_png_slices(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for z in [10, 2, 1]:
        Image.fromarray(np.full((4, 6), z, np.uint8)).save(folder / f"s{z}.png")
    vol = V.open_volume(folder)
    assert vol.shape == (3, 4, 6)
    assert [int(vol.read(z)[0, 0]) for z in range(3)] == [1, 2, 10]


def test_folder_of_mixed_shapes_is_refused(tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mixed / "0.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(mixed / "1.png")
    with pytest.raises(VolumeError, match="different shapes.*Received: shape=\\(8, 9\\)"):
        V.open_volume(mixed)


def test_writer_writes_pngs_and_the_sidecar(tmp_path):
    out = tmp_path / "out_dir"
    V.write_volume(str(out), np.full((3, 4, 4), 7, np.uint16), (40, 4, 4))
    assert sorted(p.name for p in out.iterdir()) == [V.FOLDER_METADATA, "slice_00000.png", "slice_00001.png",
                                                     "slice_00002.png"]
    assert json.loads((out / V.FOLDER_METADATA).read_text())["voxel_size_nm"] == [40.0, 4.0, 4.0]
