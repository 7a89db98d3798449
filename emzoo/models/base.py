"""The interpolator contract every emzoo model follows.

A model is a ``keras.Model`` called with a dict::

    {"x0": (B, H, W, C) float32 in [0, 1], "x1": (B, H, W, C), "time": (B, 1)}

and returning a dict with at least ``"image": (B, H, W, C)``. ``C`` is the model's ``channels``.
``size_multiple`` is the multiple H and W must have; models or engines pad and crop for it
(:func:`pad_to_multiple` / :func:`crop_padding`). Models trained only on midpoints document that
``time`` must be 0.5; more frames come from recursion. Outputs are float32 under every dtype
policy (mixed precision runs the convs in float16 / bfloat16; see :func:`float32_outputs`).
Unsigned integer frames (uint8, uint16) are scaled by their dtype's range; signed integer frames
raise an :class:`~emzoo.errors.EmzooError` (see :func:`normalise_frames`).

Training goes through standard Keras: ``compile()`` with no arguments uses the architecture's paper
loss (with its weight schedule), Adam, and the PSNR / SSIM / IE metrics, so ``fit``, ``evaluate`` and
``predict`` work on datasets of ``({"x0", "x1", "time"}, y)``. Losses that need the input frames
(SSAN's style-balance loss) declare ``uses_frames = True``; :meth:`Interpolator.compute_loss` then
calls them as ``loss.call_with_frames(inputs, y_true, y_pred)``. Losses with a weight schedule
declare ``uses_step = True`` and receive the optimizer's iteration counter through ``bind_step``.
"""

import keras
from keras import ops

from emzoo.errors import EmzooError, describe


def _scale_loss_for_distribution(value):
    try:
        from keras.src.losses.loss import scale_loss_for_distribution
    except ImportError:  # older/newer Keras without the helper: single-replica behaviour
        return value
    return scale_loss_for_distribution(value)


def pad_to_multiple(x, multiple):
    """Pads ``(B, H, W, C)`` so H and W are multiples of ``multiple`` (centred, mirrored borders).

    Returns the padded tensor and ``(top, left, height, width)`` to crop the result back with
    :func:`crop_padding`. Works with dynamic (graph-time unknown) H and W under TensorFlow.

    Example:
        >>> padded, window = pad_to_multiple(keras.ops.zeros((1, 6, 9, 1)), 4)
        >>> tuple(padded.shape)
        (1, 8, 12, 1)
    """
    if multiple <= 1:
        return x, None
    shape = ops.shape(x)
    height, width = shape[1], shape[2]
    pad_h = (multiple - height % multiple) % multiple
    pad_w = (multiple - width % multiple) % multiple
    top, left = pad_h // 2, pad_w // 2
    paddings = [[0, 0], [top, pad_h - top], [left, pad_w - left], [0, 0]]
    static = isinstance(pad_h, int) and isinstance(pad_w, int)
    if not static or pad_h or pad_w:
        x = ops.pad(x, paddings, mode="symmetric")
    return x, (top, left, height, width)


def crop_padding(x, window):
    """Undoes :func:`pad_to_multiple` on a tensor of the padded size."""
    if window is None:
        return x
    top, left, height, width = window
    return x[:, top:top + height, left:left + width, :]


def float32_outputs(outputs):
    """``outputs`` (a dict / list tree of tensors) with every tensor cast to float32.

    Every architecture returns this, so engines, losses and metrics see float32 under a
    ``mixed_float16`` or ``mixed_bfloat16`` policy too. Layers whose output is the image itself
    (last convs) are created with ``dtype="float32"`` so the grey levels keep float32 precision.
    """
    return keras.tree.map_structure(lambda t: ops.cast(t, "float32"), outputs)


def normalise_frames(inputs):
    """``inputs`` with integer ``x0`` / ``x1`` scaled to float32 in [0, 1] by their dtype's range.

    Unsigned integers (uint8, uint16 ...) are divided by the dtype's maximum, as the volume
    readers normalise; signed integers are refused (their range says nothing about the data's).
    Every :class:`Interpolator` applies this before its ``call``, so ``model.predict`` on uint8
    arrays works.
    """
    if not isinstance(inputs, dict):
        return inputs
    import numpy as np

    frames = {}
    for key in ("x0", "x1"):
        value = inputs.get(key)
        if value is None or not hasattr(value, "dtype"):
            continue
        dtype = keras.backend.standardize_dtype(value.dtype)
        if dtype.startswith("uint"):
            frames[key] = ops.cast(value, "float32") / float(np.iinfo(dtype).max)
        elif dtype.startswith("int") or dtype == "bool":
            raise EmzooError(describe(
                f"Interpolator input `{key}` has dtype {dtype}.",
                "float32 frames in [0, 1] (or unsigned integers, scaled by their dtype's range)",
                dtype=dtype))
    return {**inputs, **frames} if frames else inputs


def _normalising(call):
    import inspect

    def call_with_frames_normalised(self, inputs, *args, **kwargs):
        return call(self, normalise_frames(inputs), *args, **kwargs)

    # Not functools.wraps: TF's autograph follows ``__wrapped__`` and then drops ``self``.
    call_with_frames_normalised.__signature__ = inspect.signature(call)
    call_with_frames_normalised.__doc__ = call.__doc__
    return call_with_frames_normalised


def image_of(outputs):
    """The ``image`` tensor of a model's output dict (or the tensor itself)."""
    return outputs["image"] if isinstance(outputs, dict) else outputs


class Interpolator(keras.Model):
    """Base class of every emzoo architecture (see the module docstring for the contract).

    Subclasses set ``size_multiple`` (class or instance attribute), take ``channels`` and pass
    ``**kwargs`` up, implement ``call(inputs, training=False)`` returning a dict, and implement
    ``get_config`` returning exactly their constructor arguments.
    """

    architecture = None  # the registry name; each architecture class sets it (e.g. "film")
    size_multiple = 1
    weight_formats = ("keras",)  # formats :meth:`load_weights_file` reads besides .weights.h5

    def __init_subclass__(cls, **kwargs):
        """Wraps each subclass's ``call`` so integer frames are normalised first
        (:func:`normalise_frames`) on every path: eager, fit, predict, stateless_call."""
        super().__init_subclass__(**kwargs)
        if "call" in cls.__dict__:
            cls.call = _normalising(cls.__dict__["call"])

    def __init__(self, channels=1, **kwargs):
        super().__init__(**kwargs)
        if int(channels) not in (1, 3):
            raise EmzooError(describe("Invalid value for argument `channels`.", "1 or 3",
                                      channels=channels))
        self.channels = int(channels)
        self._frame_loss = None

    @property
    def input_dtype(self):
        """float32 under every dtype policy: frames keep their grey levels under mixed precision
        (the sub-layers cast to their compute dtype themselves)."""
        return "float32"

    # ----------------------------------------------------------------------------- configuration
    @classmethod
    def config_keys(cls):
        """Names of the constructor arguments (the keys of ``get_config()``)."""
        import inspect

        keys = []
        for klass in cls.__mro__:
            if klass is Interpolator:
                break
            params = inspect.signature(klass.__init__).parameters
            keys += [p for p in params if p not in ("self", "kwargs") and p not in keys]
        return keys if "channels" in keys else keys + ["channels"]

    def get_config(self):
        return {"channels": self.channels}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("name", "trainable", "dtype"):
            config.pop(key, None)
        return cls(**config)

    # ---------------------------------------------------------------------------------- building
    def example_inputs(self, batch=1, size=None):
        """Zero inputs of the smallest size this model accepts (or ``size`` x ``size``)."""
        size = size or self.min_size()
        zeros = ops.zeros((batch, size, size, self.channels), "float32")
        return {"x0": zeros, "x1": zeros, "time": ops.full((batch, 1), 0.5, "float32")}

    def min_size(self):
        """Smallest H = W used to build the model; subclasses may raise it."""
        return max(int(self.size_multiple), 8)

    def build_for_weights(self):
        """Creates every variable (by a forward pass at the smallest size)."""
        if not self.built or not self.weights:
            self(self.example_inputs(), training=False)
        return self

    def summary(self, *args, **kwargs):
        """Keras' summary, with each layer's output shape for a 256 x 256 input (batch None).

        A subclassed model's layers have no recorded outputs, so Keras would print "?": the shapes
        are taken from one symbolic call (:meth:`keras.Model.compute_output_spec`; no compute).
        """
        self.build_for_weights()
        self._record_output_shapes()
        return super().summary(*args, **kwargs)

    def _record_output_shapes(self, size=256):
        size = max(self.padded_size(size, size)[0], self.min_size())
        shapes = {}

        def recording(layer, call):
            def wrapper(*args, **kwargs):
                outputs = call(*args, **kwargs)
                shapes[id(layer)] = keras.tree.map_structure(  # JAX: symbolic batch -> None
                    lambda t: tuple(d if isinstance(d, int) else None for d in t.shape), outputs)
                return outputs
            return wrapper

        layers = list(self.layers)
        for layer in layers:
            object.__setattr__(layer, "call", recording(layer, layer.call))
        try:
            spec = keras.KerasTensor((None, size, size, self.channels), "float32")
            self.compute_output_spec({"x0": spec, "x1": spec,
                                      "time": keras.KerasTensor((None, 1), "float32")})
        finally:
            for layer in layers:
                object.__delattr__(layer, "call")
        for layer in layers:
            if id(layer) in shapes:
                object.__setattr__(layer, "output_shape", shapes[id(layer)])

    def load_weights_file(self, path, fmt):
        """Loads weights stored in a format other than Keras' (``fmt`` in :attr:`weight_formats`).

        :func:`emzoo.weights.load_into` calls this for every non-Keras format, so the code that
        reads an architecture's foreign checkpoints lives in that architecture's folder.
        """
        from emzoo.errors import WeightsError

        raise WeightsError(describe(
            f"Architecture `{self.architecture}` cannot read weights in the format {fmt!r}.",
            f"one of {', '.join(self.weight_formats)}", weights=str(path)))

    # ----------------------------------------------------------------------------------- padding
    def padded_size(self, height, width):
        """(H, W) rounded up to the model's size multiple."""
        m = int(self.size_multiple)
        return -(-height // m) * m, -(-width // m) * m

    # ---------------------------------------------------------------------------------- training
    @property
    def loss_variant(self):
        """The loss variant recorded in the model's zoo entry (``metadata.loss_variant``), or None."""
        return getattr(self, "zoo_entry", {}).get("metadata", {}).get("loss_variant")

    def paper_loss(self, vgg_weights="default", schedule_scale=1.0):
        """The architecture's paper loss (a Keras loss; may use frames and a step schedule).

        Each architecture overrides this with the loss its folder defines (``loss.py``), applying
        :attr:`loss_variant` where the paper has variants (FILM: style, vgg, l1).

        Args:
            vgg_weights: ``"default"``, ``"imagenet"``, ``"matconvnet"``, a path, or ``None``
                (random VGG, for tests); see :mod:`emzoo.losses.vgg`.
            schedule_scale: multiplies every weight-schedule boundary (for short runs).
        """
        import warnings

        from emzoo.losses import L1Loss

        del vgg_weights, schedule_scale
        warnings.warn(f"No paper loss is defined for architecture {self.architecture!r}; "
                      "using L1.", stacklevel=2)
        return L1Loss()

    def default_loss(self):
        """The loss ``compile()`` uses by default: :meth:`paper_loss`."""
        return self.paper_loss()

    def default_optimizer(self):
        return keras.optimizers.Adam(learning_rate=1e-4)

    def default_metrics(self):
        from emzoo import metrics

        return [metrics.PSNR(), metrics.SSIM(), metrics.IE()]

    def compile(self, optimizer="default", loss="default", metrics="default", **kwargs):
        """Keras ``compile`` with the paper's loss, Adam and PSNR/SSIM/IE as defaults.

        Example:
            >>> model.compile()                                   # paper loss         # doctest: +SKIP
            >>> model.compile(loss="mean_absolute_error")         # anything Keras takes # doctest: +SKIP
        """
        optimizer = self.default_optimizer() if optimizer == "default" else optimizer
        loss = self.default_loss() if loss == "default" else loss
        metrics = self.default_metrics() if metrics == "default" else metrics
        self._frame_loss = loss if getattr(loss, "uses_frames", False) else None
        super().compile(optimizer=optimizer, loss=None if self._frame_loss else loss,
                        metrics=metrics, **kwargs)
        self._step_loss = loss if getattr(loss, "uses_step", False) else None
        if self._step_loss is not None:
            loss.bind_step(self.optimizer.iterations)

    def compute_loss_and_updates(self, *args, optimizer_variables=None, **kwargs):
        """JAX trainer hook: bind scheduled losses to the traced iteration counter.

        The JAX trainer passes the optimizer's variables in as values; without this a weight
        schedule would read ``optimizer.iterations`` once, at trace time, and never switch.
        """
        loss = getattr(self, "_step_loss", None)
        if loss is None or optimizer_variables is None:
            return super().compute_loss_and_updates(
                *args, optimizer_variables=optimizer_variables, **kwargs)
        index = next(k for k, v in enumerate(self.optimizer.variables)
                     if v is self.optimizer.iterations)
        loss.bind_step(optimizer_variables[index])
        try:
            return super().compute_loss_and_updates(
                *args, optimizer_variables=optimizer_variables, **kwargs)
        finally:
            loss.bind_step(self.optimizer.iterations)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        image = image_of(y_pred)
        if self._frame_loss is not None:
            total = self._frame_loss.call_with_frames(x, y, image)
            for extra in self.losses:
                total = total + ops.cast(extra, total.dtype)
            # Keras losses divide by the replica count under tf.distribute (gradients are summed
            # across replicas); a loss called directly must do the same.
            return _scale_loss_for_distribution(total)
        return super().compute_loss(x=x, y=y, y_pred=image, sample_weight=sample_weight,
                                    training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, image_of(y_pred), sample_weight)
