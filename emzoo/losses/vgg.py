"""The one frozen VGG feature extractor behind every perceptual, style and style-balance loss.

:class:`VGGFeatureExtractor` runs VGG16 or VGG19 (3x3 convs + bias + ReLU, 2x2 pooling between
blocks) with ``keras.ops`` and returns the post-ReLU activations of the layers asked for, by name:
``"conv1_2"``, ``"relu1_2"`` and ``"block1_conv2"`` all name the ReLU output of the second conv of
block 1. Only the blocks up to the deepest requested layer are run.

Conventions (stated once):

* Input: ``(B, H, W, C)`` float images in ``[0, 1]``, RGB; grey (``C == 1``) is replicated to 3
  channels. The extractor converts to the convention its weights were trained with.
* Weights are kept in the Caffe/Keras Applications convention (BGR channel order, 0-255 inputs
  minus the ImageNet mean). MatConvNet weights are RGB: their first kernel is flipped to BGR when
  loaded, so every weight source sees the same pre-processed input.
* ``preprocessing="imagenet"``: ``x * 255 - (123.68, 116.779, 103.939)`` (RGB), what the weights
  expect and what FILM's VGG19 losses do (FILM spec 3.1).
* ``preprocessing="torchvision_unnormalised"``: the TSAIN authors' code (TSADR ``loss.py``) fed the
  raw ``[0, 1]`` image to torchvision's VGG16, whose expected input is ``(x - mean) / std``. That
  network therefore saw the low-contrast image ``x * std + mean``; this mode shows the same image to
  the Keras (Caffe) VGG16: ``255 * (x * std + mean_torch) - mean_caffe``, i.e. about ``57 * x``.
  The feature scale, and with it the balance of the papers' ``1e6`` style weight, stays that of the
  authors' setup (the two VGG16 trainings differ, so values are close, not equal).
* The weights are constant tensors, not variables: the extractor is never trained, never saved
  with a model, and needs no building. They load lazily, on the first call, so ``emzoo.load`` and
  ``predict`` never touch them. Under TensorFlow the tensors are made eagerly (``tf.init_scope``)
  even when the first call happens while a ``tf.function`` is traced, so compiled train steps
  capture them by reference instead of embedding them as graph constants, which multiplies the
  memory of a compiled FILM train step (the measurement is in benchmarks/README.md).

Weight sources (``weights=``):

* ``"imagenet"``: the Keras Applications ImageNet "notop" ``.h5`` file for the variant, resolved
  through :func:`emzoo.weights.resolve` (cache ``$EMZOO_HOME/vgg16-imagenet/`` etc., downloaded once;
  an existing Keras cache ``~/.keras/models/<file>`` is used as is). Checked against Keras' md5.
* ``"matconvnet"``: VGG19 only, ``imagenet-vgg-verydeep-19.mat`` from vlfeat.org, what the original
  FILM training used (read with ``scipy.io.loadmat``; no pickle).
* a path: a Keras ``.h5`` / ``.weights.h5`` file or a MatConvNet ``.mat`` file.
* ``None`` or ``"random"``: He-normal random weights from a fixed seed (tests).
* ``"default"``: :func:`set_default_weights` if called, else ``$EMZOO_VGG_WEIGHTS`` (``random``,
  ``imagenet``, ``matconvnet`` or a path), else ``"imagenet"``. Set ``EMZOO_VGG_WEIGHTS=random`` to
  train with paper losses without any download (tests do).

Example:
    >>> import numpy as np
    >>> from emzoo.losses.vgg import VGGFeatureExtractor
    >>> vgg = VGGFeatureExtractor("vgg16", layers=("relu1_2", "relu2_2"), weights=None)
    >>> feats = vgg(np.zeros((1, 32, 32, 1), "float32"))
    >>> tuple(feats["relu2_2"].shape)
    (1, 16, 16, 128)
"""

import os
import pathlib
import re
import threading

import numpy as np
from keras import ops

from emzoo.errors import EmzooError, WeightsError, describe

BLOCK_DEPTHS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
BLOCK_FILTERS = (64, 128, 256, 512, 512)

IMAGENET_MEAN_RGB = (123.68, 116.779, 103.939)  # Caffe / Keras Applications / MatConvNet
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
PREPROCESSING = ("imagenet", "torchvision_unnormalised")

# Keras Applications ImageNet weights without the classifier (keras/src/applications/vgg16.py and
# vgg19.py). Keras publishes md5 digests only; no sha256 was found in public sources, so the spec's
# sha256 is None and the file is checked against the md5 after it is resolved.
KERAS_APPLICATIONS_WEIGHTS = {
    "vgg16": {
        "url": "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
               "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "sha256": None,
        "md5": "6d6bbae143d832006294945121d1f1fc",
        "format": "keras",
    },
    "vgg19": {
        "url": "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
               "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "sha256": None,
        "md5": "253f8cb515780f3b799900260a226db6",
        "format": "keras",
    },
}
# The file FILM's training used (film.md 3.1; vlfeat.org MatConvNet model zoo). No published digest.
MATCONVNET_VGG19_WEIGHTS = {
    "url": "https://www.vlfeat.org/matconvnet/models/imagenet-vgg-verydeep-19.mat",
    "sha256": None,
    "format": "matconvnet",
}
# Index of each conv layer in MatConvNet's `layers` cell array (FILM spec 3.1; conv/relu/pool order).
MATCONVNET_VGG19_INDEX = {
    "block1_conv1": 0, "block1_conv2": 2, "block2_conv1": 5, "block2_conv2": 7,
    "block3_conv1": 10, "block3_conv2": 12, "block3_conv3": 14, "block3_conv4": 16,
    "block4_conv1": 19, "block4_conv2": 21, "block4_conv3": 23, "block4_conv4": 25,
    "block5_conv1": 28, "block5_conv2": 30, "block5_conv3": 32, "block5_conv4": 34,
}

_default_weights = None
_cache = {}
_cache_lock = threading.Lock()


def set_default_weights(weights):
    """Sets what ``weights="default"`` means in this process (``None`` restores the env/imagenet rule).

    Example:
        >>> from emzoo.losses import vgg
        >>> vgg.set_default_weights("random")   # paper losses now train without any download
        >>> vgg.set_default_weights(None)
    """
    global _default_weights
    _default_weights = weights
    with _cache_lock:  # extractors that already resolved "default" must resolve it again
        for key in [k for k in _cache if k[3] == "default"]:
            del _cache[key]


def default_weights():
    """The weight source ``"default"`` stands for now (see the module docstring)."""
    if _default_weights is not None:
        return _default_weights
    return os.environ.get("EMZOO_VGG_WEIGHTS", "").strip() or "imagenet"


def conv_name(layer):
    """Canonical Keras name (``block{b}_conv{i}``) of ``conv{b}_{i}``, ``relu{b}_{i}`` or itself.

    Example:
        >>> conv_name("relu3_3"), conv_name("conv5_2"), conv_name("block1_conv1")
        ('block3_conv3', 'block5_conv2', 'block1_conv1')
    """
    match = re.fullmatch(r"(?:conv|relu)(\d)_(\d)", layer) or re.fullmatch(r"block(\d)_conv(\d)", layer)
    if not match:
        raise EmzooError(describe("Unknown VGG layer name.",
                                  "a name like 'conv1_2', 'relu4_3' or 'block5_conv2'", layer=layer))
    return f"block{match.group(1)}_conv{match.group(2)}"


def conv_layer_names(variant):
    """Keras names of every conv layer of ``variant``, in order."""
    return [f"block{b + 1}_conv{i + 1}" for b, depth in enumerate(BLOCK_DEPTHS[variant])
            for i in range(depth)]


def _conv_shapes(variant):
    shapes, channels = {}, 3
    for b, depth in enumerate(BLOCK_DEPTHS[variant]):
        for i in range(depth):
            shapes[f"block{b + 1}_conv{i + 1}"] = (3, 3, channels, BLOCK_FILTERS[b])
            channels = BLOCK_FILTERS[b]
    return shapes


def random_weights(variant, seed=0):
    """He-normal kernels and zero biases for every conv of ``variant`` (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    params = {}
    for name, shape in _conv_shapes(variant).items():
        std = np.sqrt(2.0 / (shape[0] * shape[1] * shape[2]))
        params[name] = (rng.normal(0.0, std, shape).astype("float32"),
                        np.zeros(shape[-1], "float32"))
    return params


def read_keras_weights(path, variant):
    """Conv kernels and biases from a Keras ``.h5`` weights file (legacy or Keras 3 layout).

    The legacy layout (Keras Applications files): a group per layer name holding the datasets named
    by its ``weight_names`` attribute, kernel first. The Keras 3 ``.weights.h5`` layout:
    ``layers/<name>/vars/0`` (kernel) and ``/1`` (bias), as written by a ``keras.applications`` VGG.
    """
    import h5py

    wanted = conv_layer_names(variant)
    params = {}
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            for name in wanted:
                if name in root and "weight_names" in root[name].attrs:
                    group = root[name]
                    names = [n.decode() if isinstance(n, bytes) else n
                             for n in group.attrs["weight_names"]]
                    values = [np.asarray(group[n]) for n in names]
                elif "layers" in root and name in root["layers"]:
                    group = root["layers"][name]["vars"]
                    values = [np.asarray(group[k]) for k in sorted(group, key=int)]
                else:
                    continue
                params[name] = (values[0].astype("float32"), values[1].astype("float32"))
            if not params and "layers" in root:
                params = _keras3_convs_in_order(root["layers"], wanted)
    except OSError as error:
        raise WeightsError(describe(f"Cannot read the VGG weights file {path} ({error}).",
                                    "a Keras .h5 weights file", path=str(path))) from None
    return _checked(params, variant, path)


def _keras3_convs_in_order(layers, wanted):
    """Keras 3 ``.weights.h5`` names layers by class (``conv2d``, ``conv2d_1``, ...), in creation
    order: take the 4-D kernels in that order when there are exactly as many as VGG convs."""
    def order(name):
        suffix = name.rsplit("_", 1)[-1]
        return int(suffix) if "_" in name and suffix.isdigit() else 0

    convs = []
    for name in sorted(layers, key=order):
        group = layers[name].get("vars")
        if group is not None and "0" in group and group["0"].ndim == 4:
            convs.append((np.asarray(group["0"], "float32"), np.asarray(group["1"], "float32")))
    return dict(zip(wanted, convs)) if len(convs) == len(wanted) else {}


def read_matconvnet_weights(path, variant="vgg19"):
    """Conv kernels (flipped from RGB to BGR input) and biases from ``imagenet-vgg-verydeep-19.mat``.

    Read with ``scipy.io.loadmat`` (never unpickles). Each entry of the ``layers`` cell array is a
    struct whose ``weights`` field holds ``{kernel HWIO, bias}``; FILM reads the same values
    positionally as ``layers[0][n][0][0][2][0][0]`` / ``[...][2][0][1]``.
    """
    if variant != "vgg19":
        raise EmzooError(describe("MatConvNet weights are only wired for VGG19.", "variant='vgg19'",
                                  variant=variant))
    try:
        import scipy.io
    except ImportError:
        raise WeightsError(describe("Reading MatConvNet .mat VGG weights needs scipy.",
                                    "`pip install scipy`", path=str(path))) from None
    try:
        layers = scipy.io.loadmat(str(path))["layers"]
    except (OSError, ValueError, KeyError) as error:
        raise WeightsError(describe(f"Cannot read MatConvNet VGG weights from {path} ({error}).",
                                    "imagenet-vgg-verydeep-19.mat from vlfeat.org",
                                    path=str(path))) from None
    params = {}
    for name, index in MATCONVNET_VGG19_INDEX.items():
        if index >= layers.shape[1]:
            continue
        struct = layers[0][index][0][0]
        fields = struct.dtype.names or ()
        weights = struct["weights"] if "weights" in fields else struct[2]
        kernel = np.asarray(weights[0][0], "float32")
        bias = np.asarray(weights[0][1], "float32").reshape(-1)
        if name == "block1_conv1":
            kernel = kernel[:, :, ::-1, :]  # RGB -> BGR input channels (one convention for all)
        params[name] = (np.ascontiguousarray(kernel), bias)
    return _checked(params, variant, path)


def _checked(params, variant, path):
    shapes = _conv_shapes(variant)
    bad = [f"{name} {params[name][0].shape}" for name in params
           if name in shapes and params[name][0].shape != shapes[name]]
    if bad or "block1_conv1" not in params:
        raise WeightsError(describe(f"The file {path} does not hold {variant.upper()} conv weights.",
                                    "kernels shaped like " + ", ".join(
                                        f"{k} {v}" for k, v in list(shapes.items())[:2]) + ", ...",
                                    mismatched=bad or "no block1_conv1"))
    return params


def resolve_imagenet_file(variant):
    """Local path of the Keras Applications ImageNet file of ``variant`` (downloaded when missing)."""
    from emzoo import weights as emzoo_weights

    spec = KERAS_APPLICATIONS_WEIGHTS[variant]
    file_name = spec["url"].rsplit("/", 1)[-1]
    keras_cache = pathlib.Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "models"
    cached_by_keras = keras_cache / file_name
    if cached_by_keras.is_file() and not (emzoo_weights.cache_dir() / f"{variant}-imagenet"
                                          / file_name).exists():
        path = cached_by_keras
    else:
        path = emzoo_weights.resolve(spec, f"{variant}-imagenet")
    if emzoo_weights.file_digest(path, "md5") != spec["md5"]:
        raise WeightsError(describe(f"The VGG weights file {path} does not match Keras' checksum.",
                                    f"md5 {spec['md5']}", md5=emzoo_weights.file_digest(path, "md5")))
    return path


def _eager_scope():
    """A scope where the weights become concrete tensors even while a train step is traced:
    ``tf.init_scope()`` under TensorFlow, ``jax.ensure_compile_time_eval()`` under JAX (else a
    tracer would be kept past its trace); a no-op elsewhere."""
    import contextlib

    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.init_scope()
    if keras.backend.backend() == "jax":
        import jax

        return jax.ensure_compile_time_eval()
    return contextlib.nullcontext()


def load_weights(variant, weights, seed=0):
    """``{conv name: (kernel HWIO BGR-input, bias)}`` for a weight source (see the module docstring)."""
    if weights == "default":
        weights = default_weights()
    if weights is None or weights == "random":
        return random_weights(variant, seed)
    if weights == "imagenet":
        return read_keras_weights(resolve_imagenet_file(variant), variant)
    if weights == "matconvnet":
        from emzoo import weights as emzoo_weights

        return read_matconvnet_weights(emzoo_weights.resolve(MATCONVNET_VGG19_WEIGHTS,
                                                             "vgg19-matconvnet"), variant)
    path = pathlib.Path(os.fspath(weights)).expanduser()
    if not path.is_file():
        raise WeightsError(describe("VGG weights file not found.",
                                    "'imagenet', 'matconvnet', 'random', None, or the path of a "
                                    "Keras .h5 or MatConvNet .mat file", weights=str(weights)))
    if path.suffix.lower() == ".mat":
        return read_matconvnet_weights(path, variant)
    return read_keras_weights(path, variant)


class VGGFeatureExtractor:
    """Frozen VGG16/VGG19 returning named post-ReLU activations (see the module docstring).

    Args:
        variant: ``"vgg16"`` or ``"vgg19"``.
        layers: names of the activations to return (``"relu4_3"``, ``"conv5_2"``, ...).
        pooling: ``"max"`` (VGG as trained, 2x2 valid) or ``"avg"`` (FILM: 2x2 'SAME' average).
        weights: ``"default"``, ``"imagenet"``, ``"matconvnet"``, a path, or ``None``/``"random"``.
        preprocessing: ``"imagenet"`` or ``"torchvision_unnormalised"``.
        seed: seed of the random weights.

    Calling it on ``(B, H, W, C)`` images in ``[0, 1]`` returns ``{name: (B, h, w, c)}``.

    Example:
        >>> vgg = VGGFeatureExtractor("vgg19", ("conv1_2", "conv5_2"), pooling="avg", weights=None)
        >>> sorted(vgg(np.ones((2, 32, 32, 3), "float32")))
        ['conv1_2', 'conv5_2']
    """

    def __init__(self, variant="vgg19", layers=("conv1_2",), pooling="max", weights="default",
                 preprocessing="imagenet", seed=0):
        if variant not in BLOCK_DEPTHS:
            raise EmzooError(describe("Invalid value for argument `variant`.", "'vgg16' or 'vgg19'",
                                      variant=variant))
        if pooling not in ("max", "avg"):
            raise EmzooError(describe("Invalid value for argument `pooling`.", "'max' or 'avg'",
                                      pooling=pooling))
        if preprocessing not in PREPROCESSING:
            raise EmzooError(describe("Invalid value for argument `preprocessing`.",
                                      " or ".join(map(repr, PREPROCESSING)),
                                      preprocessing=preprocessing))
        self.variant = variant
        self.layers = tuple(layers)
        self.pooling = pooling
        self.weights = weights
        self.preprocessing = preprocessing
        self.seed = seed
        self._conv_of = {name: conv_name(name) for name in self.layers}
        all_convs = conv_layer_names(variant)
        for name, conv in self._conv_of.items():
            if conv not in all_convs:
                raise EmzooError(describe(f"{variant.upper()} has no layer `{name}`.",
                                          "one of " + ", ".join(all_convs), layer=name))
        last = max(all_convs.index(c) for c in self._conv_of.values())
        self._convs = all_convs[:last + 1]
        self._params = None

    @classmethod
    def shared(cls, variant, layers, pooling, weights="default", preprocessing="imagenet", seed=0):
        """One instance per configuration per process, so losses share loaded weights."""
        key = (variant, tuple(layers), pooling, weights if not isinstance(weights, os.PathLike)
               else os.fspath(weights), preprocessing, seed)
        with _cache_lock:
            if key not in _cache:
                _cache[key] = cls(variant, layers, pooling, weights, preprocessing, seed)
            return _cache[key]

    @property
    def loaded(self):
        """Whether the weights have been read (they are read on the first call)."""
        return self._params is not None

    def load(self):
        """Reads the weights now (otherwise the first call does); returns ``self``."""
        if self._params is None:
            with _eager_scope():
                params = load_weights(self.variant, self.weights, self.seed)
                self._params = {name: (ops.convert_to_tensor(params[name][0]),
                                       ops.convert_to_tensor(params[name][1]))
                                for name in self._convs}
        return self

    def preprocess(self, images):
        """``[0, 1]`` RGB or grey ``(B, H, W, C)`` -> the BGR input the weights expect."""
        images = ops.cast(images, "float32")
        if images.shape[-1] == 1:
            images = ops.concatenate([images] * 3, axis=-1)
        elif images.shape[-1] != 3:
            raise EmzooError(describe("VGG features need grey or RGB images.", "1 or 3 channels",
                                      channels=images.shape[-1]))
        mean = np.asarray(IMAGENET_MEAN_RGB, "float32")
        if self.preprocessing == "imagenet":
            scale, offset = np.full(3, 255.0, "float32"), -mean
        else:
            std = np.asarray(TORCHVISION_STD_RGB, "float32")
            scale = 255.0 * std
            offset = 255.0 * np.asarray(TORCHVISION_MEAN_RGB, "float32") - mean
        images = images * scale + offset
        return ops.flip(images, axis=-1)  # RGB -> BGR

    def __call__(self, images):
        self.load()
        x = self.preprocess(images)
        wanted = self._names_by_conv()
        features = {}
        previous_block = 1
        for conv in self._convs:
            block = int(conv[5])
            if block != previous_block:
                if self.pooling == "avg":
                    x = ops.average_pool(x, 2, 2, padding="same")
                else:
                    x = ops.max_pool(x, 2, 2, padding="valid")
                previous_block = block
            kernel, bias = self._params[conv]
            x = ops.conv(x, kernel, strides=1, padding="same")
            x = ops.relu(x + bias)
            for name in wanted.get(conv, ()):
                features[name] = x
        return features

    def _names_by_conv(self):
        by_conv = {}
        for name, conv in self._conv_of.items():
            by_conv.setdefault(conv, []).append(name)
        return by_conv

    def __repr__(self):
        return (f"VGGFeatureExtractor({self.variant!r}, layers={self.layers}, pooling={self.pooling!r},"
                f" weights={self.weights!r}, preprocessing={self.preprocessing!r})")
