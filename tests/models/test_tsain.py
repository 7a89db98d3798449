"""Tests of the TSAIN architecture: contract, parameter counts, padding, saving and training."""

import json

import keras
import numpy as np
import pytest
from keras import ops

import emzoo
from emzoo import testing
from emzoo.errors import EmzooError
from emzoo.models.base import crop_padding, pad_to_multiple
from emzoo.models.tsain import TSAIN

# A reduced configuration: every kind of block once, narrow features, a 2-level pyramid.
SMALL = dict(filters=8, extraction_blocks=1, reconstruction_blocks=1, deformable_groups=2,
             spatial_adaptive_blocks=1, rsab_deformable_groups=1, refinement_blocks=1,
             pyramid_levels=2, channels=1, remat=False, residual=False)


@pytest.fixture(scope="module")
def small_model():
    """One built reduced model shared by the read-only tests (building is the slow part)."""
    return TSAIN(**SMALL).build_for_weights()


def conv_params(cin, cout, k=3):
    return cin * cout * k * k + cout


def deformable_params(cin, cout, groups, feature_channels, k=3):
    # The deformable conv's own kernel and bias, plus its zero-initialised offset/mask conv
    # predicting (2 offsets + 1 mask) per tap and group from the offset features.
    return conv_params(cin, cout, k) + conv_params(feature_channels, groups * 3 * k * k, k)


def test_small_config_parameter_count_by_hand(small_model):
    f, c, g = 8, 1, 2
    extractor = conv_params(c, f) + 2 * conv_params(f, f) + 2 * conv_params(f, f)  # 1 block, 1 level
    coarse = conv_params(2 * f, f) + conv_params(f, f) + deformable_params(f, f, g, f)
    fine = (conv_params(2 * f, f) + conv_params(2 * f, f) + conv_params(f, f)
            + deformable_params(f, f, g, f) + conv_params(2 * f, f))
    interpolation = 2 * (coarse + fine) + conv_params(2 * f, f, 1)
    rsab = 3 * conv_params(f, f) + deformable_params(f, f, 1, f)
    drb = 2 * (conv_params(2 * f, f) + conv_params(f, f) + deformable_params(f, f, g, f))
    reconstruction = (conv_params(3 * f, f, 1) + conv_params(f, f) + 2 * conv_params(f, f)
                      + conv_params(f, c))
    expected = extractor + interpolation + rsab + drb + reconstruction
    assert expected == 51_144  # the same sum done on paper
    assert small_model.count_params() == expected


@pytest.mark.slow   # builds the published configurations
def test_paper_parameter_counts():
    # Building is all these need (an 8x8 forward pass); the numbers are in the module docstring.
    model = emzoo.load("tsain", weights=None, compile=False)
    assert model.count_params() == 5_661_874  # channels=1, k2=10
    assert emzoo.describe_model("tsain")["metadata"]["params"] == model.count_params()
    assert model.size_multiple == 4
    rgb = emzoo.load("tsain", weights=None, compile=False, channels=3)
    # The authors' published count (5,713,716) minus their 49,536 never-called 1x1 parameters.
    assert rgb.count_params() == 5_713_716 - 49_536 == 5_664_180


@pytest.mark.slow
def test_paper_text_configuration_parameter_count():
    model = emzoo.load("tsain", weights=None, compile=False, channels=3, reconstruction_blocks=40)
    assert model.count_params() == 5_664_180 + 30 * 2 * conv_params(64, 64)


def test_zoo_entry_config_matches_model():
    entry = emzoo.describe_model("tsain")
    model = TSAIN(**entry["config"])
    assert model.get_config() == entry["config"]
    assert set(entry["config"]) == set(TSAIN.config_keys())
    assert entry["weights"] is None
    assert entry["metadata"]["size_multiple"] == model.size_multiple


def check_forward(model, height, width):
    inputs, _ = testing.random_inputs(2, height, width, model.channels)
    out = model(inputs, training=False)
    assert isinstance(out, dict) and "image" in out
    assert tuple(out["image"].shape) == (2, height, width, model.channels)
    assert np.all(np.isfinite(ops.convert_to_numpy(out["image"])))


@pytest.mark.parametrize("height,width", [(16, 16), (10, 14), (9, 7)])
def test_forward_any_size(small_model, height, width):
    check_forward(small_model, height, width)


def test_forward_three_channels():
    check_forward(TSAIN(**{**SMALL, "channels": 3}), 9, 12)


def test_padding_is_cropped_back_exactly():
    x = np.arange(2 * 6 * 9 * 1, dtype="float32").reshape(2, 6, 9, 1)
    padded, window = pad_to_multiple(x, 4)
    assert tuple(padded.shape) == (2, 8, 12, 1)
    np.testing.assert_array_equal(ops.convert_to_numpy(crop_padding(padded, window)), x)
    # Mirrored borders: the first padded column repeats the first image column.
    np.testing.assert_array_equal(ops.convert_to_numpy(padded)[:, 1:7, 1, 0], x[:, :, 0, 0])
    aligned, window = pad_to_multiple(x[:, :4, :8], 4)
    assert tuple(aligned.shape) == (2, 4, 8, 1)


def test_time_is_ignored(small_model):
    model = small_model
    inputs, _ = testing.random_inputs(1, 8, 8, 1)
    early = dict(inputs, time=np.full((1, 1), 0.25, "float32"))
    testing.assert_trees_close(model(inputs), model(early), atol=0)


def test_output_depends_on_both_frames(small_model):
    model = small_model
    inputs, _ = testing.random_inputs(1, 8, 8, 1)
    base = ops.convert_to_numpy(model(inputs)["image"])
    for key in ("x0", "x1"):
        changed = dict(inputs, **{key: inputs[key][:, ::-1]})
        assert not np.allclose(ops.convert_to_numpy(model(changed)["image"]), base), key


@pytest.mark.tf_only
def test_gradients_reach_every_weight(small_model):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("uses tf.GradientTape")
    import tensorflow as tf

    model = small_model
    inputs, y = testing.random_inputs(1, 8, 8, 1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.abs(model(inputs, training=True)["image"] - y))
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(grads) == len(model.trainable_variables) > 0
    missing = [v.path for v, g in zip(model.trainable_variables, grads) if g is None]
    assert not missing, missing
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)


def test_untrained_residual_tsain_is_linear_interpolation():
    model = TSAIN(**{**SMALL, "residual": True})
    inputs, _ = testing.random_inputs(2, 8, 12, 1, seed=3)
    expected = 0.5 * (np.asarray(inputs["x0"]) + np.asarray(inputs["x1"]))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(inputs)["image"]), expected,
                               atol=1e-6)
    paper = TSAIN(**SMALL)
    paper(inputs)
    assert model.count_params() == paper.count_params()


def test_config_round_trip_and_serialization(small_model):
    model = small_model
    config = model.get_config()
    assert config == SMALL
    assert json.loads(json.dumps(config)) == config
    assert TSAIN.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert type(restored) is TSAIN and restored.get_config() == config


def test_weights_round_trip(small_model, tmp_path):
    inputs, _ = testing.random_inputs(1, 8, 12, 1)
    testing.check_weights_round_trip(small_model, inputs, tmp_path)


@pytest.mark.slow
def test_few_training_steps_reduce_mae():
    model = TSAIN(**SMALL).build_for_weights()
    before = [np.array(w) for w in model.get_weights()]
    inputs, y = testing.random_inputs(2, 16, 16, 1, seed=1)
    # Eager steps: tracing the training graph costs more CPU than five eager steps.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae", metrics=[], run_eagerly=True)
    losses = [float(np.asarray(model.train_on_batch(inputs, y)).reshape(-1)[0]) for _ in range(5)]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses
    changed = [not np.allclose(u, v) for u, v in zip(before, model.get_weights())]
    assert len(changed) == len(before) > 0 and any(changed)


def test_invalid_arguments_raise_clear_errors():
    with pytest.raises(EmzooError, match="divisor of `filters`.*deformable_groups=3"):
        TSAIN(filters=8, deformable_groups=3)
    with pytest.raises(EmzooError, match="Received: pyramid_levels=0"):
        TSAIN(pyramid_levels=0)
    with pytest.raises(EmzooError, match="channels"):
        TSAIN(channels=2)
