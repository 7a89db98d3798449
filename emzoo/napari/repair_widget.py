"""The "Find and repair damage" dock widget: find damaged slices and regions, review, repair.

"Find damage" runs :func:`emzoo.engine.damage.find_damage` on the selected image layer and adds
a Labels layer of what it found (one label per kind of damage, see
:data:`~emzoo.engine.damage.KINDS`), with the report in the layer's ``metadata["emzoo_damage"]``.
The user reviews it, paints what was missed and erases what is not damage. "Repair masked" runs
:func:`emzoo.engine.damage.repair_masked` with the current Labels layer (non-zero = damaged) and
adds the repaired volume as a new image layer; neither source layer is changed.

Both jobs run in a napari thread worker: the progress bar follows every slice, Cancel stops the
job at the next slice and adds no layer, and every error is one notification with emzoo's
one-line message.
"""

import threading

import numpy as np
from napari.layers import Image, Labels
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout, QLabel,
                            QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from emzoo.errors import EmzooError, VolumeError, describe
from emzoo.napari.widget import _message, check_backend_loadable, model_choices


class _Relay(QObject):
    """Carries ``(done, total)`` from the worker thread to the progress bar (queued signal)."""

    counted = Signal(int, int)


def _find_job(data, sensitivity, progress, cancel):
    from emzoo.engine.damage import find_damage

    try:
        report = find_damage(np.asarray(data), sensitivity=sensitivity, progress=progress,
                             cancel=cancel)
        return {"mask": report.mask, "report": report.to_dict()}
    except Exception as exc:  # shown as one notification by the main thread
        return {"cancelled": True} if cancel.is_set() else {"error": _message(exc)}


def _repair_job(data, mask, model, band, voxel_size, progress, cancel):
    from emzoo.engine.damage import repair_masked

    try:
        result = repair_masked(np.asarray(data), np.asarray(mask), model, band=band,
                               voxel_size=voxel_size, progress=progress, cancel=cancel)
        return {"array": result["array"], "repaired": result["repaired"]}
    except Exception as exc:
        return {"cancelled": True} if cancel.is_set() else {"error": _message(exc)}


class RepairWidget(QWidget):
    """Dock widget: sensitivity, model, blend band; Find damage / Repair masked / Cancel."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.last_error = None
        self._cancel = None
        self._relay = _Relay()
        self._relay.counted.connect(self._on_counted)

        self.sensitivity = QDoubleSpinBox()
        self.sensitivity.setRange(0.1, 10.0)
        self.sensitivity.setSingleStep(0.1)
        self.sensitivity.setValue(1.0)
        self.sensitivity.setToolTip("1: the defaults; larger finds more, smaller finds less")
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.addItems(model_choices())
        self.band = QSpinBox()
        self.band.setRange(0, 64)
        self.band.setValue(4)
        self.band.setToolTip("pixels outside the mask blended into the repair (0: none)")

        self.find_button = QPushButton("Find damage")
        self.repair_button = QPushButton("Repair masked")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")

        form = QFormLayout()
        form.addRow("sensitivity", self.sensitivity)
        form.addRow("model", self.model)
        form.addRow("blend band (pixels)", self.band)
        buttons = QHBoxLayout()
        for button in (self.find_button, self.repair_button, self.cancel_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch()

        self.find_button.clicked.connect(self.find)
        self.repair_button.clicked.connect(self.repair)
        self.cancel_button.clicked.connect(self.cancel)

    # ---------------------------------------------------------------------------- layers
    def _error(self, message):
        self.last_error = message
        self.status.setText("error")
        show_error(message)

    def _image(self):
        """The selected image layer; with a Labels layer selected, the image it was found on."""
        layer = self.viewer.layers.selection.active
        if isinstance(layer, Labels):
            name = layer.metadata.get("emzoo_image")
            images = [other for other in self.viewer.layers if isinstance(other, Image) and (
                other.name == name or (name is None and other.data.shape == layer.data.shape))]
            layer = images[0] if images else None
        if not isinstance(layer, Image):
            raise VolumeError(describe("No image layer is selected.",
                                       "an image layer (or its damage Labels layer) selected",
                                       layer=getattr(layer, "name", None)))
        if layer.rgb or layer.ndim != 3 or layer.data.shape[0] < 3:
            raise VolumeError(describe(f"Layer `{layer.name}` is not a stack of grey slices.",
                                       "a 3-D image layer (z, y, x) with at least 3 slices",
                                       shape=tuple(layer.data.shape), rgb=bool(layer.rgb)))
        return layer

    def _labels(self, image):
        """The selected Labels layer, else the newest one of the image's shape."""
        layer = self.viewer.layers.selection.active
        if not isinstance(layer, Labels):
            matching = [other for other in self.viewer.layers if isinstance(other, Labels)
                        and other.data.shape == image.data.shape]
            layer = matching[-1] if matching else None
        if layer is None or layer.data.shape != image.data.shape:
            raise VolumeError(describe(
                f"No Labels layer of the shape of `{image.name}` marks the damage.",
                "a Labels layer from Find damage (or painted by hand) of the image's shape",
                shape=None if layer is None else tuple(layer.data.shape)))
        return layer

    def _model_name(self):
        from emzoo import zoo

        name = self.model.currentText().strip()
        if name != "flow":
            zoo.check_trained(name)
        return name

    # ------------------------------------------------------------------------------ jobs
    def find(self):
        """Starts the search on the selected image layer; returns the worker, or None."""
        if self.worker is not None:
            return None
        try:
            image = self._image()
        except EmzooError as exc:
            self._error(_message(exc))
            return None
        cancel = threading.Event()
        worker = thread_worker(_find_job, start_thread=False)(
            image.data, self.sensitivity.value(), self._relay.counted.emit, cancel)

        def add(result):
            found = result["report"]
            layer = self.viewer.add_labels(
                result["mask"], name=f"{image.name} damage", scale=tuple(image.scale),
                translate=tuple(image.translate),
                metadata={"emzoo_damage": found, "emzoo_image": image.name})
            self.viewer.layers.selection.active = layer
            show_info(f"emzoo: {len(found['findings'])} finding(s) in slice(s) "
                      f"{found['damaged_slices']}")
        return self._start(worker, cancel, add)

    def repair(self):
        """Starts repairing the masked pixels of the image under the current Labels layer."""
        if self.worker is not None:
            return None
        try:
            image = self._image()
            labels = self._labels(image)
            model = self._model_name()
            check_backend_loadable()
        except EmzooError as exc:
            self._error(_message(exc))
            return None
        cancel = threading.Event()
        scale = tuple(float(s) for s in image.scale)
        worker = thread_worker(_repair_job, start_thread=False)(
            image.data, labels.data, model, self.band.value(), scale, self._relay.counted.emit,
            cancel)

        def add(result):
            self.viewer.add_image(result["array"], name=f"{image.name} repaired", scale=scale,
                                  translate=tuple(image.translate),
                                  contrast_limits=image.contrast_limits,
                                  colormap=image.colormap.name)
            show_info(f"emzoo: repaired masked pixels in slice(s) {result['repaired']}")
        return self._start(worker, cancel, add)

    def _start(self, worker, cancel, add_layer):
        self.worker, self._cancel, self.last_error = worker, cancel, None
        self.progress.setRange(0, 0)  # busy until the first count
        self.status.setText("working")
        self.find_button.setEnabled(False)
        self.repair_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        worker.returned.connect(lambda result: self._on_returned(result, add_layer))
        worker.finished.connect(self._on_finished)
        worker.start()
        return worker

    def cancel(self):
        """Asks the running job to stop at its next slice; no layer is added."""
        if self._cancel is not None:
            self.status.setText("cancelling")
            self._cancel.set()

    def _on_counted(self, done, total):
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _on_returned(self, result, add_layer):
        if result.get("cancelled"):
            self.status.setText("cancelled")
            return
        if "error" in result:
            self._error(result["error"])
            return
        add_layer(result)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.status.setText("done")

    def _on_finished(self):
        self.worker, self._cancel = None, None
        if self.status.text() != "done":
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        self.find_button.setEnabled(True)
        self.repair_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
