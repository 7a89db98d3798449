"""Test drivers for interpolators and layers, in the manner of keras-hub's test cases.

What a new architecture's tests call, inside this repository or in a plugin outside it: random
inputs, gradients on the active backend, config, serialization and weights round trips, a training
step, a whole zoo entry (``tests/test_zoo.py`` walks every registered entry with
:func:`check_zoo_entry`, so a new model is covered the day it is registered) and the paper loss.
Importing this module registers nothing. The test suite's own tiny models and runners live in
``tests/emzoo_test_helpers.py``, outside the package.

Example:
    >>> from emzoo import testing
    >>> testing.check_layer_config_round_trip(layer, inputs)     # doctest: +SKIP
    >>> testing.check_zoo_entry("tsain", size=16)                # doctest: +SKIP
"""

import importlib
import json

import keras
import numpy as np
from keras import ops


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


# The smallest FILM configuration (size multiple 2): fast on CPU with random weights, for tests
# and benchmarks of what runs a model (the engine, saving, export).
TINY_FILM = dict(channels=1, pyramid_levels=2, fusion_pyramid_levels=2, specialized_levels=1,
                 sub_levels=1, filters=2, flow_convs=[1, 1], flow_filters=[2, 2])
