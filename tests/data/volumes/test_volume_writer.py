"""emzoo.data.volumes.writer: what every format's writer shares (atomic output, slice checks)."""

import os

import numpy as np
import pytest

from emzoo.data import volumes as V
from emzoo.errors import VolumeError


def test_writer_exception_leaves_nothing_and_keeps_existing(tmp_path):
    for name in ["out.tif", "out.h5", "out_dir"]:
        path = tmp_path / name
        with pytest.raises(RuntimeError):
            with V.create_volume(str(path), (3, 4, 4), "uint8") as out:
                out.write(np.zeros((4, 4), np.uint8))
                raise RuntimeError("boom")
        assert os.listdir(tmp_path) == [], name
    existing = tmp_path / "keep.tif"
    V.write_volume(str(existing), np.ones((2, 4, 4), np.uint8))
    before = existing.read_bytes()
    with pytest.raises(VolumeError, match="already exists"):
        V.create_volume(str(existing), (2, 4, 4), "uint8")
    with pytest.raises(VolumeError, match="never written"):
        with V.create_volume(str(existing), (2, 4, 4), "uint8", overwrite=True) as out:
            out.write(np.zeros((4, 4), np.uint8))
    assert existing.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["keep.tif"]
    V.write_volume(str(existing), np.zeros((2, 4, 4), np.uint8), overwrite=True)
    assert V.read_volume(existing)[0].max() == 0


def test_writer_rejects_wrong_slices(tmp_path):
    with V.create_volume(str(tmp_path / "o.h5"), (2, 4, 4), "uint8") as out:
        with pytest.raises(VolumeError, match="shape"):
            out.write(np.zeros((5, 4), np.uint8))
        with pytest.raises(VolumeError, match="write_normalised"):
            out.write(np.zeros((4, 4), np.float32))
        out.write_normalised(np.full((4, 4), 0.5, np.float32))
        out.write(1, np.zeros((4, 4), np.uint8))
    assert V.read_volume(str(tmp_path / "o.h5:/volumes/raw"))[0][0, 0, 0] == 128


def test_writer_refuses_bad_arguments(tmp_path):
    with pytest.raises(VolumeError, match="Unsupported data type"):
        V.create_volume(str(tmp_path / "x.tif"), (2, 4, 4), "int32")
    with pytest.raises(VolumeError, match="`shape`"):
        V.create_volume(str(tmp_path / "x.tif"), (2, 4), "uint8")
    with pytest.raises(VolumeError, match="`voxel_size`"):
        V.create_volume(str(tmp_path / "x.tif"), (2, 4, 4), "uint8", (40, 4))
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        V.create_volume(str(tmp_path / "nowhere" / "x.tif"), (2, 4, 4), "uint8")
    assert os.listdir(tmp_path) == []


def test_a_patch_of_volume_writer_write_reaches_every_format(tmp_path, monkeypatch):
    # The upscale tests simulate a full disk this way: VolumeWriter is every writer's base.
    seen = []
    original = V.VolumeWriter.write
    monkeypatch.setattr(V.VolumeWriter, "write",
                        lambda self, *args: seen.append(args[0]) or original(self, *args))
    for name in ["a.tif", "a.h5", "a_dir"]:
        V.write_volume(str(tmp_path / name), np.zeros((2, 4, 4), np.uint8))
    assert seen == [0, 1] * 3
