"""Outputs never lose data: HDF5 datasets written beside the others, inputs never replaced, leftovers
of killed runs removed, unwritable folders refused before anything is made."""

import os

import h5py
import numpy as np
import pytest
import tifffile

from emzoo.data import volumes as V
from emzoo.data.volumes import check_not_input
from emzoo.data.volumes.writer import check_writable, leftovers
from emzoo.errors import VolumeError


def _lab_file(path):
    """An HDF5 file as labs keep them: raw, a label group and a sibling dataset."""
    raw = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    with h5py.File(path, "w") as f:
        f.create_dataset("volumes/raw", data=raw).attrs["resolution"] = (40.0, 4.0, 4.0)
        f.create_dataset("volumes/labels/neuron_ids", data=np.ones((4, 5, 6), np.uint64))
        f.create_dataset("meta/offsets", data=np.arange(3))
    return raw


def _contents(path):
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, node: found.__setitem__(name, node[()].tobytes())
                     if isinstance(node, h5py.Dataset) else None)
    return found


def test_hdf5_dataset_written_into_the_input_file_keeps_every_other_dataset(tmp_path):
    path = tmp_path / "vol.h5"
    raw = _lab_file(path)
    before = _contents(path)
    with V.open_volume(f"{path}:/volumes/raw") as source:  # open while writing, as an upscale is
        with V.create_volume(f"{path}:/volumes/up", source.shape, source.dtype, (20, 4, 4),
                             overwrite=True) as out:
            for z in range(len(source)):
                out.write(z, source.read(z) // 2)
        np.testing.assert_array_equal(source.read(3), raw[3])  # still readable after the write
    after = _contents(path)
    assert {name: after[name] for name in before} == before
    assert after["volumes/up"] == (raw // 2).tobytes()
    assert os.listdir(tmp_path) == ["vol.h5"]
    with V.open_volume(f"{path}:/volumes/up") as up:
        assert up.voxel_size == (20.0, 4.0, 4.0)


def test_hdf5_overwrite_replaces_only_its_dataset_and_an_abort_leaves_the_old_one(tmp_path):
    path = tmp_path / "vol.h5"
    _lab_file(path)
    V.write_volume(f"{path}:/volumes/up", np.full((2, 5, 6), 7, np.uint8))
    before = _contents(path)
    writer = V.create_volume(f"{path}:/volumes/up", (2, 5, 6), "uint8", overwrite=True)
    writer.write(0, np.zeros((5, 6), np.uint8))
    writer.abort()
    assert _contents(path) == before
    with pytest.raises(VolumeError, match="already exists"):
        V.create_volume(f"{path}:/volumes/up", (2, 5, 6), "uint8")
    V.write_volume(f"{path}:/volumes/up", np.full((2, 5, 6), 9, np.uint8), overwrite=True)
    after = _contents(path)
    assert after["volumes/up"] == np.full((2, 5, 6), 9, np.uint8).tobytes()
    assert {k: v for k, v in after.items() if k != "volumes/up"} == {
        k: v for k, v in before.items() if k != "volumes/up"}


def test_hdf5_output_naming_a_group_is_refused(tmp_path):
    path = tmp_path / "vol.h5"
    _lab_file(path)
    before = _contents(path)
    with pytest.raises(VolumeError, match="'/volumes/labels' is a group"):
        V.create_volume(f"{path}:/volumes/labels", (4, 5, 6), "uint8", overwrite=True)
    with pytest.raises(VolumeError, match="is a group of the HDF5 file, not a dataset"):
        V.open_volume(f"{path}:/volumes")
    assert _contents(path) == before


@pytest.mark.parametrize("fmt", ["tif", "h5", "h5-bare", "zarr-sibling", "folder"])
def test_the_input_is_never_replaced_even_with_overwrite(tmp_path, fmt):
    array = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    if fmt == "tif":
        source = output = str(tmp_path / "in.tif")
    elif fmt.startswith("h5"):
        source = f"{tmp_path / 'in.h5'}:/volumes/raw"
        output = str(tmp_path / "in.h5") if fmt == "h5-bare" else source
    elif fmt == "zarr-sibling":
        pytest.importorskip("zarr")
        source, output = f"{tmp_path / 'in.zarr'}:/raw", f"{tmp_path / 'in.zarr'}:/up"
    else:
        source = output = str(tmp_path / "slices")
    V.write_volume(source, array)
    with V.open_volume(source) as volume:
        with pytest.raises(VolumeError, match="replace"):
            V.create_volume(output, volume.shape, volume.dtype, overwrite=True)
        with pytest.raises(VolumeError, match="replace"):
            check_not_input(source, output)
    np.testing.assert_array_equal(V.read_volume(source)[0], array)


def test_check_not_input_resolves_links_and_allows_another_hdf5_dataset(tmp_path):
    V.write_volume(str(tmp_path / "in.tif"), np.zeros((2, 3, 3), np.uint8))
    os.symlink(tmp_path / "in.tif", tmp_path / "link.tif")
    with pytest.raises(VolumeError, match="Received: input=.*in.tif.*output=.*link.tif"):
        check_not_input(str(tmp_path / "in.tif"), str(tmp_path / "link.tif"))
    V.write_volume(f"{tmp_path / 'f.h5'}:/volumes/raw", np.zeros((2, 3, 3), np.uint8))
    check_not_input(f"{tmp_path / 'f.h5'}:/volumes/raw", f"{tmp_path / 'f.h5'}:/volumes/up")
    check_not_input(str(tmp_path / "in.tif"), str(tmp_path / "other.tif"))


def test_a_closed_input_may_be_overwritten(tmp_path):
    path = str(tmp_path / "a.tif")
    V.write_volume(path, np.zeros((2, 3, 3), np.uint8))
    with V.open_volume(path) as volume:
        volume.read(0)
    V.write_volume(path, np.ones((2, 3, 3), np.uint8), overwrite=True)
    assert V.read_volume(path)[0].max() == 1


def test_leftovers_of_a_killed_run_are_removed_and_reported(tmp_path, capsys):
    dead = 2**22 + 12345  # above any pid_max: no such process
    old_file = tmp_path / f".out.tif.0123abcd-{dead}.partial"
    old_file.write_bytes(b"x" * 100)
    old_folder = tmp_path / ".out.tif.89abcdef.partial"  # the form without a process id
    old_folder.mkdir()
    live = tmp_path / f".out.tif.fedcba98-{os.getpid()}.partial"  # a writer alive now
    live.write_bytes(b"y")
    unrelated = tmp_path / f".other.tif.0123abcd-{dead}.partial"
    unrelated.write_bytes(b"z")
    V.write_volume(str(tmp_path / "out.tif"), np.zeros((2, 3, 3), np.uint8))
    err = capsys.readouterr().err
    assert "removed 2 unfinished output(s) of an earlier run" in err and str(old_file) in err
    assert "another process is writing" in err and str(live) in err
    assert sorted(os.listdir(tmp_path)) == sorted(["out.tif", live.name, unrelated.name])


def test_leftover_hdf5_datasets_of_a_killed_run_are_removed(tmp_path, capsys):
    path = tmp_path / "vol.h5"
    _lab_file(path)
    with h5py.File(path, "a") as f:
        f.create_dataset(f"volumes/.up.0123abcd-{2**22 + 1}.partial", data=np.zeros(4, np.uint8))
    V.write_volume(f"{path}:/volumes/up", np.zeros((2, 3, 3), np.uint8))
    assert "removed 1 unfinished output(s)" in capsys.readouterr().err
    with h5py.File(path, "r") as f:
        assert sorted(f["volumes"]) == ["labels", "raw", "up"]


def test_leftovers_pattern():
    assert leftovers([".a.tif.0123abcd.partial", ".a.tif.0123abcd.partial.old", "a.tif",
                      ".ab.tif.0123abcd.partial", f".a.tif.0123abcd-{os.getpid()}.partial"], "a.tif") == (
        [".a.tif.0123abcd.partial", ".a.tif.0123abcd.partial.old"], [f".a.tif.0123abcd-{os.getpid()}.partial"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_read_only_output_folder_is_refused_naming_the_output(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(VolumeError, match=r"Cannot write in the output folder .*ro.*Received: output=.*out\.tif'"):
            V.create_volume(str(folder / "out.tif"), (2, 3, 3), "uint8")
        with pytest.raises(VolumeError, match="permission denied"):
            check_writable(str(folder / "out.h5:/volumes/raw"))
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []


def test_unwritable_folder_is_refused_before_anything_is_made(tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path)
                        else real_access(path, mode))
    with pytest.raises(VolumeError, match=r"Cannot write in the output folder .* Received: output=.*x\.tif'"):
        V.create_volume(str(tmp_path / "x.tif"), (2, 3, 3), "uint8")
    assert os.listdir(tmp_path) == []


def test_tiff_input_stays_byte_identical_after_a_refused_overwrite(tmp_path):
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4), imagej=True,
                     metadata={"axes": "ZYX"})
    before = path.read_bytes()
    with V.open_volume(str(path)) as volume:
        with pytest.raises(VolumeError, match="input volume itself"):
            V.write_volume(str(path), volume.read_range(0, 2), overwrite=True)
    assert path.read_bytes() == before


def test_a_folder_that_refuses_files_is_reported_before_anything_is_made(tmp_path, monkeypatch):
    """As root (os.access says yes) on a read-only mount: the probe file is refused."""
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(VolumeError, match=r"Cannot write in the output folder .*\(read-only file "
                                          r"system\).*Received: output=.*o\.h5:/v'"):
        V.create_volume(str(tmp_path / "o.h5:/v"), (2, 3, 3), "uint8")
    assert os.listdir(tmp_path) == []


def test_output_exists_means_the_dataset_for_hdf5_and_the_path_otherwise(tmp_path):
    path = tmp_path / "vol.h5"
    _lab_file(path)
    assert not V.output_exists(f"{path}:/volumes/up")
    assert V.output_exists(f"{path}:/volumes/raw") and V.output_exists(f"{path}:/volumes/labels")
    assert V.output_exists(str(path))  # a bare file means its /volumes/raw, present here
    assert not V.output_exists(str(tmp_path / "new.tif"))


def test_check_not_input_resolves_a_bare_hdf5_input_as_the_reader_does(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("em/stack", data=np.zeros((2, 3, 3), np.uint8))  # the only 3-D dataset
    with pytest.raises(VolumeError, match="input volume itself"):
        check_not_input(str(path), f"{path}:/em/stack")
    check_not_input(str(path), f"{path}:/em/up")
