"""``emzoo repair`` end to end, through a subprocess (each app defines its own absl flags)."""

import os

import numpy as np
import pytest

from app_runner import assert_one_line_error, run_emzoo
from emzoo.data.volumes import open_volume, write_volume


@pytest.fixture
def stack(tmp_path):
    path = tmp_path / "stack.tif"
    rng = np.random.default_rng(1)
    array = rng.integers(0, 255, (8, 16, 24)).astype(np.uint8)
    write_volume(str(path), array, voxel_size=(10, 10, 10))
    return path, array


def test_repair_replaces_only_the_listed_slices(tmp_path, tiny_model, stack):
    path, array = stack
    done = run_emzoo(["repair", str(path), "-o", str(tmp_path / "fixed.tif"), "--slices", "2,4-5",
                      "--model", tiny_model, "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "repaired slice(s) 2,4,5" in done.stdout
    with open_volume(str(tmp_path / "fixed.tif")) as fixed:
        assert fixed.voxel_size == pytest.approx((10, 10, 10))
        out = fixed.read_range(0, 8)
    kept = [0, 1, 3, 6, 7]
    np.testing.assert_array_equal(out[kept], array[kept])
    assert not np.array_equal(out[2], array[2])


@pytest.mark.parametrize("flags, match", [
    (["--slices", "0"], "both sides"),
    (["--slices", "7"], "both sides"),
    (["--slices", "99"], "outside"),
    (["--slices", "a,b"], "slices"),
    ([], "--slices"),
    (["--slices", "3", "--model", "no-such-model"], "Unknown model"),
])
def test_bad_input_gives_one_line_and_no_output(tmp_path, stack, flags, match):
    path, _ = stack
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["repair", str(path), "-o", str(tmp_path / "fixed.tif")] + flags,
                     cwd=tmp_path)
    assert_one_line_error(done, match, tmp_path, before)


def test_single_slice_and_existing_output(tmp_path):
    single = tmp_path / "one.tif"
    write_volume(str(single), np.zeros((1, 8, 8), np.uint8))
    target = tmp_path / "fixed.tif"
    target.write_bytes(b"keep")
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["repair", str(single), "-o", str(tmp_path / "new.tif"), "--slices", "0"],
                     cwd=tmp_path)
    assert_one_line_error(done, "slice", tmp_path, before)
    done = run_emzoo(["repair", str(single), "-o", str(target), "--slices", "0"], cwd=tmp_path)
    assert_one_line_error(done, "--overwrite", tmp_path, before)
    assert target.read_bytes() == b"keep"
