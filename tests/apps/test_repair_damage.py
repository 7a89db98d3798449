"""``emzoo repair --detect`` / ``--mask`` end to end, through a subprocess."""

import json
import os

import numpy as np
import pytest
from scipy import ndimage

from app_runner import assert_one_line_error, run_emzoo
from emzoo.data.volumes import read_volume, write_volume


@pytest.fixture
def damaged(tmp_path):
    """A smooth 16-slice stack (neighbours alike, as EM sections) with slice 5 blank."""
    rng = np.random.default_rng(0)
    volume = ndimage.gaussian_filter(rng.normal(size=(16, 96, 96)), (2.0, 2.5, 2.5))
    volume = (volume - volume.mean()) / volume.std() + rng.normal(0, 0.15, volume.shape)
    array = np.clip(128 + 40 * volume, 0, 255).astype(np.uint8)
    array[5] = 0
    path = tmp_path / "stack.tif"
    write_volume(str(path), array, voxel_size=(50, 4, 4))
    return path, array


def test_detect_repairs_the_damaged_slice_only(tmp_path, tiny_model, damaged):
    path, array = damaged
    done = run_emzoo(["repair", str(path), "-o", str(tmp_path / "fixed.tif"), "--detect",
                      "--report", str(tmp_path / "found.json"), "--save-mask",
                      str(tmp_path / "mask.tif"), "--model", tiny_model, "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "slice 5: blank" in done.stdout
    report = json.loads((tmp_path / "found.json").read_text())
    assert report["damaged_slices"] == [5]
    mask = read_volume(str(tmp_path / "mask.tif"))[0]
    assert mask.shape == array.shape and mask[5].all() and not np.delete(mask, 5, 0).any()
    fixed = read_volume(str(tmp_path / "fixed.tif"))[0]
    np.testing.assert_array_equal(np.delete(fixed, 5, 0), np.delete(array, 5, 0))
    assert fixed[5].any()  # the blank slice is replaced by the model's interpolation


def test_dry_run_only_reports(tmp_path, damaged):
    path, _ = damaged
    done = run_emzoo(["repair", str(path), "--detect", "--dry-run", "--report",
                      str(tmp_path / "found.json")], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "slice 5: blank" in done.stdout
    assert sorted(os.listdir(tmp_path)) == ["found.json", "stack.tif"]


def test_mask_repairs_only_the_masked_pixels_and_the_band(tmp_path, tiny_model, damaged):
    path, array = damaged
    mask = np.zeros(array.shape, np.uint8)
    mask[8, 20:40, 30:50] = 1
    write_volume(str(tmp_path / "mask.tif"), mask)
    done = run_emzoo(["repair", str(path), "-o", str(tmp_path / "fixed.tif"), "--mask",
                      str(tmp_path / "mask.tif"), "--band", "3", "--model", tiny_model,
                      "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    fixed = read_volume(str(tmp_path / "fixed.tif"))[0]
    far = ndimage.distance_transform_edt(mask[8] == 0) > 3
    np.testing.assert_array_equal(fixed[8][far], array[8][far])
    np.testing.assert_array_equal(np.delete(fixed, 8, 0), np.delete(array, 8, 0))
    assert not np.array_equal(fixed[8], array[8])


@pytest.mark.parametrize("flags, match", [
    (["--detect", "--slices", "3"], "--slices"),
    (["--dry-run", "--mask", "MASK"], "--dry-run"),
    (["--detect", "--dry-run", "--workers", "2"], "--workers"),
    (["--mask", "WRONG"], "mask_shape"),
    (["--detect", "--band", "-1"], "band"),
])
def test_bad_requests_are_one_line(tmp_path, damaged, flags, match):
    path, array = damaged
    write_volume(str(tmp_path / "mask.tif"), np.zeros(array.shape, np.uint8))
    write_volume(str(tmp_path / "wrong.tif"), np.zeros((3, 8, 8), np.uint8))
    flags = [{"MASK": str(tmp_path / "mask.tif"), "WRONG": str(tmp_path / "wrong.tif")}.get(f, f)
             for f in flags]
    before = sorted(os.listdir(tmp_path))
    output = [] if "--dry-run" in flags else ["-o", str(tmp_path / "out.tif")]
    done = run_emzoo(["repair", str(path)] + output + flags + ["--model", "flow"], cwd=tmp_path)
    assert_one_line_error(done, match, tmp_path, before)
