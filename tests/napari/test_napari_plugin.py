"""The napari plugin driven in a real napari.Viewer: upscale, cancel, repair, bad inputs, reader."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from emzoo_test_helpers import save_tiny_film

    return save_tiny_film(tmp_path_factory.mktemp("models"))


def _stack(depth=5, size=32):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(depth, size, size), dtype=np.uint8)


def _widget(viewer, model):
    from emzoo.napari.widget import UpscaleWidget

    widget = UpscaleWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Upscale along z")
    widget.model.setCurrentText(model)
    return widget


def _wait(qtbot, widget, timeout=120_000):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def test_upscale_adds_a_layer_with_new_z_spacing(make_napari_viewer, qtbot, tiny_model):
    import emzoo

    viewer = make_napari_viewer()
    stack = _stack()
    source = viewer.add_image(stack.copy(), name="em", scale=(40.0, 4.0, 4.0))
    widget = _widget(viewer, tiny_model)
    widget.factor.setValue(4)
    assert widget.upscale() is not None
    _wait(qtbot, widget)
    assert widget.last_error is None
    assert len(viewer.layers) == 2
    new = viewer.layers[-1]
    assert new.data.shape == (17, 32, 32) and new.data.dtype == np.uint8
    np.testing.assert_allclose(new.scale, (10.0, 4.0, 4.0))
    np.testing.assert_array_equal(source.data, stack)  # the source is untouched
    np.testing.assert_allclose(source.scale, (40.0, 4.0, 4.0))
    # chunked in the worker, equal to one call of the engine on the whole stack
    whole = emzoo.upscale_volume(stack, tiny_model, factor=4, progress=False)["array"]
    np.testing.assert_array_equal(new.data, whole)
    assert widget.progress.value() == widget.progress.maximum() and widget.status.text() == "done"


def test_isotropic_uses_the_layer_scale(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(_stack(depth=3, size=16), name="em", scale=(10.0, 4.0, 4.0))
    widget = _widget(viewer, "flow")
    widget.isotropic.setChecked(True)
    widget.upscale()
    _wait(qtbot, widget)
    assert widget.last_error is None
    new = viewer.layers[-1]
    assert new.data.shape == (6, 16, 16)  # factor 2.5: floor(2 * 2.5) + 1
    np.testing.assert_allclose(new.scale, (4.0, 4.0, 4.0))


def test_cancel_stops_the_worker_and_adds_no_layer(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(_stack(depth=40), name="em", scale=(40.0, 4.0, 4.0))
    widget = _widget(viewer, tiny_model)
    chunks = []
    worker = widget.upscale()
    worker.yielded.connect(lambda value: chunks.append(value) if value[0] != "status" else None)
    with qtbot.waitSignal(worker.yielded, timeout=120_000,
                          check_params_cb=lambda value: value[0] != "status"):
        pass
    with qtbot.waitSignal(worker.aborted, timeout=120_000):
        widget.cancel()
    _wait(qtbot, widget)
    assert len(viewer.layers) == 1
    assert 1 <= len(chunks) and chunks[-1][0] < 79  # stopped before the last of the 79 slices
    assert widget.status.text() == "cancelled" and widget.cancel_button.isEnabled() is False


@pytest.mark.parametrize("case", ["2d", "no_weights", "factor_below_1", "isotropic_no_gain"])
def test_bad_inputs_notify_and_add_no_layer(make_napari_viewer, qtbot, case, monkeypatch):
    from emzoo.napari import widget as widget_module

    shown = []
    monkeypatch.setattr(widget_module, "show_error", shown.append)
    viewer = make_napari_viewer()
    if case == "2d":
        viewer.add_image(np.zeros((32, 32), np.uint8), name="picture")
    else:
        viewer.add_image(_stack(), name="em", scale=(4.0, 4.0, 4.0) if case.startswith("iso")
                         else (40.0, 4.0, 4.0))
    widget = _widget(viewer, "tsain" if case == "no_weights" else "flow")
    if case == "isotropic_no_gain":
        viewer.layers[0].scale = (2.0, 4.0, 4.0)
        widget.isotropic.setChecked(True)
    if case == "factor_below_1":
        widget.factor.setMinimum(0.5)
        widget.factor.setValue(0.5)
    assert widget.upscale() is None
    assert widget.worker is None and len(viewer.layers) == 1
    assert len(shown) == 1 and "\n" not in shown[0] and shown[0] == widget.last_error
    expected = {"2d": "not a stack of grey slices", "no_weights": "no trained weights",
                "factor_below_1": "`factor`", "isotropic_no_gain": "already finer"}[case]
    assert expected in shown[0], shown[0]


def test_error_in_the_worker_is_one_notification(make_napari_viewer, qtbot, monkeypatch):
    from emzoo.napari import widget as widget_module

    shown = []
    monkeypatch.setattr(widget_module, "show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 16, 16), np.int32), name="em")  # a dtype the engine refuses
    widget = _widget(viewer, "flow")
    widget.upscale()
    _wait(qtbot, widget)
    assert len(viewer.layers) == 1 and len(shown) == 1 and "\n" not in shown[0]
    assert "Received" in shown[0], shown[0]


def test_repair_the_listed_and_the_current_slice(make_napari_viewer, qtbot):
    import emzoo

    viewer = make_napari_viewer()
    stack = _stack(depth=6, size=16)
    viewer.add_image(stack.copy(), name="em", scale=(40.0, 4.0, 4.0))
    widget = _widget(viewer, "flow")
    widget.slices.setText("2")
    widget.repair()
    _wait(qtbot, widget)
    assert widget.last_error is None
    repaired = viewer.layers[-1]
    expected = emzoo.engine.repair_volume(stack, [2], "flow", progress=False)["array"]
    np.testing.assert_array_equal(repaired.data, expected)
    np.testing.assert_allclose(repaired.scale, (40.0, 4.0, 4.0))

    viewer.layers.selection.active = viewer.layers[0]
    viewer.dims.set_current_step(0, 3)
    widget.slices.setText("")
    widget.repair()
    _wait(qtbot, widget)
    expected = emzoo.engine.repair_volume(stack, [3], "flow", progress=False)["array"]
    np.testing.assert_array_equal(viewer.layers[-1].data, expected)


def test_reader_and_writer_keep_the_voxel_size(tmp_path, make_napari_viewer):
    from emzoo.data.volumes import write_volume
    from emzoo.napari.io import get_reader, write_image

    path = str(tmp_path / "em.h5") + ":/volumes/raw"
    write_volume(path, _stack(depth=4, size=16), voxel_size=(50.0, 4.0, 4.0))
    reader = get_reader(path)
    assert reader is not None and get_reader(str(tmp_path / "x.png")) is None
    (array, meta, kind), = reader(path)
    assert kind == "image" and array.shape == (4, 16, 16) and meta["scale"] == (50.0, 4.0, 4.0)

    viewer = make_napari_viewer()
    layer = viewer.add_image(array, **meta)
    out = str(tmp_path / "out.h5")
    assert write_image(out, layer.data, {"scale": tuple(layer.scale)}) == [out]
    (again, meta_again, _), = get_reader(out)(out)
    np.testing.assert_array_equal(again, array)
    assert meta_again["scale"] == (50.0, 4.0, 4.0)


def test_manifest_is_valid():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(REPO / "emzoo" / "napari" / "napari.yaml")
    assert manifest.name == "emzoo"
    assert [w.display_name for w in manifest.contributions.widgets] == [
        "Upscale along z", "Find and repair damage"]
    for command in manifest.contributions.commands:
        module, name = command.python_name.split(":")
        assert callable(getattr(__import__(module, fromlist=[name]), name))


def test_import_emzoo_does_not_import_napari():
    code = "import emzoo, sys; sys.exit('napari' in sys.modules or 'qtpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_refuses_to_load_tensorflow_after_mesa_llvm(make_napari_viewer, monkeypatch):
    from emzoo.napari import widget as widget_module

    viewer = make_napari_viewer()
    viewer.add_image(_stack(), name="em")
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        if "libLLVM" not in maps.read():
            pytest.skip("OpenGL here is not Mesa's LLVM-based renderer")
    shown = []
    monkeypatch.setattr(widget_module, "show_error", shown.append)
    monkeypatch.delitem(sys.modules, "tensorflow")  # as if napari had started without it
    widget = _widget(viewer, "flow")
    assert widget.upscale() is None and len(viewer.layers) == 1
    assert len(shown) == 1 and "python -m emzoo.napari" in shown[0]


def test_napari_opens_hdf5_addresses_through_the_plugin(tmp_path, make_napari_viewer):
    from emzoo.data.volumes import write_volume

    path = str(tmp_path / "em.h5")
    write_volume(path + ":/volumes/raw", _stack(depth=4, size=16), voxel_size=(50.0, 4.0, 4.0))
    viewer = make_napari_viewer()
    layers = viewer.open(path, plugin="emzoo")
    assert len(layers) == 1 and layers[0].data.shape == (4, 16, 16)
    np.testing.assert_allclose(layers[0].scale, (50.0, 4.0, 4.0))


def test_launcher_docks_the_widget_and_opens_hdf5_addresses(tmp_path, qtbot, monkeypatch):
    import napari

    from emzoo.data.volumes import write_volume
    from emzoo.napari.__main__ import main

    path = str(tmp_path / "em.h5")
    write_volume(path + ":/volumes/raw", _stack(depth=4, size=16), voxel_size=(50.0, 4.0, 4.0))
    monkeypatch.setattr(napari, "run", lambda: None)
    assert main([path, path + ":/volumes/raw"]) == 0  # returns: os._exit is for python -m only
    viewer = napari.current_viewer()
    try:
        assert list(viewer.window.dock_widgets) == ["Upscale along z"]
        assert [layer.data.shape for layer in viewer.layers] == [(4, 16, 16)] * 2
        np.testing.assert_allclose(viewer.layers[1].scale, (50.0, 4.0, 4.0))
    finally:
        viewer.close()


def test_upscale_after_a_short_adaptation(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(_stack(depth=16, size=64), name="em", scale=(8.0, 4.0, 4.0))
    widget = _widget(viewer, tiny_model)
    widget.minutes.setValue(0.01)
    statuses = []
    worker = widget.upscale()
    worker.yielded.connect(lambda value: statuses.append(value[1]) if value[0] == "status" else None)
    _wait(qtbot, widget, timeout=240_000)
    assert widget.last_error is None, widget.last_error
    assert any(text.startswith("adapting") for text in statuses)
    assert viewer.layers[-1].data.shape == (31, 64, 64)
    np.testing.assert_allclose(viewer.layers[-1].scale, (4.0, 4.0, 4.0))


def test_adaptation_takes_napari_s_default_scale_as_an_unknown_voxel_size(monkeypatch, tiny_model):
    import emzoo.adaptation
    from emzoo.napari.widget import _upscale_job

    seen = []

    def spy(model, array, voxel_size, **settings):   # records what the widget passes on
        seen.append(voxel_size)
        return {"model": model}

    monkeypatch.setattr(emzoo.adaptation, "adapt", spy)
    for scale in [(1.0, 1.0, 1.0), (40.0, 4.0, 4.0)]:
        for _ in _upscale_job(_stack(depth=3, size=16), tiny_model, 2, None, scale, 0.01):
            pass
    assert seen == [None, (40.0, 4.0, 4.0)]


def test_the_job_reports_each_slice_and_stops_at_the_cancel_event(tiny_model):
    # The engine's progress callback and cancel event drive the widget (no re-chunking).
    import threading

    from emzoo.napari.widget import _upscale_job

    stop = threading.Event()
    job = _upscale_job(_stack(depth=6, size=16), tiny_model, 2, None, (1.0, 1.0, 1.0), 0, stop)
    seen = []
    try:
        while True:
            value = next(job)
            seen.append(value)
            if value[0] != "status":
                stop.set()
    except StopIteration as done:
        result = done.value
    counts = [value for value in seen if value[0] != "status"]
    assert result == {"cancelled": True} and seen[-1] == ("status", "cancelled")
    assert counts[0] == (1, 11) and len(counts) < 11
    again = _upscale_job(_stack(depth=6, size=16), tiny_model, 2, None, (1.0, 1.0, 1.0), 0)
    try:
        while True:
            last = next(again)
    except StopIteration as done:
        assert done.value["array"].shape == (11, 16, 16) and last == (11, 11)
