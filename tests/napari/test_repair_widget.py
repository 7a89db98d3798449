"""The "Find and repair damage" widget in a real napari.Viewer: find, review, repair, cancel."""

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("napari")
pytest.importorskip("pytestqt")


def _tissue(depth=16, size=96):
    """A smooth uint8 stack whose neighbouring slices are alike (as EM sections are)."""
    rng = np.random.default_rng(0)
    volume = ndimage.gaussian_filter(rng.normal(size=(depth, size, size)), (2.0, 2.5, 2.5))
    volume = (volume - volume.mean()) / volume.std()
    noise = rng.normal(0, 0.15, volume.shape)
    return np.clip(128 + 40 * (volume + noise), 0, 255).astype(np.uint8)


def _widget(viewer):
    from emzoo.napari.repair_widget import RepairWidget

    widget = RepairWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Find and repair damage")
    widget.model.setCurrentText("flow")
    return widget


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def test_find_adds_labels_then_repair_adds_an_image(make_napari_viewer, qtbot):
    pytest.importorskip("cv2")
    from emzoo.engine.damage import KINDS, repair_masked

    viewer = make_napari_viewer()
    stack = _tissue()
    stack[4] = 0  # a blank section
    source = viewer.add_image(stack.copy(), name="em", scale=(40.0, 4.0, 4.0))
    widget = _widget(viewer)
    assert widget.find() is not None
    _wait(qtbot, widget)
    assert widget.last_error is None, widget.last_error
    labels = viewer.layers[-1]
    assert labels.name == "em damage" and labels.data.shape == stack.shape
    assert (labels.data[4] == KINDS["blank"]).all() and not np.delete(labels.data, 4, 0).any()
    assert labels.metadata["emzoo_damage"]["damaged_slices"] == [4]
    np.testing.assert_allclose(labels.scale, (40.0, 4.0, 4.0))
    assert widget.progress.value() == widget.progress.maximum()

    labels.data[2, :8, :8] = 1  # the user paints more damage
    assert widget.repair() is not None  # the Labels layer is selected: its image is repaired
    _wait(qtbot, widget)
    assert widget.last_error is None, widget.last_error
    repaired = viewer.layers[-1]
    assert repaired.name == "em repaired"
    expected = repair_masked(stack, labels.data, "flow", progress=False)["array"]
    np.testing.assert_array_equal(repaired.data, expected)
    np.testing.assert_array_equal(source.data, stack)  # the source is untouched
    assert widget.status.text() == "done"


def test_cancel_adds_no_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_tissue(depth=60, size=64), name="em")
    widget = _widget(viewer)
    counts = []
    widget._relay.counted.connect(lambda done, total: counts.append(done))
    worker = widget.find()
    qtbot.waitUntil(lambda: len(counts) > 0, timeout=60_000)
    widget.cancel()
    _wait(qtbot, widget)
    assert len(viewer.layers) == 1
    assert widget.status.text() == "cancelled" and widget.cancel_button.isEnabled() is False
    assert counts[-1] < 4 * 60 and worker is not None


def test_repair_without_labels_is_one_notification(make_napari_viewer, qtbot, monkeypatch):
    from emzoo.napari import repair_widget

    shown = []
    monkeypatch.setattr(repair_widget, "show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(_tissue(depth=4, size=16), name="em")
    widget = _widget(viewer)
    assert widget.repair() is None and widget.worker is None and len(viewer.layers) == 1
    assert len(shown) == 1 and "\n" not in shown[0] and "No Labels layer" in shown[0]
