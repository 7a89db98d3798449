"""FILM TFRecord format: the exact feature keys, write/read round trip, batched dataset."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from emzoo.data import tfrecord as R  # noqa: E402


def _triplets(count=5, size=20, colour=False):
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        shape = (size, size, 3) if colour else (size, size)
        frames = [rng.integers(0, 256, shape).astype(np.uint8) for _ in range(3)]
        out.append((*frames, f"clip{i}/im2.png"))
    return out


def test_expand_pattern_uses_film_shard_names():
    assert R.expand_pattern("d/t@3")[2] == "d/t-00002-of-00003"


def test_records_carry_film_keys_and_round_trip(tmp_path):
    triplets = _triplets(colour=True)
    path = tmp_path / "train.tfrecord-00000-of-00001"
    assert R.write_film_tfrecord(path, triplets) == 5
    raw = next(iter(tf.data.TFRecordDataset(str(path)))).numpy()
    example = tf.train.Example.FromString(raw)
    keys = set(example.features.feature)
    expected = {"path"} | {f"frame_{i}/{k}" for i in range(3) for k in ("encoded", "format", "height", "width")}
    assert keys == expected
    assert example.features.feature["frame_1/format"].bytes_list.value[0] == b"png"
    assert example.features.feature["frame_0/height"].int64_list.value[0] == 20
    for (x0, y, x1, name), original in zip(R.read_film_tfrecord(str(tmp_path / "train.tfrecord@1")), triplets):
        np.testing.assert_allclose(x0 * 255, original[0], atol=1e-3)
        np.testing.assert_allclose(y * 255, original[1], atol=1e-3)  # y = frame_1 (middle)
        np.testing.assert_allclose(x1 * 255, original[2], atol=1e-3)
        assert name == original[3]


@pytest.mark.parametrize("channels", [1, 3])
def test_dataset_elements_match_the_triplet_contract(tmp_path, channels):
    triplets = _triplets(count=6, colour=(channels == 3))
    path = tmp_path / "t.tfrecord"
    R.write_film_tfrecord(path, triplets)
    ds = R.film_tfrecord_dataset(str(path), crop=None, batch_size=3, channels=channels, augment=False,
                                 shuffle=False, repeat=False)
    batches = list(ds)
    assert len(batches) == 2
    inputs, y = batches[0]
    assert inputs["x0"].shape == (3, 20, 20, channels) and y.shape == (3, 20, 20, channels)
    assert np.all(inputs["time"].numpy() == 0.5)
    expected_y = triplets[0][1].astype(np.float32) / 255
    if channels == 1:
        np.testing.assert_allclose(y[0, ..., 0], expected_y, atol=1e-6)
    else:
        np.testing.assert_allclose(y[0], expected_y, atol=1e-6)
    np.testing.assert_allclose(inputs["x1"][1, ..., 0] if channels == 1 else inputs["x1"][1],
                               triplets[1][2].astype(np.float32) / 255, atol=1e-6)


def test_grey_records_with_random_crops_and_augmentation(tmp_path):
    base = np.tile(np.arange(20, dtype=np.uint8)[None, :] * 10, (20, 1))
    triplets = [(base, base + 1, base + 2, "a")] * 4
    path = tmp_path / "g.tfrecord"
    R.write_film_tfrecord(path, triplets)
    ds = R.film_tfrecord_dataset(str(path), crop=8, batch_size=2, channels=1, seed=1)
    inputs, y = next(iter(ds))
    assert y.shape == (2, 8, 8, 1)
    x0, yy, x1 = inputs["x0"].numpy() * 255, y.numpy() * 255, inputs["x1"].numpy() * 255
    # joint crop and augmentation: the three frames still differ by the constants 1 and 2 (or reversed)
    np.testing.assert_allclose(x0 + x1, 2 * yy, atol=1e-3)
    assert np.allclose(np.abs(x0 - yy), 1, atol=1e-3)


def test_missing_files_and_existing_output(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        R.film_tfrecord_dataset(str(tmp_path / "nope@2"))
    path = tmp_path / "x.tfrecord"
    R.write_film_tfrecord(path, _triplets(1))
    with pytest.raises(Exception, match="already exists"):
        R.write_film_tfrecord(path, _triplets(1))
