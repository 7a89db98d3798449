"""Shared test drivers: layers, serialization, saving, and zoo entries.

Every architecture and layer test uses the same checks, so a new model is covered the day it is
registered (``tests/test_zoo.py`` walks every entry with :func:`check_zoo_entry`).

Example:
    >>> from emzoo import testing
    >>> testing.check_layer_config_round_trip(layer, inputs)     # doctest: +SKIP
    >>> testing.check_zoo_entry("tsain", size=16)                # doctest: +SKIP
"""

import importlib
import io
import json

import keras
import numpy as np
from keras import ops

from emzoo import zoo
from emzoo.models.base import Interpolator


def random_inputs(batch, height, width, channels, seed=0, time=0.5):
    """A random interpolator input dict and target, float32 in [0, 1].

    The target is the frames' mean plus noise: not exactly the mean, so models that start as linear
    interpolation (residual FILM) still get a gradient.
    """
    rng = np.random.default_rng(seed)
    x0 = rng.random((batch, height, width, channels), dtype=np.float32)
    x1 = rng.random((batch, height, width, channels), dtype=np.float32)
    noise = rng.normal(0.0, 0.1, x0.shape).astype(np.float32)
    y = np.clip(0.5 * (x0 + x1) + noise, 0.0, 1.0)
    t = np.full((batch, 1), time, np.float32)
    return {"x0": x0, "x1": x1, "time": t}, y


def gradients(fn, *args):
    """Gradients of the scalar ``fn(*args)`` w.r.t. every argument, on the active backend.

    Returns NumPy arrays (TensorFlow and JAX); on other backends the calling test is skipped.

    Example:
        >>> [g.tolist() for g in gradients(lambda a: ops.sum(a * a), np.ones(2, "float32"))]
        [[2.0, 2.0]]
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [np.asarray(g) for g in jax.grad(fn, argnums=tuple(range(len(args))))(*args)]
    if backend == "tensorflow":
        import tensorflow as tf

        variables = [tf.Variable(a) for a in args]
        with tf.GradientTape() as tape:
            value = fn(*variables)
        return [np.asarray(ops.convert_to_numpy(g)) for g in tape.gradient(value, variables)]
    import pytest

    pytest.skip(f"no gradient helper for backend {backend}")


def layer_gradients(layer, *args):
    """Gradients of ``sum(layer(*args) ** 2)`` w.r.t. the layer's trainable weights, then ``args``.

    Returns one list of NumPy arrays (weights in ``layer.trainable_variables`` order, then the
    arguments), on TensorFlow and JAX; on other backends the calling test is skipped. Build the
    layer first.

    Example:
        >>> dense = keras.layers.Dense(1, kernel_initializer="ones")
        >>> _ = dense(np.ones((1, 2), "float32"))
        >>> [g.tolist() for g in layer_gradients(dense, np.ones((1, 2), "float32"))]
        [[[4.0], [4.0]], [4.0], [[4.0, 4.0]]]
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        inputs = [tf.Variable(a) for a in args]
        with tf.GradientTape() as tape:
            value = ops.sum(ops.square(layer(*inputs)))
        grads = tape.gradient(value, list(layer.trainable_variables) + inputs)
        return [np.asarray(ops.convert_to_numpy(g)) for g in grads]
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def value(weights, *inputs):
            out, _ = layer.stateless_call(weights, non_trainable, *inputs)
            return jnp.sum(jnp.square(out))

        weights, *inputs = jax.grad(value, argnums=tuple(range(len(args) + 1)))(trainable, *args)
        return [np.asarray(g) for g in list(weights) + list(inputs)]
    import pytest

    pytest.skip(f"no gradient helper for backend {backend}")


def _numpy(tree):
    if isinstance(tree, dict):
        return {k: _numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_numpy(v) for v in tree]
    return ops.convert_to_numpy(tree)


def assert_trees_close(a, b, atol=1e-5, rtol=1e-5):
    """Asserts two nested outputs (dicts/lists of tensors) are numerically close."""
    a, b = _numpy(a), _numpy(b)
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), (sorted(a), sorted(b))
        for key in a:
            assert_trees_close(a[key], b[key], atol, rtol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert_trees_close(u, v, atol, rtol)
    else:
        np.testing.assert_allclose(a, b, atol=atol, rtol=rtol)


def check_layer_config_round_trip(layer, *call_args, atol=1e-6):
    """``from_config(get_config())`` rebuilds a layer that, given the same weights, computes the same."""
    expected = layer(*call_args)
    config = layer.get_config()
    json.dumps(config)  # must be JSON-serialisable
    clone = layer.__class__.from_config(config)
    clone(*call_args)
    clone.set_weights(layer.get_weights())
    assert clone.get_config() == config
    assert_trees_close(clone(*call_args), expected, atol=atol)
    return clone


def check_serialization(obj):
    """``keras.saving`` serialize/deserialize round trip (needs registration)."""
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(restored) is type(obj)
    assert restored.get_config() == obj.get_config()
    return restored


def check_weights_round_trip(model, inputs, directory):
    """``save_weights`` then ``load_weights`` into a fresh clone gives the same outputs."""
    path = str(directory / "model.weights.h5")
    expected = model(inputs, training=False)
    model.save_weights(path)
    clone = model.__class__.from_config(model.get_config())
    clone(inputs, training=False)
    clone.load_weights(path)
    assert_trees_close(clone(inputs, training=False), expected, atol=1e-6)
    return clone


def check_train_step(model, inputs, y, steps=1, loss="mean_absolute_error"):
    """A few ``train_on_batch`` steps run, give finite losses, and change the weights."""
    model(inputs, training=False)  # build, so there are weights to compare
    before = [np.array(w) for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=[])
    losses = [float(np.asarray(model.train_on_batch(inputs, y)).reshape(-1)[0]) for _ in range(steps)]
    assert all(np.isfinite(losses)), losses
    after = model.get_weights()
    assert any(not np.allclose(u, v) for u, v in zip(before, after)), "no weight changed"
    return losses


def check_zoo_entry(name, size=None, batch=1, train=True):
    """Builds a zoo entry with random weights and checks the interpolator contract.

    Forward at a small size (output dict with ``image`` of the input's shape), a training step,
    the config round trip, and the parameter count against the entry's metadata.
    """
    import emzoo

    entry = emzoo.describe_model(name)
    model = emzoo.load(name, weights=None, compile=False)
    params = entry.get("metadata", {}).get("params")
    assert params is not None, f"{name}: metadata.params missing"
    assert model.count_params() == params, (name, model.count_params(), params)
    assert entry.get("metadata", {}).get("size_multiple") == model.size_multiple, name
    size = size or model.min_size()
    inputs, y = random_inputs(batch, size, size, model.channels)
    out = model(inputs, training=False)
    assert isinstance(out, dict) and "image" in out
    assert tuple(out["image"].shape) == (batch, size, size, model.channels)
    config = model.get_config()
    assert json.loads(json.dumps(config)) == config
    clone = model.__class__.from_config(config)
    assert clone.get_config() == config
    if train:
        check_train_step(model, inputs, y)
    return model


def paper_loss(architecture, vgg_weights=None, **kwargs):
    """The paper loss that ``emzoo/models/<architecture>/loss.py`` defines (random VGG by default).

    Example:
        >>> sorted(paper_loss("tsain").terms)
        ['feature', 'l2', 'style']
    """
    module = importlib.import_module(f"emzoo.models.{architecture}")
    return module.paper_loss(vgg_weights=vgg_weights, **kwargs)


class AverageNet(Interpolator):
    """The mean of x0 and x1 plus a trainable 3x3 conv of it (a tiny test interpolator).

    It defines no paper loss, so ``compile()`` falls back to L1 with a warning.
    """

    def __init__(self, channels=1, **kwargs):
        super().__init__(channels=channels, **kwargs)
        self.refine = keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer="zeros")

    def call(self, inputs, training=False):
        mean = 0.5 * (inputs["x0"] + inputs["x1"])
        return {"image": mean + self.refine(mean)}

    def get_config(self):
        return {"channels": self.channels}


# ----------------------------------------------------------------------------------- training
TINY_TRAINING_RUN = dict(model="tiny-test", batch_size=4, crop=32, gaps=(1, 2), loss="l1",
                         learning_rate=1e-3, checkpoint_every=2, val_batches=1, jit_compile=False,
                         log_every=1, verbose=False)


@zoo.register_architecture("tiny-test")
@keras.saving.register_keras_serializable(package="emzoo_tests")
class TinyInterpolator(Interpolator):
    """The frame average plus a learned two-conv correction (a stand-in architecture for tests).

    Registered as ``tiny-test``: :data:`TINY_TRAINING_RUN` trains it in seconds.
    """

    size_multiple = 1

    def __init__(self, filters=4, channels=1, **kwargs):
        super().__init__(channels=channels, **kwargs)
        self.filters = int(filters)
        self.hidden = keras.layers.Conv2D(self.filters, 3, padding="same", activation="relu")
        self.correction = keras.layers.Conv2D(self.channels, 3, padding="same")

    def call(self, inputs, training=False):
        x0, x1 = inputs["x0"], inputs["x1"]
        hidden = self.hidden(keras.ops.concatenate([x0, x1], axis=-1))
        correction = keras.ops.cast(self.correction(hidden), x0.dtype)  # mixed precision
        return {"image": 0.5 * (x0 + x1) + correction}

    def get_config(self):
        return {"filters": self.filters, "channels": self.channels}


def make_training_volume(path, depth=20, size=48):
    """Writes a smooth uint8 TIFF stack whose pattern moves with z (interpolation is learnable)."""
    import tifffile

    z, y, x = np.mgrid[0:depth, 0:size, 0:size].astype(np.float32)
    volume = 0.5 + 0.3 * np.sin((x + 1.5 * z) / 5.0) * np.cos((y - z) / 7.0)
    tifffile.imwrite(path, np.round(volume * 255).astype(np.uint8))
    return str(path)


class KillAtStep(keras.callbacks.Callback):
    """Sends SIGKILL to its own process after optimizer step ``step`` (a crash between checkpoints)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        import os
        import signal

        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def _train_command(kwargs, kill_at=None):
    import sys

    script = ("import sys, json; from emzoo import testing; "
              f"testing._train_main(json.loads(sys.argv[1]), {kill_at!r})")
    return [sys.executable, "-c", script, json.dumps(kwargs)]


def train_in_subprocess(kwargs, kill_at=None, env=None, timeout=240):
    """Runs ``emzoo.training.train(**kwargs)`` in a fresh Python (``tiny-test`` registered).

    ``kill_at``: SIGKILL the run after that optimizer step. The child prints ``SUMMARY {json}``
    at the end. Returns the ``subprocess.CompletedProcess``.
    """
    import os
    import subprocess

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run(_train_command(kwargs, kill_at), capture_output=True, text=True,
                          timeout=timeout, env=env)


def start_train_subprocess(kwargs, env=None):
    """Like :func:`train_in_subprocess` but returns the running ``subprocess.Popen`` (text pipes),
    for several workers side by side."""
    import os
    import subprocess

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.Popen(_train_command(kwargs), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _train_main(kwargs, kill_at):
    from emzoo import training

    callbacks = [KillAtStep(kill_at)] if kill_at else None
    summary = training.train(callbacks=callbacks, **kwargs)
    print("SUMMARY " + json.dumps(summary))


def trained_weights(run_dir):
    """The weights of the model a run folder holds, as NumPy arrays."""
    import emzoo

    return [np.asarray(w) for w in emzoo.load(str(run_dir), compile=False).get_weights()]


# ------------------------------------------------------------------------------ volume engine
# The smallest FILM the tests build and save (random weights, size multiple 2): fast on CPU.
TINY_FILM = dict(channels=1, pyramid_levels=2, fusion_pyramid_levels=2, specialized_levels=1,
                 sub_levels=1, filters=2, flow_convs=[1, 1], flow_filters=[2, 2])


def save_tiny_film(folder, name="tiny-film"):
    """Saves a :data:`TINY_FILM` with random weights under ``folder``; returns the model folder."""
    import emzoo
    from emzoo.models.film import FILM

    model = FILM(**TINY_FILM)
    model.build_for_weights()
    return str(emzoo.save(model, folder / name))


def set_flags(config):
    """``config`` as ``emzoo train`` flags: ``["--set", "key=value", ...]`` (values as JSON).

    Example:
        >>> set_flags({"filters": 2, "flow_convs": [1, 1]})
        ['--set', 'filters=2', '--set', 'flow_convs=[1,1]']
    """
    flags = []
    for key, value in config.items():
        flags += ["--set", f"{key}={json.dumps(value, separators=(',', ':'))}"]
    return flags


class MeanModel(Interpolator):
    """Midpoint = mean of the two inputs; refuses sizes that are not multiples (tests padding).

    Recursive midpoints of this model are exactly linear interpolation along z, so every expected
    output of the volume engine can be computed with :func:`linear_along_z`.
    """

    size_multiple = 8

    def call(self, inputs, training=False):
        x0, x1 = inputs["x0"], inputs["x1"]
        assert x0.shape[1] % self.size_multiple == 0 and x0.shape[2] % self.size_multiple == 0
        assert x0.shape[-1] == self.channels
        return {"image": 0.5 * (x0 + x1)}


class TinyConvModel(Interpolator):
    """Mean plus a small learned-looking term with a 5x5 receptive field (two 3x3 convs)."""

    size_multiple = 8

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        init = keras.initializers.RandomNormal(stddev=0.5, seed=1)
        self.conv1 = keras.layers.Conv2D(8, 3, padding="same", activation="tanh",
                                         kernel_initializer=init, bias_initializer=init)
        self.conv2 = keras.layers.Conv2D(self.channels, 3, padding="same", kernel_initializer=init)

    def call(self, inputs, training=False):
        x0, x1 = inputs["x0"], inputs["x1"]
        detail = self.conv2(self.conv1(ops.concatenate([x0, x1], axis=-1)))
        return {"image": 0.5 * (x0 + x1) + 0.1 * ops.tanh(detail)}


class TinyFeatureModel(TinyConvModel):
    """A FILM-shaped model: ``call`` = ``interpolate_from_features(extract(x0), extract(x1))``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.extract_calls = 0

    def extract(self, image):
        self.extract_calls += 1  # counts traces, not images; the engine counts images
        return {"images": [image], "features": [self.conv1(ops.concatenate([image, image], -1))]}

    def interpolate_from_features(self, features0, features1, time=None):
        x0, x1 = features0["images"][0], features1["images"][0]
        detail = self.conv2(features0["features"][0] - features1["features"][0])
        return {"image": 0.5 * (x0 + x1) + 0.1 * ops.tanh(detail)}

    def call(self, inputs, training=False):
        return self.interpolate_from_features(self.extract(inputs["x0"]),
                                              self.extract(inputs["x1"]), inputs["time"])


def linear_along_z(volume, positions):
    """Reference: linear interpolation of a volume at fractional z positions (float64)."""
    volume = np.asarray(volume, np.float64)
    lower = np.clip(np.floor(positions).astype(int), 0, len(volume) - 1)
    upper = np.clip(lower + 1, 0, len(volume) - 1)
    weight = (np.asarray(positions) - lower)[:, None, None]
    return (1 - weight) * volume[lower] + weight * volume[upper]


def random_volume(shape, dtype=np.float32, seed=0):
    """A random (Z, Y, X) volume: uniform [0, 1) for float32, the full range for integer dtypes."""
    rng = np.random.default_rng(seed)
    if dtype == np.float32:
        return rng.random(shape).astype(np.float32)
    top = np.iinfo(dtype).max
    return rng.integers(0, top + 1, shape).astype(dtype)


def smooth_volume(depth=20, size=64, seed=0):
    """uint8 ``(Z, Y, X)`` of smooth blobs (neighbouring planes resemble each other), for tests of
    what trains on a volume (adaptation).

    Example:
        >>> smooth_volume(depth=4, size=8).shape
        (4, 8, 8)
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.random((depth * 4, size, size)), sigma=(4, 2, 2))[::4]
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return np.round(noise * 255).astype(np.uint8)


class TerminalStream(io.StringIO):
    """A text stream that says it is a terminal (progress bars redraw on it), for tests.

    Example:
        >>> TerminalStream().isatty()
        True
    """

    def isatty(self):
        return True
