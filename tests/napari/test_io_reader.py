"""The napari reader contribution (plain functions, no napari needed): emzoo's readers, voxel size as scale."""

import numpy as np
import pytest
import tifffile

from emzoo.data import volumes as V
from emzoo.napari.io import get_reader, qt_missing_hint


def test_an_imagej_tiff_is_read_by_emzoo_with_its_voxel_size_as_scale(tmp_path):
    path = tmp_path / "stack.tif"
    V.write_volume(str(path), np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5), (50, 4, 4))
    reader = get_reader(str(path))
    assert reader is not None
    (array, meta, kind), = reader(str(path))
    assert kind == "image" and meta == {"name": "stack.tif", "scale": (50.0, 4.0, 4.0)}
    np.testing.assert_array_equal(array, V.read_volume(str(path))[0])


def test_an_ome_zarr_is_read_with_its_scale(tmp_path):
    pytest.importorskip("zarr")
    path = tmp_path / "vol.ome.zarr"
    V.write_volume(str(path), np.ones((2, 8, 8), np.uint16), (30, 5, 5))
    (array, meta, _), = get_reader([str(path)])([str(path)])
    assert meta["scale"] == (30.0, 5.0, 5.0) and array.shape == (2, 8, 8)


def test_colour_pictures_and_other_files_are_left_to_napari(tmp_path):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    assert get_reader(str(rgb)) is None
    assert get_reader(str(tmp_path / "x.png")) is None
    assert get_reader(str(tmp_path / "missing.tif")) is None


def test_the_qt_hint_names_the_system_libraries():
    hint = qt_missing_hint()
    for library in ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"):
        assert library in hint


def test_missing_qt_libraries_are_named_before_qt_starts(monkeypatch, capsys):
    import ctypes.util

    from emzoo.napari import __main__ as entry
    from emzoo.napari import io

    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None if name == "xcb-cursor" else name)
    assert io.missing_qt_libraries() == ["libxcb-cursor0"]
    assert entry.main([]) == 1  # before napari or TensorFlow is imported
    err = capsys.readouterr().err
    assert "lacks libxcb-cursor0" in err and "apt-get install libxcb-cursor0" in err
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert io.missing_qt_libraries() == []
