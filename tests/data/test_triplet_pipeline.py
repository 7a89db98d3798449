"""Triplet pipelines: shapes, ranges, split by z, determinism, joint augmentation, bad input."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from emzoo.data import augment as A  # noqa: E402
from emzoo.data import triplets as T  # noqa: E402
from emzoo.errors import EmzooError, VolumeError  # noqa: E402


def _ramp_volume(depth=20, size=24):
    """Slice z is filled with the value 10 * z (uint8) plus a small x-gradient, so z is recoverable."""
    z = np.arange(depth, dtype=np.uint8)[:, None, None] * 10
    x = np.arange(size, dtype=np.uint8)[None, None, :] % 5
    return np.broadcast_to(z + x, (depth, size, size)).astype(np.uint8)


def _z_of(frame):
    return int(round(float(np.min(frame)) * 255 / 10))


def test_split_ranges_do_not_overlap():
    assert T.split_range(30, "train", 0.2) == (0, 24)
    assert T.split_range(30, "validation", 0.2) == (24, 30)
    with pytest.raises(EmzooError, match="split"):
        T.split_range(30, "test")


@pytest.mark.parametrize("channels", [1, 3])
def test_batches_shapes_ranges_and_true_triplets(channels):
    volume = _ramp_volume()
    ds = T.triplet_dataset(volume, gaps=(1, 2, 4), crop=16, batch_size=4, channels=channels, augment=False)
    for inputs, y in ds.take(3):
        assert inputs["x0"].shape == (4, 16, 16, channels) and y.shape == (4, 16, 16, channels)
        assert inputs["time"].shape == (4, 1) and np.all(inputs["time"].numpy() == 0.5)
        for tensor in (inputs["x0"], inputs["x1"], y):
            assert tensor.dtype == tf.float32
            assert 0.0 <= float(tf.reduce_min(tensor)) and float(tf.reduce_max(tensor)) <= 1.0
        for i in range(4):
            z0, z, z1 = (_z_of(t[i].numpy()) for t in (inputs["x0"], y, inputs["x1"]))
            assert z1 - z == z - z0 and z - z0 in (1, 2, 4)
            assert z1 < 16  # train range of 20 slices at val_fraction 0.2


def test_training_stream_is_reproducible_and_resumable():
    volume = _ramp_volume()
    first = [y.numpy() for _, y in T.triplet_dataset(volume, crop=16, batch_size=2, seed=3).take(4)]
    again = [y.numpy() for _, y in T.triplet_dataset(volume, crop=16, batch_size=2, seed=3).take(4)]
    resumed = [y.numpy() for _, y in T.triplet_dataset(volume, crop=16, batch_size=2, seed=3,
                                                        initial_batch=2).take(2)]
    other = [y.numpy() for _, y in T.triplet_dataset(volume, crop=16, batch_size=2, seed=4).take(4)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first[2:], resumed):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))


def test_validation_triplets_are_deterministic_and_only_from_the_last_slices():
    volume = _ramp_volume(depth=20)
    # validation range = slices 16..19: g=1 centres 17, 18; g=2 none.
    ds = T.validation_triplets([volume, volume], gaps=(1, 2), crop=8, batch_size=3)
    batches = [(i["x0"].numpy(), y.numpy(), i["x1"].numpy()) for i, y in ds]
    again = [(i["x0"].numpy(), y.numpy()) for i, y in T.validation_triplets([volume, volume], gaps=(1, 2),
                                                                             crop=8, batch_size=3)]
    assert [b[1].shape[0] for b in batches] == [3, 1]
    for (x0, y, x1), (x0b, yb) in zip(batches, again):
        np.testing.assert_array_equal(y, yb)
        np.testing.assert_array_equal(x0, x0b)
    centres = [_z_of(y[i]) for _, y, _ in batches for i in range(y.shape[0])]
    assert centres == [17, 18, 17, 18]
    assert T.count_triplets(volume, gaps=(1, 2), split="validation") == 2
    assert T.count_triplets(volume, gaps=(1, 2), split="train") == 14 + 12
    train = T.TripletSampler(volume, gaps=(1, 2), crop=8, split="train")
    assert max(z + g for _, z, g in train.triplets()) <= 15


def test_augmentation_is_joint():
    rng = np.random.default_rng(0)
    frame = rng.random((6, 6)).astype(np.float32)
    stacked = np.stack([frame, frame + 1, frame + 2], axis=-1)
    batch = np.repeat(stacked[None], 32, axis=0)
    out = A.augment_batch(batch, (0, 1))
    seen = set()
    for sample in out:
        y = sample[..., 1] - 1
        # Each frame got the same geometric transform: the frames still differ by constants.
        np.testing.assert_allclose(sample[..., 0] + sample[..., 2], 2 * y + 2, atol=1e-6)
        reversed_ = bool(np.allclose(sample[..., 0], y + 2))
        np.testing.assert_allclose(sample[..., 2 if not reversed_ else 0], y + 2, atol=1e-6)
        seen.add((reversed_, tuple(np.round(y.ravel()[:3], 5))))
    assert len(seen) > 4  # rotations, flips and reversals all occur
    np.testing.assert_array_equal(out, A.augment_batch(batch, (0, 1)))


def test_small_rotation_keeps_frames_joint_and_in_range():
    frame = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    batch = tf.constant(np.stack([frame, frame, frame], axis=-1)[None].repeat(4, axis=0))
    out = A.random_rotate(batch, (0, 2), max_degrees=20.0, probability=1.0).numpy()
    np.testing.assert_allclose(out[..., 0], out[..., 1])
    np.testing.assert_allclose(out[..., 2], out[..., 1])
    assert out.min() >= 0.0 and out.max() <= 1.0 and not np.allclose(out[0, ..., 0], frame)


def test_histogram_matching_maps_frames_to_the_reference():
    volume = _ramp_volume(depth=12)
    reference = np.linspace(0.4, 0.6, 1000, dtype=np.float32)
    ds = T.triplet_dataset(volume, gaps=(1,), crop=24, batch_size=2, histogram_match=reference, augment=False)
    inputs, y = next(iter(ds))
    for tensor in (inputs["x0"], y, inputs["x1"]):
        values = tensor.numpy()
        assert 0.39 <= values.min() and values.max() <= 0.61
        assert abs(float(np.median(values)) - 0.5) < 0.05


def test_bad_inputs():
    volume = _ramp_volume(depth=6, size=16)
    with pytest.raises(VolumeError, match="crop is larger.*Received: crop=32"):
        T.triplet_dataset(volume, crop=32)
    with pytest.raises(VolumeError, match="No \\(validation\\) triplet fits"):
        T.triplet_dataset(volume, gaps=(2,), crop=8, split="validation")
    with pytest.raises(EmzooError, match="gaps"):
        T.triplet_dataset(volume, gaps=(0,), crop=8)
    with pytest.raises(EmzooError, match="channels"):
        T.triplet_dataset(volume, crop=8, channels=2)
    with pytest.raises(VolumeError, match="2-D image"):
        T.triplet_dataset(np.zeros((16, 16), np.uint8), crop=8)


def test_shared_volumes_feed_the_pipeline(shared_data):
    sources = [shared_data / "isbi2012_sstem" / "volume.tif", shared_data / "flyem_medulla_fibsem_10nm" / "volume.tif"]
    ds = T.triplet_dataset(sources, gaps=(1, 2, 4), crop=64, batch_size=2)
    inputs, y = next(iter(ds))
    assert y.shape == (2, 64, 64, 1) and float(tf.reduce_max(y)) <= 1.0
    assert T.count_triplets(sources[0], gaps=(1, 2, 4), split="validation") == 4 + 2
