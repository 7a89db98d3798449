"""The test suite's own helpers: tiny models, synthetic volumes and training-run runners.

Not part of the package: the reusable drivers (``random_inputs``, ``check_zoo_entry`` ...) are in
:mod:`emzoo.testing`. Importing this module registers the ``tiny-test`` architecture
(:class:`TinyInterpolator`; the ``tiny_test_architecture`` fixture imports it for tests that only
name it). Tests import it by name (``from emzoo_test_helpers import ...``): pytest puts ``tests/``
on ``sys.path`` when it imports ``tests/conftest.py``, and no test folder or installed package
uses the name. Child Pythons get ``tests/`` on ``PYTHONPATH`` (:func:`subprocess_env`).
"""

import io
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
from keras import ops

from emzoo import zoo
from emzoo.models.base import Interpolator
from emzoo.testing import TINY_FILM

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


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
    """Sends SIGKILL to its own process after optimizer step ``step`` (a crash between
    checkpoints)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def subprocess_env(env=None):
    """The environment of a child Python that imports this module: ``tests/`` first on
    ``PYTHONPATH``, TensorFlow's start-up lines off, then ``env``'s entries."""
    path = os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))


def _train_command(kwargs, kill_at=None):
    script = ("import sys, json; import emzoo_test_helpers as helpers; "
              f"helpers._train_main(json.loads(sys.argv[1]), {kill_at!r})")
    return [sys.executable, "-c", script, json.dumps(kwargs)]


def train_in_subprocess(kwargs, kill_at=None, env=None, timeout=240):
    """Runs ``emzoo.training.train(**kwargs)`` in a fresh Python (``tiny-test`` registered).

    ``kill_at``: SIGKILL the run after that optimizer step. The child prints ``SUMMARY {json}``
    at the end. Returns the ``subprocess.CompletedProcess``.
    """
    return subprocess.run(_train_command(kwargs, kill_at), capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env(env))


def start_train_subprocess(kwargs, env=None):
    """Like :func:`train_in_subprocess` but returns the running ``subprocess.Popen`` (text pipes),
    for several workers side by side."""
    return subprocess.Popen(_train_command(kwargs), env=subprocess_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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
def save_tiny_film(folder, name="tiny-film"):
    """Saves a ``TINY_FILM`` with random weights under ``folder``; returns the model folder."""
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
        # sizes are known unless a trace covers several (the engine's tf.function relaxes them)
        assert all(side is None or side % self.size_multiple == 0 for side in x0.shape[1:3])
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


def fixed_pair(size=64):
    """A fixed smooth pair of frames (the second shifted by 2, 1 pixels), ``(1, size, size, 1)``
    float32 each: the input the pinned outputs of the bundled models are computed on."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x0 = 0.5 + 0.4 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    x1 = 0.5 + 0.4 * np.sin((xx + 2) / 5.0) * np.cos((yy + 1) / 7.0)
    return x0[None, ..., None].astype(np.float32), x1[None, ..., None].astype(np.float32)
