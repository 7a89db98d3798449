"""The "Upscale along z" dock widget: upscale or repair the selected image layer with an emzoo model.

The job runs in a napari thread worker: the engine (:func:`emzoo.engine.run`) reports each slice
written to the worker's progress callback and stops at its cancel event, so the viewer stays
live, the progress bar moves and Cancel stops the job at the next slice. The result is a new
layer (the source layer is never changed) in the source dtype, with the z spacing of its ``scale``
divided by the factor. Every error, from a bad input to a model without trained weights, is one
napari error notification with emzoo's one-line message, and adds no layer.
"""

import queue
import sys
import threading

import numpy as np
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                            QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout,
                            QWidget)

from emzoo.errors import EmzooError, JobCancelled, VolumeError, describe

def model_choices():
    """Zoo entries whose trained weights are available here, then ``flow`` (needs no weights)."""
    from emzoo import zoo

    names = []
    for name in zoo.list_models():
        try:
            if zoo.check_trained(name, allow_random_weights=True):
                names.append(name)
        except EmzooError:
            continue
    return names + ["flow"]


def check_backend_loadable():
    """Refuses, with one line, to load TensorFlow into a process that already holds Mesa's LLVM.

    Mesa's software OpenGL (llvmpipe) loads LLVM with the napari canvas; TensorFlow's own LLVM
    then crashes the whole process as it loads. ``python -m emzoo.napari`` loads TensorFlow first
    (with ``GALLIUM_DRIVER=softpipe``, Mesa without LLVM's JIT, to draw beside it).
    """
    import importlib.util

    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            llvm = "libLLVM" in maps.read()
    except OSError:
        return
    if llvm:
        raise EmzooError(describe(
            "TensorFlow cannot load after the OpenGL renderer (Mesa's LLVM) is in this process.",
            "napari started by `GALLIUM_DRIVER=softpipe python -m emzoo.napari`, which loads "
            "TensorFlow first",
            opengl="Mesa llvmpipe"))


def _message(exc):
    """emzoo's one-line message for an EmzooError; type and message for anything else."""
    if isinstance(exc, EmzooError):
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def run_reporting(plan, model, cancel):
    """Generator: runs ``plan`` with ``model`` in a thread, yielding ``(slices done, total)`` as
    the engine reports them; returns the :class:`~emzoo.engine.JobResult`. Setting ``cancel``
    (the widget's Cancel), or closing the generator, stops the engine at its next slice.
    """
    from emzoo.engine import run

    updates, outcome = queue.Queue(), {}

    def work():
        try:
            outcome["result"] = run(plan, model, progress=lambda done, total: updates.put(
                (done, total)), cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the generator's thread
            outcome["error"] = exc
        finally:
            updates.put(None)

    thread = threading.Thread(target=work, name="emzoo-job", daemon=True)
    thread.start()
    try:
        for update in iter(updates.get, None):
            yield update
    finally:  # also when the generator is closed early: the engine stops at its next slice
        if thread.is_alive():
            cancel.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _resolve(model):
    """The interpolator for a name, a saved folder or ``flow`` (loaded once for all chunks)."""
    from emzoo.engine.interpolators import resolve_model

    return resolve_model(model)


def _upscale_job(data, model, factor, tile, voxel_size, minutes, cancel=None):
    """The worker's generator: ``("status", text)`` / ``(done, total)``; returns a result dict."""
    cancel = threading.Event() if cancel is None else cancel
    try:
        yield "status", "loading the model"
        array = np.asarray(data)
        loaded = _resolve(model)
        if minutes:
            if model == "flow":
                raise EmzooError(describe("The flow baseline has no weights to adapt.",
                                          "adaptation minutes 0 with model flow", minutes=minutes))
            from emzoo.adaptation import adapt

            yield "status", f"adapting for {minutes:g} min"
            # napari's default scale (all ones) says nothing of the voxel size: adaptation then
            # takes the z spacing as the factor times the x spacing (the output isotropic).
            known = None if voxel_size is None or all(s == 1 for s in voxel_size) else voxel_size
            loaded = adapt(loaded, array, voxel_size=known, factor=float(factor),
                           minutes=minutes, progress=False)["model"]
        yield "status", "upscaling"
        from emzoo.engine import EngineOptions, plan_upscale

        plan = plan_upscale(array, float(factor), voxel_size=voxel_size,
                            options=EngineOptions(tile=tile))
        result = yield from run_reporting(plan, loaded, cancel)
        return {"array": result.array}
    except JobCancelled:  # one more yield: napari's worker sees its quit() there (aborted)
        yield "status", "cancelled"
        return {"cancelled": True}
    except Exception as exc:  # shown as one notification by the main thread
        return {"error": _message(exc)}


def _repair_job(data, model, slices, tile, voxel_size, cancel=None):
    cancel = threading.Event() if cancel is None else cancel
    try:
        yield "status", "loading the model"
        array = np.asarray(data)
        loaded = _resolve(model)
        yield "status", "repairing"
        from emzoo.engine import EngineOptions, plan_repair

        plan = plan_repair(array, slices, voxel_size=voxel_size, options=EngineOptions(tile=tile))
        result = yield from run_reporting(plan, loaded, cancel)
        return {"array": result.array, "repaired": result.repaired}
    except JobCancelled:  # one more yield: napari's worker sees its quit() there (aborted)
        yield "status", "cancelled"
        return {"cancelled": True}
    except Exception as exc:
        return {"error": _message(exc)}


class UpscaleWidget(QWidget):
    """Dock widget: model, factor or isotropic, tile, adaptation minutes; Upscale / Repair / Cancel."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.stop = threading.Event()  # the running job's cancel event
        self.last_error = None

        self.model = QComboBox()
        self.model.setEditable(True)  # a saved model folder may be typed in
        self.model.addItems(model_choices())
        self.isotropic = QCheckBox("isotropic (from the layer's scale)")
        self.isotropic.setToolTip("factor = z spacing / x spacing of the layer's scale (voxel size)")
        self.factor = QDoubleSpinBox()
        self.factor.setRange(1.0, 64.0)
        self.factor.setDecimals(2)
        self.factor.setValue(2.0)
        self.tile = QSpinBox()
        self.tile.setRange(0, 16384)
        self.tile.setSingleStep(64)
        self.tile.setSpecialValueText("whole slices")
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.0, 600.0)
        self.minutes.setSpecialValueText("no adaptation")
        self.slices = QLineEdit()
        self.slices.setPlaceholderText("e.g. 12,37,40-42 (empty: the current slice)")

        self.upscale_button = QPushButton("Upscale along z")
        self.repair_button = QPushButton("Repair slices")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")

        form = QFormLayout()
        form.addRow("model", self.model)
        form.addRow("factor", self.factor)
        form.addRow("", self.isotropic)
        form.addRow("tile", self.tile)
        form.addRow("adapt (minutes)", self.minutes)
        form.addRow("slices to repair", self.slices)
        buttons = QHBoxLayout()
        for button in (self.upscale_button, self.repair_button, self.cancel_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch()

        self.isotropic.toggled.connect(lambda on: self.factor.setEnabled(not on))
        self.upscale_button.clicked.connect(self.upscale)
        self.repair_button.clicked.connect(self.repair)
        self.cancel_button.clicked.connect(self.cancel)

    # ----------------------------------------------------------------------------- checks
    def _error(self, message):
        self.last_error = message
        self.status.setText("error")
        show_error(message)

    def _layer(self):
        layer = self.viewer.layers.selection.active
        if not isinstance(layer, Image):
            raise VolumeError(describe("No image layer is selected.", "an image layer selected",
                                       layer=getattr(layer, "name", None)))
        if layer.rgb or layer.ndim != 3 or layer.data.shape[0] < 2:
            raise VolumeError(describe(f"Layer `{layer.name}` is not a stack of grey slices.",
                                       "a 3-D image layer (z, y, x) with at least 2 slices",
                                       shape=tuple(layer.data.shape), rgb=bool(layer.rgb)))
        return layer

    def _model_name(self):
        from emzoo import zoo

        name = self.model.currentText().strip()
        if name != "flow":
            zoo.check_trained(name)  # raises WeightsError (one line) without trained weights
        return name

    def _factor(self, layer):
        from emzoo.engine.positions import check_factor, isotropic_factor

        if self.isotropic.isChecked():
            return check_factor(isotropic_factor(tuple(float(s) for s in layer.scale)))
        return check_factor(self.factor.value())

    # ------------------------------------------------------------------------------- jobs
    def upscale(self):
        """Starts upscaling the selected layer; returns the worker, or None after an error."""
        if self.worker is not None:
            return None
        try:
            layer = self._layer()
            model = self._model_name()
            factor = self._factor(layer)
            check_backend_loadable()
        except EmzooError as exc:
            self._error(_message(exc))
            return None
        scale = tuple(float(s) for s in layer.scale)
        self.stop = threading.Event()
        worker = thread_worker(_upscale_job, start_thread=False)(
            layer.data, model, factor, self.tile.value() or None, scale, self.minutes.value(),
            self.stop)
        name = f"{layer.name} x{float(factor):g} z ({model.rstrip('/').split('/')[-1]})"
        new_scale = (scale[0] / float(factor),) + scale[1:]
        return self._start(worker, lambda result: self.viewer.add_image(
            result["array"], name=name, scale=new_scale, translate=tuple(layer.translate),
            contrast_limits=layer.contrast_limits, colormap=layer.colormap.name))

    def repair(self):
        """Starts repairing the slices of the text box (or the current slice) of the selected layer."""
        if self.worker is not None:
            return None
        try:
            layer = self._layer()
            model = self._model_name()
            check_backend_loadable()
            text = self.slices.text().strip()
            if text:
                from emzoo.engine import parse_slices

                slices = parse_slices(text)
            else:
                slices = [int(round(layer.world_to_data(self.viewer.dims.point)[0]))]
        except EmzooError as exc:
            self._error(_message(exc))
            return None
        scale = tuple(float(s) for s in layer.scale)
        self.stop = threading.Event()
        worker = thread_worker(_repair_job, start_thread=False)(
            layer.data, model, slices, self.tile.value() or None, scale, self.stop)
        return self._start(worker, lambda result: self.viewer.add_image(
            result["array"], name=f"{layer.name} repaired", scale=scale,
            translate=tuple(layer.translate), contrast_limits=layer.contrast_limits,
            colormap=layer.colormap.name))

    def _start(self, worker, add_layer):
        self.worker = worker
        self.last_error = None
        self.progress.setRange(0, 0)  # busy until the first count
        self.upscale_button.setEnabled(False)
        self.repair_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(lambda result: self._on_returned(result, add_layer))
        worker.aborted.connect(lambda: self._on_stopped("cancelled"))
        worker.finished.connect(self._on_finished)
        worker.start()
        return worker

    def cancel(self):
        """Asks the running job to stop at its next slice; no layer is added."""
        if self.worker is not None:
            self.status.setText("cancelling")
            self.stop.set()
            self.worker.quit()

    def _on_yielded(self, value):
        if value[0] == "status":
            self.status.setText(value[1])
            return
        done, total = value
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _on_returned(self, result, add_layer):
        if "cancelled" in result:
            self._on_stopped("cancelled")
            return
        if "error" in result:
            self._error(result["error"])
            return
        add_layer(result)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.status.setText("done")
        if "repaired" in result:
            show_info(f"emzoo: repaired slices {result['repaired']}")

    def _on_stopped(self, text):
        self.status.setText(text)

    def _on_finished(self):
        self.worker = None
        if self.status.text() != "done":
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        self.upscale_button.setEnabled(True)
        self.repair_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
