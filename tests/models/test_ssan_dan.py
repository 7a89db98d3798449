"""SSAN (emzoo.models.ssan) and DAN (emzoo.models.dan), built on emzoo.models.sparse_attention.

The default (paper-size) models are checked by a hand parameter count against their zoo
metadata here, and built for real in the slow test and in tests/test_zoo.py's walk over entries.
"""

import json

import keras
import numpy as np
import pytest

import emzoo
from emzoo import testing
from emzoo.errors import EmzooError
from emzoo.models.dan import DAN
from emzoo.models.ssan import SSAN

TINY = dict(rdn_blocks=2, rdn_layers=2, rdn_growth=4, features=8, outer_partition=2,
            inner_partition=2, attention_reduction=4)
HEADS = {"ssan": dict(hybrid_width=8, hybrid_blocks=1), "dan": dict(blend_width=8)}


def tiny(name, **overrides):
    return emzoo.load(name, weights=None, compile=False, **{**TINY, **HEADS[name], **overrides})


# ------------------------------------------------------------------------- hand parameter counts
def conv(cin, cout, k, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def rdn_params(cin, blocks, layers, growth, g0):
    rdb = sum(conv(g0 + i * growth, growth, 3) for i in range(layers)) + conv(g0 + layers * growth, g0, 1)
    return conv(cin, g0, 3) + conv(g0, g0, 3) + blocks * rdb + conv(blocks * g0, g0, 1) + conv(g0, g0, 3)


def sagan_params(c, k):
    return 2 * conv(c, c // k, 1) + conv(c, c, 1) + 1


def hand_count(name, config):
    c, g0, k = config["channels"], config["features"], config["attention_reduction"]
    encoder_in = 2 * c if config["siamese_input"] == "pair" else c
    total = rdn_params(encoder_in, config["rdn_blocks"], config["rdn_layers"], config["rdn_growth"], g0)
    total += 3 * sagan_params(g0, k) + conv(g0, c, 3)  # attention-aware layer
    head_in = 2 * c + 2 * g0
    if name == "ssan":
        w = config["hybrid_width"]
        total += conv(head_in, w, 3) + config["hybrid_blocks"] * 2 * conv(w, w, 3) + conv(w, 1, 3)
    else:
        w = config["blend_width"]
        total += conv(head_in, w, 7) + 3 * 2 * conv(w, w, 3, bias=False) + conv(w, c, 3)
        total += 3 * sagan_params(w, k) if config["blend_attention"] else 0
    return total


@pytest.mark.parametrize("name", ["ssan", "dan"])
def test_metadata_params_match_hand_count_of_defaults(name):
    entry = emzoo.describe_model(name)
    assert entry["weights"] is None
    assert hand_count(name, entry["config"]) == entry["metadata"]["params"]
    assert entry["metadata"]["size_multiple"] == 32
    assert entry["config"]["channels"] == 1


@pytest.mark.parametrize("name", ["ssan", "dan"])
@pytest.mark.parametrize("channels", [1, 3])
def test_tiny_build_forward_shapes_and_params(name, channels):
    model = tiny(name, channels=channels)
    assert model.architecture == name and model.size_multiple == 4
    assert model.count_params() == hand_count(name, model.get_config())
    inputs, _ = testing.random_inputs(2, 12, 20, channels)
    out = model(inputs)
    expected_keys = {"image", "warped0", "warped1"} | ({"mask"} if name == "ssan" else set())
    assert set(out) == expected_keys
    for value in out.values():
        assert tuple(value.shape)[:3] == (2, 12, 20)
    assert tuple(out["image"].shape) == (2, 12, 20, channels)
    if name == "ssan":
        mask = keras.ops.convert_to_numpy(out["mask"])
        assert mask.shape[-1] == 1 and mask.min() >= 0 and mask.max() <= 1


def test_untrained_warps_start_from_the_input_frames():
    """gamma = 0 and a zeroed to-frame conv make the warped frames exactly the inputs."""
    model = tiny("ssan")
    to_frame = model.attention_aware.to_frame
    to_frame.set_weights([np.zeros_like(w) for w in to_frame.get_weights()])
    inputs, _ = testing.random_inputs(1, 8, 8, 1)
    out = model(inputs)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["warped0"]), inputs["x0"], atol=1e-6)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["warped1"]), inputs["x1"], atol=1e-6)
    m = keras.ops.convert_to_numpy(out["mask"])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["image"]),
                               m * inputs["x0"] + (1 - m) * inputs["x1"], atol=1e-6)


def test_dan_linear_blend_uses_time():
    model = tiny("dan", blend_attention=False)
    blend_out = model.blend_out
    blend_out.set_weights([np.zeros_like(w) for w in blend_out.get_weights()])
    inputs, _ = testing.random_inputs(1, 8, 8, 1, time=0.25)
    out = model(inputs)
    w0, w1 = (keras.ops.convert_to_numpy(out[k]) for k in ("warped0", "warped1"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out["image"]), 0.75 * w0 + 0.25 * w1,
                               atol=1e-6)


@pytest.mark.parametrize("name", ["ssan", "dan"])
def test_config_and_weights_round_trip(name, tmp_path):
    model = tiny(name, siamese_input="single", scale_scores=True, adaptive_partitions=True)
    attentions = [layer for layer in model._flatten_layers()
                  if type(layer).__name__ == "HierarchicalSparseAttention"]
    assert attentions and all(layer.adaptive for layer in attentions)
    config = model.get_config()
    assert json.loads(json.dumps(config)) == config
    assert set(config) == set(type(model).config_keys())
    assert type(model).from_config(config).get_config() == config
    inputs, _ = testing.random_inputs(1, 8, 8, 1, seed=1)
    # Non-zero gammas so that the attention weights matter in the comparison.
    model.set_weights([w + 0.1 if w.ndim == 0 else w for w in model.get_weights()])
    testing.check_weights_round_trip(model, inputs, tmp_path)
    emzoo.save(model, tmp_path / "saved")
    again = emzoo.load(tmp_path / "saved", compile=False)
    testing.assert_trees_close(again(inputs), model(inputs), atol=1e-6)


@pytest.mark.parametrize("name", ["ssan", "dan"])
def test_few_train_steps_reduce_mae(name):
    model = tiny(name)
    rng = np.random.default_rng(0)
    x0 = rng.random((2, 8, 8, 1), dtype=np.float32)
    x1 = rng.random((2, 8, 8, 1), dtype=np.float32)
    inputs = {"x0": x0, "x1": x1, "time": np.full((2, 1), 0.5, np.float32)}
    y = 0.25 * x0 + 0.75 * x1  # not the frames' mean, which an untrained model already returns
    before = model.get_weights()
    # Eager: tracing the deep graph would cost more than these few tiny steps (the graph path
    # is exercised by tests/test_zoo.py).
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae", metrics=[], run_eagerly=True)
    losses = [float(np.ravel(model.train_on_batch(inputs, y))[0]) for _ in range(6)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert all(not np.allclose(a, b) for a, b in zip(before, model.get_weights())
               if a.ndim == 4), "some conv kernel did not change"
    grads_reach_attention = [w for w in model.weights if w.path.endswith("gamma")]
    assert any(float(keras.ops.convert_to_numpy(g)) != 0.0 for g in grads_reach_attention)


def test_invalid_arguments():
    with pytest.raises(EmzooError, match="siamese_input"):
        SSAN(siamese_input="both")
    with pytest.raises(EmzooError, match="channels"):
        DAN(channels=2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ssan", "dan"])
def test_default_entry_builds_with_metadata_params(name):
    testing.check_zoo_entry(name, size=32, train=False)
