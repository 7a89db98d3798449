"""find_damage and repair_masked on small synthetic stacks (smooth 3-D noise as tissue)."""

import json

import numpy as np
import pytest
from scipy import ndimage

from emzoo.engine.damage import KINDS, find_damage, repair_masked
from emzoo.errors import EmzooError


def tissue(depth=16, size=96, seed=0):
    """A smooth uint8 stack whose neighbouring slices are alike (as EM sections are)."""
    rng = np.random.default_rng(seed)
    volume = ndimage.gaussian_filter(rng.normal(size=(depth, size, size)), (2.0, 2.5, 2.5))
    volume = (volume - volume.mean()) / volume.std()
    noise = rng.normal(0, 0.15, volume.shape)
    return np.clip(128 + 40 * (volume + noise), 0, 255).astype(np.uint8)


def mean_model(inputs, training=False):
    """The mean of the two slices: a model whose output is known."""
    return {"image": (inputs["x0"] + inputs["x1"]) / 2}


def test_clean_stack_has_no_findings():
    report = find_damage(tissue())
    assert report.findings == []
    assert report.mask.dtype == np.uint8 and not report.mask.any()


def test_blank_and_duplicate_slices_are_found():
    volume = tissue()
    volume[5] = 0
    volume[10] = volume[9]
    report = find_damage(volume)
    kinds = {f["slice"]: f["kind"] for f in report.findings}
    assert kinds == {5: "blank", 10: "duplicate"}
    assert (report.mask[5] == KINDS["blank"]).all()
    assert (report.mask[10] == KINDS["duplicate"]).all()
    assert not report.mask[[z for z in range(16) if z not in (5, 10)]].any()


def sections(depth=16, size=96, seed=0):
    """Like :func:`tissue`, but each slice shares little with the next (50 nm sections)."""
    rng = np.random.default_rng(seed)
    volume = ndimage.gaussian_filter(rng.normal(size=(depth, size, size)), (0.35, 2.5, 2.5))
    volume = (volume - volume.mean()) / volume.std()
    return np.clip(128 + 40 * volume, 0, 255).astype(np.uint8)


def duplicates_reported(volume, pairs):
    """The slice reported as a duplicate for each (copy, original) pair, one pair at a time."""
    reported = []
    for copy, original in pairs:
        damaged = volume.copy()
        damaged[copy] = damaged[original]
        report = find_damage(damaged)
        reported.append([f["slice"] for f in report.findings if f["kind"] == "duplicate"])
    return reported


def test_the_copy_of_a_duplicated_pair_is_the_twin_whose_far_side_is_farther():
    # slices alike along z: the missing section makes one side twice as far, on either side
    pairs = [(10, 9), (9, 10)]
    assert duplicates_reported(tissue(), pairs) == [[10], [9]]


def test_the_later_twin_is_the_copy_when_the_sides_do_not_tell():
    # sections that share little: the distances on the two sides differ by chance only
    pairs = [(z, z - 1) for z in range(3, 13)]
    assert duplicates_reported(sections(), pairs) == [[z] for z, _ in pairs]


def test_dark_band_is_found_as_a_region():
    volume = tissue()
    truth = np.zeros(volume.shape[1:], bool)
    truth[30:54] = True  # a quarter of the slice: a fold's dark band
    volume[7][truth] = (volume[7][truth] * 0.3).astype(np.uint8)
    report = find_damage(volume)
    assert report.damaged_slices == [7]
    assert "dark" in {f["kind"] for f in report.findings}
    found = report.mask[7] > 0
    assert (found & truth).sum() / (found | truth).sum() >= 0.5
    assert not np.delete(report.mask, 7, axis=0).any()


def test_report_is_json_and_saved(tmp_path):
    volume = tissue()
    volume[4] = 255
    report = find_damage(volume, mask_output=tmp_path / "mask.tif")
    text = json.dumps(report.to_dict())
    assert '"blank"' in text
    report.save(tmp_path / "report.json")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["findings"][0]["slice"] == 4 and saved["damaged_slices"] == [4]
    import tifffile

    assert (tifffile.imread(tmp_path / "mask.tif") == report.mask).all()


def test_find_damage_refuses_bad_arguments():
    with pytest.raises(EmzooError, match="Received: sensitivity=0"):
        find_damage(tissue(), sensitivity=0)
    with pytest.raises(EmzooError, match="at least 3 slices"):
        find_damage(tissue(depth=2))


def test_empty_mask_gives_the_input_unchanged():
    volume = tissue(depth=6, size=32)
    result = repair_masked(volume, np.zeros_like(volume), "no model needed", progress=False)
    assert result["array"].tobytes() == volume.tobytes()
    assert result["repaired"] == [] and result["repaired_pixels"] == 0


def test_only_masked_pixels_and_the_band_change():
    volume = tissue(depth=6, size=32)
    mask = np.zeros_like(volume)
    mask[2, 10:20, 8:16] = 1
    damaged = volume.copy()
    damaged[2, 10:20, 8:16] = 255
    fixed = repair_masked(damaged, mask, mean_model, band=3, progress=False)["array"]
    expected = np.rint((volume[1].astype(np.float32) + volume[3]) / 2)
    assert np.abs(fixed[2, 10:20, 8:16] - expected[10:20, 8:16]).max() <= 1
    far = ndimage.distance_transform_edt(mask[2] == 0) > 3  # past the band
    assert (fixed[2][far] == damaged[2][far]).all()
    assert (fixed[2][~far] != damaged[2][~far]).any()
    assert (fixed[[0, 1, 3, 4, 5]] == damaged[[0, 1, 3, 4, 5]]).all()


def test_band_zero_changes_only_masked_pixels():
    volume = tissue(depth=5, size=32)
    mask = np.zeros_like(volume)
    mask[2, 5:9, 5:9] = 3
    fixed = repair_masked(volume, mask, mean_model, band=0, progress=False)["array"]
    assert (fixed[mask == 0] == volume[mask == 0]).all()


def test_poisson_blend_takes_the_repair_s_gradients_and_meets_the_intact_pixels():
    volume = tissue(depth=3, size=48)
    volume[0] = np.clip(volume[1].astype(int) + 30, 0, 255)  # the neighbours' mean: slice 1 + 30
    volume[2] = volume[0]
    volume[1] = np.clip(volume[1], 0, 225)
    mask = np.zeros_like(volume)
    mask[1, 12:30, 10:34] = 1
    feather = repair_masked(volume, mask, mean_model, band=3, progress=False)["array"]
    poisson = repair_masked(volume, mask, mean_model, band=3, blend="poisson",
                            progress=False)["array"]
    inside = mask[1] > 0
    # the repair is the slice plus a constant: the feather keeps the step, Poisson removes it
    assert np.abs(feather[1][inside].astype(int) - volume[1][inside]).min() >= 29
    assert np.abs(poisson[1].astype(int) - volume[1]).max() <= 1
    far = ndimage.distance_transform_edt(~inside) > 3
    assert (poisson[1][far] == volume[1][far]).all() and (poisson[[0, 2]] == volume[[0, 2]]).all()


def test_poisson_blend_of_a_whole_slice_is_the_repair():
    volume = tissue(depth=3, size=32)
    mask = np.zeros_like(volume)
    mask[1] = 1
    fixed = repair_masked(volume, mask, mean_model, blend="poisson", progress=False)["array"]
    expected = np.rint((volume[0].astype(np.float32) + volume[2]) / 2)
    assert np.abs(fixed[1] - expected).max() <= 1


def test_an_unknown_blend_is_refused():
    volume = tissue(depth=3, size=16)
    with pytest.raises(EmzooError, match="Invalid value for argument `blend`.*'feather' or 'poisson'"):
        repair_masked(volume, np.zeros_like(volume), mean_model, blend="seamless", progress=False)


def test_a_run_of_masked_slices_is_bridged_from_the_nearest_good_ones():
    volume = np.zeros((5, 16, 16), np.uint8)
    volume[0], volume[4] = 0, 200
    mask = np.zeros_like(volume)
    mask[1:4, :, :8] = 1  # left half damaged in three slices: bridged from 0 and 4
    fixed = repair_masked(volume, mask, mean_model, band=0, progress=False)["array"]
    assert fixed[1:4, 0, 0].tolist() == [50, 100, 150]
    assert (fixed[1:4, :, 8:] == 0).all()


def test_damage_in_the_first_slice_takes_the_next_good_one():
    volume = tissue(depth=4, size=16)
    mask = np.zeros_like(volume)
    mask[0, :4] = 1
    fixed = repair_masked(volume, mask, mean_model, band=0, progress=False)["array"]
    assert (fixed[0, :4] == volume[1, :4]).all()


def test_output_file_keeps_dtype_and_voxel_size(tmp_path):
    from emzoo.data.volumes import open_volume

    volume = (tissue(depth=5, size=32).astype(np.uint16) * 200)
    mask = np.zeros(volume.shape, np.uint8)
    mask[2, :8] = 1
    out = tmp_path / "fixed.h5"
    repair_masked(volume, mask, mean_model, output=out, voxel_size=(30, 4, 4), progress=False)
    with open_volume(str(out)) as written:
        assert written.dtype == np.uint16 and tuple(written.voxel_size) == (30, 4, 4)
        assert (written.read(0) == volume[0]).all()


def test_mask_errors_say_what_is_expected():
    volume = tissue(depth=4, size=16)
    with pytest.raises(EmzooError, match=r"Received: mask_shape=\(3, 16, 16\)"):
        repair_masked(volume, np.zeros((3, 16, 16), np.uint8), mean_model, progress=False)
    everywhere = np.zeros_like(volume)
    everywhere[:, 2, 3] = 1
    with pytest.raises(EmzooError, match=r"pixel \(y=2, x=3\) in every slice"):
        repair_masked(volume, everywhere, mean_model, progress=False)
    with pytest.raises(EmzooError, match="Received: band=-1"):
        repair_masked(volume, np.zeros_like(volume), mean_model, band=-1, progress=False)


def test_cancel_leaves_no_output(tmp_path):
    import threading

    volume = tissue(depth=4, size=16)
    cancel = threading.Event()
    cancel.set()
    out = tmp_path / "fixed.tif"
    with pytest.raises(EmzooError):
        repair_masked(volume, np.zeros_like(volume), mean_model, output=out, cancel=cancel,
                      progress=False)
    assert list(tmp_path.iterdir()) == []


def test_find_damage_is_public():
    import emzoo

    assert emzoo.find_damage is find_damage and "find_damage" in emzoo.__all__


def test_find_damage_reports_progress_and_stops_when_cancelled(tmp_path):
    import threading

    seen = []
    find_damage(tissue(depth=5, size=32), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (20, 20) and len(seen) == 20
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(EmzooError):
        find_damage(tissue(depth=5, size=32), mask_output=tmp_path / "mask.tif", cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_repair_damage_finds_then_repairs_only_the_damage(tmp_path):
    from emzoo.engine.damage import repair_damage

    volume = tissue(depth=8, size=64)
    volume[3] = 0
    given = np.zeros_like(volume)
    given[6, :4, :4] = 1  # marked by hand: repaired too
    done = repair_damage(volume, mean_model, detect=True, mask=given,
                         report=tmp_path / "found.json", save_mask=tmp_path / "mask.tif",
                         progress=False)
    assert done["damaged_slices"] == [3]
    assert json.loads((tmp_path / "found.json").read_text())["damaged_slices"] == [3]
    fixed = done["repair"]["array"]
    assert done["repair"]["repaired"] == [3, 6]
    assert fixed[3].mean() > 50  # the blank slice is interpolated
    untouched = [0, 1, 2, 4, 5, 7]
    assert (fixed[untouched] == volume[untouched]).all()
    dry = repair_damage(volume, mean_model, dry_run=True, progress=False)
    assert "repair" not in dry and dry["damaged_slices"] == [3]
    with pytest.raises(EmzooError, match="Nothing marks the damage"):
        repair_damage(volume, mean_model, detect=False)
