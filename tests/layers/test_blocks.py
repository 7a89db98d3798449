"""Tests of emzoo.layers.blocks: shapes, parameter counts by hand, NumPy reference, configs."""

import numpy as np
import pytest

import keras

from emzoo.errors import EmzooError
from emzoo.layers.blocks import ResidualBlock, ResidualDenseBlock, ResidualDenseNetwork


def np_conv2d_same(x, kernel, bias):
    """Stride-1 'same' (zero-padded) NHWC convolution, written out in NumPy."""
    kh, kw = kernel.shape[:2]
    top, left = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(x, ((0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += padded[:, i:i + h, j:j + w, :] @ kernel[i, j]
    return out + (0.0 if bias is None else bias)


def conv_params(cin, cout, k, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def rdb_params(g0, growth, layers, k=3):
    inner = sum(conv_params(g0 + i * growth, growth, k) for i in range(layers))
    return inner + conv_params(g0 + layers * growth, g0, 1)


@pytest.mark.parametrize("use_bias,relu_after_sum", [(True, False), (False, True)])
def test_residual_block_matches_numpy(use_bias, relu_after_sum):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 7, 4)).astype("float32")
    block = ResidualBlock(4, use_bias=use_bias, relu_after_sum=relu_after_sum)
    block.build(x.shape)
    weights = [rng.normal(scale=0.3, size=w.shape).astype("float32") for w in block.weights]
    block.set_weights(weights)
    if use_bias:
        k1, b1, k2, b2 = weights
    else:
        (k1, k2), b1, b2 = weights, None, None
    hidden = np.maximum(np_conv2d_same(x, k1, b1), 0)
    expected = x + np_conv2d_same(hidden, k2, b2)
    if relu_after_sum:
        expected = np.maximum(expected, 0)
    got = keras.ops.convert_to_numpy(block(x))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_residual_block_params_and_width_check():
    block = ResidualBlock(64)
    block.build((None, 8, 8, 64))
    assert block.count_params() == 2 * conv_params(64, 64, 3)  # 73,856 (TSAIN's RB)
    with pytest.raises(EmzooError, match="filters=64"):
        ResidualBlock(64).build((None, 8, 8, 32))
    with pytest.raises(EmzooError, match="strictly positive"):
        ResidualBlock(0)


def test_residual_dense_block_shape_params_and_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 5, 5, 6)).astype("float32")
    block = ResidualDenseBlock(growth_rate=3, num_layers=2)
    out = block(x)
    assert tuple(out.shape) == x.shape
    assert block.count_params() == rdb_params(6, 3, 2)
    # NumPy reference of the dense connectivity, local fusion and residual.
    weights = [w.numpy() if hasattr(w, "numpy") else keras.ops.convert_to_numpy(w)
               for w in block.weights]
    features = x.astype(np.float64)
    for i in range(2):
        kernel, bias = weights[2 * i], weights[2 * i + 1]
        features = np.concatenate([features, np.maximum(np_conv2d_same(features, kernel, bias), 0)], -1)
    expected = x + np_conv2d_same(features, weights[4], weights[5])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-4, rtol=1e-4)


def test_residual_dense_network_shape_and_params():
    rdn = ResidualDenseNetwork(num_blocks=3, layers_per_block=2, growth_rate=4, features=8)
    out = rdn(np.zeros((2, 8, 6, 1), "float32"))
    assert tuple(out.shape) == (2, 8, 6, 8)
    expected = (conv_params(1, 8, 3) + conv_params(8, 8, 3) + 3 * rdb_params(8, 4, 2)
                + conv_params(3 * 8, 8, 1) + conv_params(8, 8, 3))
    assert rdn.count_params() == expected


@pytest.mark.slow
def test_rdn_paper_config_b_param_count():
    # RDN config B (D=16, C=8, G=64, G0=64) on grey input, no upsampler.
    rdn = ResidualDenseNetwork()
    rdn.build((None, 16, 16, 1))
    expected = (conv_params(1, 64, 3) + conv_params(64, 64, 3) + 16 * rdb_params(64, 64, 8)
                + conv_params(16 * 64, 64, 1) + conv_params(64, 64, 3))
    assert rdn.count_params() == expected


@pytest.mark.parametrize("layer", [
    ResidualBlock(8, kernel_size=3, use_bias=False, relu_after_sum=True),
    ResidualDenseBlock(growth_rate=4, num_layers=3),
    ResidualDenseNetwork(num_blocks=2, layers_per_block=2, growth_rate=4, features=8),
])
def test_config_round_trip_and_serialisation(layer):
    x = np.random.default_rng(2).normal(size=(1, 6, 6, 8)).astype("float32")
    expected = keras.ops.convert_to_numpy(layer(x))
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer) and restored.built  # rebuilt from its build config
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), expected, atol=1e-5)


def test_gradients_flow_through_rdn():
    rdn = ResidualDenseNetwork(num_blocks=1, layers_per_block=2, growth_rate=4, features=4)
    x = keras.Input((8, 8, 1))
    model = keras.Model(x, rdn(x))
    model.compile(optimizer="adam", loss="mae")
    data = np.random.default_rng(3).uniform(size=(2, 8, 8, 1)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    model.fit(data, np.zeros((2, 8, 8, 4), "float32"), epochs=1, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))


def test_rdn_remat_gives_the_same_outputs_and_gradients():
    from emzoo import testing

    rng = np.random.default_rng(6)
    x = rng.random((1, 8, 8, 2), dtype=np.float32)
    networks = [ResidualDenseNetwork(num_blocks=2, layers_per_block=2, growth_rate=4, features=6,
                                     remat=remat) for remat in (False, True)]
    for network in networks:
        network(x)
    networks[1].set_weights(networks[0].get_weights())
    assert networks[1].get_config()["remat"] and not networks[0].get_config()["remat"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(networks[1](x)),
                               keras.ops.convert_to_numpy(networks[0](x)), rtol=1e-6, atol=1e-6)
    plain, remat = (testing.layer_gradients(network, x) for network in networks)
    assert len(plain) == len(networks[0].trainable_variables) + 1
    for a, b in zip(plain, remat):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
