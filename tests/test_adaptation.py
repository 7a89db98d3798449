"""Self-supervised adaptation: lateral triplets at the right spacing, never worse than the base
model on the held-out triplets, a loadable folder with its provenance, and only the input read."""

import json

import keras
import numpy as np
import pytest
import tifffile

import emzoo
from emzoo import adaptation as A
from emzoo.errors import EmzooError, VolumeError
from emzoo.testing import TINY_FILM, save_tiny_film

pytestmark = pytest.mark.tf_only


def smooth_volume(depth=20, size=64, seed=0):
    """uint8 (Z, Y, X) of smooth blobs (so neighbouring planes resemble each other)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.random((depth * 4, size, size)), sigma=(4, 2, 2))[::4]
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return np.round(noise * 255).astype(np.uint8)


def test_lateral_gaps_match_each_recursion_level():
    assert A.lateral_gaps(40.0, 10.0, 4) == [2, 1]        # outer frames 40 nm and 20 nm apart
    assert A.lateral_gaps(50.0, 4.0, 8) == [6, 3, 2]
    assert A.lateral_gaps(10.0, 10.0, 2) == [1]           # isotropic input: never below 1 px


def test_stretch_along_z_is_linear_and_keeps_rows():
    plane = np.array([[0.0, 1.0], [4.0, 5.0], [8.0, 9.0]], np.float32)
    stretched = A.stretch_along_z(plane, 2.0)
    assert stretched.shape == (5, 2)
    np.testing.assert_allclose(stretched[:, 0], [0, 2, 4, 6, 8])
    np.testing.assert_allclose(stretched[::2], plane)


def test_held_out_triplets_use_only_the_held_out_x_range():
    block = np.broadcast_to(np.arange(64, dtype=np.float32)[None, None, :], (10, 64, 64)).copy()
    triplets = A.LateralTriplets(block / 64.0, ratio=4.0, gaps=[1, 2], crop=32)
    rng = np.random.default_rng(0)
    for held_out in (False, True):
        inputs, target = triplets.batch(rng, 16, 1, held_out=held_out)
        values = np.concatenate([inputs["x0"].ravel(), inputs["x1"].ravel(), target.ravel()]) * 64
        if held_out:
            assert values.min() >= triplets.split - 0.5
        else:
            assert values.max() <= triplets.split + 0.5


@pytest.fixture
def base(tmp_path):
    return str(save_tiny_film(tmp_path / "base"))


def test_adapt_writes_a_loadable_folder_with_its_provenance(base, tmp_path):
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, smooth_volume(), imagej=True, resolution=(100, 100),
                     metadata={"spacing": 0.04, "unit": "um", "axes": "ZYX"})
    report = emzoo.adapt(base, str(stack), factor=4, steps=4, crop=32, batch_size=2,
                         evaluate_every=2, output=tmp_path / "adapted", progress=False)
    assert report["gaps"] == [2, 1] and report["steps"] == 4
    assert report["validation_after"] <= report["validation_before"]
    entry = json.loads((tmp_path / "adapted" / "config.json").read_text())
    record = entry["metadata"]["adaptation"]
    assert record["input"].endswith("stack.tif") and len(record["input_sha256"]) == 64
    assert record["budget"] == {"minutes": None, "steps": 4}
    assert record["self_validation_mae"]["after"] == report["validation_after"]
    loaded = emzoo.load(str(tmp_path / "adapted"), compile=False)
    for a, b in zip(loaded.get_weights(), report["model"].get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(EmzooError, match="already holds a model"):
        emzoo.adapt(base, str(stack), factor=4, steps=1, crop=32, batch_size=2,
                    output=tmp_path / "adapted", progress=False)


def test_harmful_adaptation_keeps_the_base_weights(base):
    volume = smooth_volume()
    report = emzoo.adapt(base, volume, voxel_size=(40, 10, 10), factor=4, steps=3, crop=32,
                         batch_size=2, learning_rate=5.0, evaluate_every=1, progress=False)
    reference = emzoo.load(base, compile=False)
    if not report["improved"]:
        for a, b in zip(report["model"].get_weights(), reference.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert report["validation_after"] <= report["validation_before"]


def test_adaptation_reads_only_the_input(base, tmp_path):
    """The weights are identical whether or not the dropped slices sit beside the input."""
    full = smooth_volume(depth=37)
    kept, dropped = full[::4], np.delete(full, np.arange(0, 37, 4), axis=0)
    runs = []
    for folder, with_dropped in (("alone", False), ("beside", True)):
        (tmp_path / folder).mkdir()
        tifffile.imwrite(tmp_path / folder / "kept.tif", kept)
        if with_dropped:
            tifffile.imwrite(tmp_path / folder / "dropped.tif", dropped)
        keras.utils.set_random_seed(0)
        runs.append(emzoo.adapt(base, str(tmp_path / folder / "kept.tif"), voxel_size=(40, 10, 10),
                                factor=4, steps=3, crop=32, batch_size=2, evaluate_every=1,
                                learning_rate=1e-3, progress=False))
    for a, b in zip(runs[0]["model"].get_weights(), runs[1]["model"].get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bad_input_is_refused(base):
    with pytest.raises(EmzooError, match="budget"):
        emzoo.adapt(base, smooth_volume(), voxel_size=(40, 10, 10))
    with pytest.raises(VolumeError, match="voxel size"):
        emzoo.adapt(base, smooth_volume(), steps=1)
    with pytest.raises(VolumeError, match="too small"):
        emzoo.adapt(base, smooth_volume(depth=3, size=16), voxel_size=(40, 10, 10), steps=1)
    assert TINY_FILM["channels"] == 1
