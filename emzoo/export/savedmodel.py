"""TensorFlow SavedModel export of any emzoo model, callable exactly like an original FILM SavedModel.

The exported folder works with the tools written for Google's film_net SavedModels (the original
``eval/interpolator.py`` wrapper, the Z-upscaling CLI, ``eval_cli``), which call::

    loaded = tf.saved_model.load(path)
    out = loaded({"x0": x0, "x1": x1, "time": t[..., None]}, training=False)
    image = out["image"]

* ``__call__(inputs, training=False)``: ``inputs`` is a dict of float32 ``x0``, ``x1``
  ``(B, H, W, C)`` and ``time`` ``(B, 1)``; any batch, height and width. Inputs whose H or W are
  not multiples of the model's ``size_multiple`` are padded inside (reflected at the bottom and
  right, as ``emzoo upscale`` pads) and the outputs cropped back. Returns a dict of named outputs
  (``image`` and, for FILM with ``aux_outputs``, ``x0_warped`` ... and lists of flow levels).
  ``C`` is 3 (RGB, what FILM tools send) or the model's own channel count; a grey model given RGB
  averages the channels and returns ``image`` (and ``x0_warped``, ``x1_warped``) replicated to
  RGB, so FILM's recursive tools can feed each output back in as an input, and its PNG writers
  work unchanged.
* ``serving_default`` signature: inputs ``x0``, ``x1`` (3 channels) and ``time``; outputs keyed by
  name (``image``, ``x0_warped``, ``forward_flow_pyramid_0`` ...), unlike the original, whose
  outputs carry auto-generated layer names. Grey models also get ``serving_native`` (1 channel).
* ``assets/emzoo_model.json`` records the architecture, configuration and emzoo version.

Only ``training=False`` is traced (no emzoo model behaves differently in training).

FILM's own ``eval.interpolator.Interpolator(model_path, align=64)`` pads inputs with zeros to a
multiple of ``align``; the black borders this adds cost quality near the edges of frames whose
size is not a multiple of 64. The export pads internally, so create it with ``align=None``.

Example:
    >>> from emzoo.export import export_saved_model
    >>> export_saved_model(model, "exported/film")                        # doctest: +SKIP
    >>> loaded = tf.saved_model.load("exported/film")                     # doctest: +SKIP
    >>> loaded({"x0": x0, "x1": x1, "time": t}, training=False)["image"]  # doctest: +SKIP
"""

import json
import os
import pathlib
import shutil
import tempfile

from emzoo.errors import EmzooError, describe

_FILM_CHANNELS = 3
_ASSET_NAME = "emzoo_model.json"
_IMAGE_KEYS = ("image", "x0_warped", "x1_warped")  # outputs with the model's channels


def _reflect_indices(tf, length, padded):
    """Indices of NumPy's ``mode="reflect"`` padding at the end of an axis (``"edge"`` for 1)."""
    index = tf.range(padded)
    period = tf.maximum(2 * (length - 1), 1)
    index = index % period
    return tf.where(index >= length, period - index, index)


def _pad_like_engine(tf, x, multiple):
    """Pads H and W up to ``multiple`` at the bottom/right by reflection, as the volume engine's
    tiler does (so an export and ``emzoo upscale`` give the same pixels at every size)."""
    shape = tf.shape(x)
    height, width = shape[1], shape[2]
    rows = _reflect_indices(tf, height, height + (multiple - height % multiple) % multiple)
    cols = _reflect_indices(tf, width, width + (multiple - width % multiple) % multiple)
    x = tf.gather(tf.gather(x, rows, axis=1), cols, axis=2)
    return x, (height, width)


def _crop(tf, value, window, level=0):
    """Crops a padded output back; a pyramid level ``i`` is cropped at scale ``2**-i``."""
    height, width = window
    step = 2 ** level
    return value[:, :-(-height // step), :-(-width // step), :]


def _adapt_channels(tf, x, have, channels):
    """``x`` with ``have`` channels as ``channels``: the mean of RGB, or grey replicated to RGB.

    ``have`` is passed, not read from ``x.shape``: under dynamic height and width a traced
    model's output can have an unknown channel dimension.
    """
    if have == channels:
        return x
    if channels == 1:
        return tf.reduce_mean(x, axis=-1, keepdims=True)
    return tf.repeat(x, channels, axis=-1)


def _flatten_outputs(outputs):
    flat = {}
    for key, value in outputs.items():
        if isinstance(value, (list, tuple)):
            for i, level in enumerate(value):
                flat[f"{key}_{i}"] = level
        else:
            flat[key] = value
    return flat


def build_serving_module(model):
    """The ``tf.Module`` that :func:`export_saved_model` saves (useful to call in-process).

    Example:
        >>> module = build_serving_module(model)                             # doctest: +SKIP
        >>> module({"x0": x0, "x1": x1, "time": t}, training=False)["image"] # doctest: +SKIP
    """
    import tensorflow as tf

    if getattr(model, "channels", None) not in (1, 3):
        raise EmzooError(describe("Only emzoo interpolators can be exported.",
                                  "a model with `channels` 1 or 3 (e.g. from emzoo.load)",
                                  model=type(model).__name__))
    model.build_for_weights()
    channels = int(model.channels)
    multiple = int(getattr(model, "size_multiple", 1))

    class InterpolatorModule(tf.Module):
        def __init__(self):
            super().__init__(name="emzoo_interpolator")
            # Track the variables only: tracking the Keras model itself makes SavedModel
            # serialisation trace every layer's functions, which costs far more than the export.
            self.model_variables = list(model.variables)

        @tf.function
        def __call__(self, inputs, training=False):
            x0, x1 = inputs["x0"], inputs["x1"]
            given = int(x0.shape[-1])  # static: every traced signature fixes the channels
            x0 = _adapt_channels(tf, tf.cast(x0, tf.float32), given, channels)
            x1 = _adapt_channels(tf, tf.cast(x1, tf.float32), given, channels)
            time = tf.reshape(tf.cast(inputs["time"], tf.float32), (-1, 1))
            window = None
            if multiple > 1:
                x0, window = _pad_like_engine(tf, x0, multiple)
                x1, _ = _pad_like_engine(tf, x1, multiple)
            outputs = model({"x0": x0, "x1": x1, "time": time}, training=False)
            if not isinstance(outputs, dict):
                outputs = {"image": outputs}
            result = {}
            for key, value in outputs.items():
                if isinstance(value, (list, tuple)):
                    result[key] = [_crop(tf, v, window, i) if window else v
                                   for i, v in enumerate(value)]
                else:
                    value = _crop(tf, value, window) if window else value
                    if key in _IMAGE_KEYS:  # images in the caller's channels (FILM feeds them back)
                        value = tf.ensure_shape(value, [None, None, None, channels])
                        value = _adapt_channels(tf, value, channels, given)
                    result[key] = value
            return result

    module = InterpolatorModule()
    return module, channels


def _specs(tf, channels):
    return {"x0": tf.TensorSpec([None, None, None, channels], tf.float32, name="x0"),
            "x1": tf.TensorSpec([None, None, None, channels], tf.float32, name="x1"),
            "time": tf.TensorSpec([None, 1], tf.float32, name="time")}


def export_saved_model(model, path, overwrite=False):
    """Writes ``model`` as a FILM-compatible TensorFlow SavedModel folder at ``path``.

    The folder is written under a temporary name beside ``path`` and renamed when complete, so
    an interrupted export leaves nothing behind. See the module docstring for what it contains.

    Args:
        model: an emzoo interpolator (any architecture), e.g. from :func:`emzoo.load`.
        path: the folder to create.
        overwrite: replace an existing folder.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Example:
        >>> export_saved_model(emzoo.load("film-vimeo"), "film_vimeo_saved_model")  # doctest: +SKIP
    """
    import tensorflow as tf

    path = pathlib.Path(os.fspath(path)).expanduser()
    if path.exists() and not overwrite:
        raise EmzooError(describe(f"{path} already exists.", "a new folder, or overwrite=True",
                                  path=str(path)))
    module, channels = build_serving_module(model)
    for accepted in sorted({channels, _FILM_CHANNELS}):  # the traces __call__ is saved with
        module.__call__.get_concrete_function(_specs(tf, accepted), training=False)

    def signature(concrete):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, concrete], tf.float32),
                                      tf.TensorSpec([None, None, None, concrete], tf.float32),
                                      tf.TensorSpec([None, 1], tf.float32)])
        def serve(x0, x1, time):
            return _flatten_outputs(module({"x0": x0, "x1": x1, "time": time}, training=False))

        return serve.get_concrete_function()

    signatures = {"serving_default": signature(_FILM_CHANNELS)}
    if channels != _FILM_CHANNELS:
        signatures["serving_native"] = signature(channels)

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        info = {"architecture": getattr(model, "architecture", None),
                "config": model.get_config(),
                "name": getattr(model, "zoo_entry", {}).get("name"),
                "emzoo_version": _version(), "channels": channels,
                "size_multiple": int(getattr(model, "size_multiple", 1)),
                "outputs": "dict from __call__(inputs, training=False); serving_default keyed by name"}
        asset_source = staging / _ASSET_NAME
        asset_source.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        module.emzoo_model_json = tf.saved_model.Asset(str(asset_source))
        target = staging / "saved_model"
        tf.saved_model.save(module, str(target), signatures=signatures)
        asset_source.unlink()
        if path.exists():
            shutil.rmtree(path)
        os.replace(target, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _version():
    import emzoo

    return emzoo.__version__
