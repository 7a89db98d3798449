"""Tests of emzoo.training.summaries: the same event files with and without tensorboard."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from emzoo.training import summaries, write_image_summary, write_scalar_summary  # noqa: E402


def _events(folder):
    found = {}
    for event_file in folder.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                found[(value.tag, event.step)] = value
    return found


@pytest.mark.parametrize("tensorboard", [True, False])
def test_scalar_and_image_summaries(tmp_path, monkeypatch, tensorboard):
    if tensorboard and not summaries._tensorboard_installed():
        pytest.skip("tensorboard is not installed")
    monkeypatch.setattr(summaries, "_tensorboard_installed", lambda: tensorboard)
    writer = tf.summary.create_file_writer(str(tmp_path))
    images = np.linspace(0, 1, 5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7, 1)
    with writer.as_default(step=3):
        assert write_scalar_summary("train/loss", 0.25, 3)
        assert write_image_summary("images/x0", images, 3)
    writer.flush()
    events = _events(tmp_path)
    scalar, image = events[("train/loss", 3)], events[("images/x0", 3)]
    assert scalar.metadata.plugin_data.plugin_name == "scalars"
    assert float(tf.make_ndarray(scalar.tensor)) == 0.25
    assert image.metadata.plugin_data.plugin_name == "images"
    encoded = tf.make_ndarray(image.tensor)
    assert encoded[:2].tolist() == [b"7", b"6"] and len(encoded) == 2 + 3  # width, height, 3 PNGs
    first = tf.io.decode_png(encoded[2]).numpy()
    np.testing.assert_allclose(first[..., 0] / 255.0, images[0, ..., 0], atol=1 / 255)
