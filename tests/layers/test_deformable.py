"""DeformableConv2D (DCNv2) and DeformableConvPack against a NumPy loop reference."""

import os

import numpy as np
import pytest

import keras
from keras import ops

from emzoo import testing
from emzoo.errors import EmzooError
from emzoo.layers.deformable import DeformableConv2D, DeformableConvPack


def np_bilinear_zero(image, y, x):
    """CUDA ``dmcn_im2col_bilinear``: 0 unless -1 < y < H and -1 < x < W; outside corners are 0."""
    height, width, channels = image.shape
    if not (-1 < y < height and -1 < x < width):
        return np.zeros(channels)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    fy, fx = y - y0, x - x0
    value = np.zeros(channels)
    for cy, cx, weight in [(y0, x0, (1 - fy) * (1 - fx)), (y0, x0 + 1, (1 - fy) * fx),
                           (y0 + 1, x0, fy * (1 - fx)), (y0 + 1, x0 + 1, fy * fx)]:
        if 0 <= cy < height and 0 <= cx < width:
            value += weight * image[cy, cx]
    return value


def np_deformable_conv(x, offset, mask, kernel, bias, groups, dilation):
    """Loop reference of DCNv2, stride 1, Keras "same" padding, the module's channel layout."""
    batch, height, width, channels = x.shape
    kernel_h, kernel_w, _, filters = kernel.shape
    taps, group_channels = kernel_h * kernel_w, channels // groups
    pad_y, pad_x = dilation[0] * (kernel_h - 1) // 2, dilation[1] * (kernel_w - 1) // 2
    out = np.zeros((batch, height, width, filters))
    for b in range(batch):
        for y in range(height):
            for xx in range(width):
                column = np.zeros((kernel_h, kernel_w, channels))
                for g in range(groups):
                    part = slice(g * group_channels, (g + 1) * group_channels)
                    for i in range(kernel_h):
                        for j in range(kernel_w):
                            k = i * kernel_w + j
                            dy = offset[b, y, xx, g * 2 * taps + 2 * k]
                            dx = offset[b, y, xx, g * 2 * taps + 2 * k + 1]
                            sy = y - pad_y + i * dilation[0] + dy
                            sx = xx - pad_x + j * dilation[1] + dx
                            column[i, j, part] = (mask[b, y, xx, g * taps + k]
                                                  * np_bilinear_zero(x[b, :, :, part], sy, sx))
                out[b, y, xx] = np.einsum("ijc,ijcf->f", column, kernel)
    return out + (0 if bias is None else bias)


def make_inputs(rng, shape, groups, taps, offset_scale=2.0):
    x = rng.random(shape, dtype=np.float32)
    offset = (rng.standard_normal((*shape[:3], 2 * groups * taps)) * offset_scale).astype(np.float32)
    mask = rng.random((*shape[:3], groups * taps), dtype=np.float32)
    return x, offset, mask


@pytest.mark.parametrize("kernel_size, groups, dilation", [(3, 1, 1), (3, 2, 2), (2, 4, 1), ((1, 3), 2, (1, 2)),
                                                           (5, 1, 1)])
def test_zero_offsets_unit_masks_equal_conv2d(kernel_size, groups, dilation):
    rng = np.random.default_rng(0)
    layer = DeformableConv2D(5, kernel_size, deformable_groups=groups, dilation_rate=dilation)
    taps = layer.taps
    x = rng.random((2, 7, 6, 4), dtype=np.float32)
    zeros = np.zeros((2, 7, 6, 2 * groups * taps), np.float32)
    ones = np.ones((2, 7, 6, groups * taps), np.float32)
    layer(x, zeros, ones)
    conv = keras.layers.Conv2D(5, kernel_size, padding="same", dilation_rate=dilation)
    conv.build(x.shape)
    conv.bias.assign(rng.standard_normal(5).astype(np.float32))
    layer.kernel.assign(conv.kernel)
    layer.bias.assign(conv.bias)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x, zeros, ones)), ops.convert_to_numpy(conv(x)),
                               atol=1e-5)


@pytest.mark.parametrize("kernel_size, groups, dilation, use_bias", [(3, 1, 1, True), (3, 2, 2, False),
                                                                     (2, 4, 1, True), ((3, 1), 2, (2, 1), True)])
def test_random_offsets_match_numpy(kernel_size, groups, dilation, use_bias):
    rng = np.random.default_rng(1)
    layer = DeformableConv2D(3, kernel_size, deformable_groups=groups, dilation_rate=dilation,
                             use_bias=use_bias, bias_initializer="random_normal")
    x, offset, mask = make_inputs(rng, (2, 5, 6, 4), groups, layer.taps)
    out = ops.convert_to_numpy(layer(x, offset, mask))
    bias = ops.convert_to_numpy(layer.bias) if use_bias else None
    expected = np_deformable_conv(x, offset, mask, ops.convert_to_numpy(layer.kernel), bias, groups,
                                  layer.dilation_rate)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_border_samples_and_far_offsets():
    rng = np.random.default_rng(2)
    layer = DeformableConv2D(2, 3, bias_initializer="ones")
    x = rng.random((1, 4, 4, 2), dtype=np.float32)
    mask = np.ones((1, 4, 4, 9), np.float32)
    far = np.full((1, 4, 4, 18), 50.0, np.float32)  # every sample outside: only the bias is left
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x, far, mask)), np.ones((1, 4, 4, 2)), atol=1e-6)
    # Half a pixel outside and exact integers: partial corners and the -1 < y < H edge cases.
    edge = rng.choice([-1.0, -0.5, 0.0, 0.5, 3.0, 3.5, 4.0], size=(1, 4, 4, 18)).astype(np.float32)
    expected = np_deformable_conv(x, edge, mask, ops.convert_to_numpy(layer.kernel),
                                  ops.convert_to_numpy(layer.bias), 1, (1, 1))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x, edge, mask)), expected, atol=1e-5)


def test_gradients_reach_every_input_and_weight():
    rng = np.random.default_rng(3)
    layer = DeformableConv2D(3, 3, deformable_groups=2)
    x, offset, mask = make_inputs(rng, (1, 5, 5, 4), 2, 9, offset_scale=0.7)
    layer(x, offset, mask)
    kernel = ops.convert_to_numpy(layer.kernel)

    def loss(x_, offset_, mask_):
        return ops.sum(layer(x_, offset_, mask_) ** 2)

    grads = testing.gradients(loss, x, offset, mask)
    for grad, value in zip(grads, (x, offset, mask)):
        assert grad.shape == value.shape and np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    # The output is linear in the mask: check that gradient against the reference exactly.
    out = np_deformable_conv(x, offset, mask, kernel, ops.convert_to_numpy(layer.bias), 2, (1, 1))
    eps, index = 1e-3, (0, 2, 3, 7)
    plus = mask.copy()
    plus[index] += eps
    numeric = (np.sum(np_deformable_conv(x, offset, plus, kernel, ops.convert_to_numpy(layer.bias), 2,
                                         (1, 1)) ** 2) - np.sum(out ** 2)) / eps
    np.testing.assert_allclose(grads[2][index], numeric, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("cls", [DeformableConv2D, DeformableConvPack])
def test_remat_gives_the_same_outputs_and_gradients(cls):
    rng = np.random.default_rng(5)
    x, offset, mask = make_inputs(rng, (1, 6, 6, 4), 2, 9, offset_scale=0.7)
    args = (x, offset, mask) if cls is DeformableConv2D else (x, offset[..., :5])
    layers = [cls(3, 3, deformable_groups=2, remat=remat) for remat in (False, True)]
    for layer in layers:
        layer(*args)
    weights = [w + rng.normal(0, 0.1, w.shape).astype(np.float32) for w in layers[0].get_weights()]
    for layer in layers:  # non-zero offsets in the pack too
        layer.set_weights(weights)
    assert layers[1].get_config()["remat"] and not layers[0].get_config()["remat"]
    np.testing.assert_allclose(ops.convert_to_numpy(layers[1](*args)),
                               ops.convert_to_numpy(layers[0](*args)), rtol=1e-6, atol=1e-6)
    plain, remat = (testing.layer_gradients(layer, *args) for layer in layers)
    assert len(plain) == len(remat) == len(layers[0].trainable_variables) + len(args)
    for a, b in zip(plain, remat):
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_pack_zero_init_is_half_a_plain_conv():
    rng = np.random.default_rng(4)
    layer = DeformableConvPack(4, 3, deformable_groups=2, bias_initializer="random_normal")
    x = rng.random((1, 6, 6, 4), dtype=np.float32)
    feature = rng.random((1, 6, 6, 5), dtype=np.float32)
    out = ops.convert_to_numpy(layer(x, feature))
    assert tuple(layer.conv_offset.kernel.shape) == (3, 3, 5, 3 * 2 * 9)
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    conv.build(x.shape)
    conv.kernel.assign(layer.kernel)
    expected = 0.5 * ops.convert_to_numpy(conv(x)) + ops.convert_to_numpy(layer.bias)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_pack_splits_offsets_and_sigmoid_masks():
    rng = np.random.default_rng(5)
    layer = DeformableConvPack(3, 3, deformable_groups=2)
    x = rng.random((1, 5, 5, 4), dtype=np.float32)
    feature = rng.random((1, 5, 5, 2), dtype=np.float32)
    layer(x, feature)
    offset_kernel = rng.standard_normal((3, 3, 2, 54)).astype(np.float32) * 0.5
    offset_bias = rng.standard_normal(54).astype(np.float32) * 0.5
    layer.conv_offset.kernel.assign(offset_kernel)
    layer.conv_offset.bias.assign(offset_bias)
    # The offset conv is a plain conv: the reference with zero offsets and unit masks computes it.
    prediction = np_deformable_conv(feature, np.zeros((1, 5, 5, 18)), np.ones((1, 5, 5, 9)), offset_kernel,
                                    offset_bias, 1, (1, 1))
    offset, mask = prediction[..., :36], 1 / (1 + np.exp(-prediction[..., 36:]))
    expected = np_deformable_conv(x, offset, mask, ops.convert_to_numpy(layer.kernel),
                                  ops.convert_to_numpy(layer.bias), 2, (1, 1))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x, feature)), expected, atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    ({"filters": 0}, "Invalid value for argument `filters`. Expected a strictly positive integer. "
                     "Received: filters=0"),
    ({"filters": 4, "deformable_groups": -2}, "Invalid value for argument `deformable_groups`. Expected a "
                                              "strictly positive integer. Received: deformable_groups=-2"),
    ({"filters": 4, "kernel_size": (3, 3, 3)}, "Invalid value for argument `kernel_size`. Expected an integer "
                                               "or a tuple of 2 integers. Received: kernel_size=(3, 3, 3)"),
    ({"filters": 4, "dilation_rate": 0}, "Invalid value for argument `dilation_rate`. Expected a strictly "
                                         "positive integer. Received: dilation_rate=0"),
])
def test_argument_validation_messages(kwargs, message):
    with pytest.raises(EmzooError) as info:
        DeformableConv2D(**kwargs)
    assert str(info.value) == message


def test_groups_must_divide_input_channels():
    layer = DeformableConv2D(4, deformable_groups=3)
    with pytest.raises(EmzooError, match=r"Expected a divisor of the number of input channels \(4\). "
                                         r"Received: deformable_groups=3"):
        layer(np.zeros((1, 4, 4, 4), np.float32), np.zeros((1, 4, 4, 54), np.float32),
              np.zeros((1, 4, 4, 27), np.float32))
    with pytest.raises(EmzooError, match="Invalid offset shape"):
        DeformableConv2D(4)(np.zeros((1, 4, 4, 4), np.float32), np.zeros((1, 4, 4, 9), np.float32),
                            np.zeros((1, 4, 4, 9), np.float32))


@pytest.mark.parametrize("cls", [DeformableConv2D, DeformableConvPack])
def test_config_round_trip(cls):
    layer = cls(6, kernel_size=(3, 1), deformable_groups=2, dilation_rate=2, use_bias=False, name="dcn",
                kernel_initializer="he_normal")
    config = layer.get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is cls and clone.get_config() == config
    assert (config["filters"], config["kernel_size"], config["deformable_groups"], config["dilation_rate"],
            config["use_bias"]) == (6, (3, 1), 2, (2, 2), False)


def build_pack_model():
    image = keras.Input((None, None, 4), name="image")
    feature = keras.Input((None, None, 3), name="feature")
    out = DeformableConvPack(4, deformable_groups=2, name="dcn")(image, feature)
    out = DeformableConv2D(2, 3, name="plain")(out, keras.ops.zeros_like(out[..., :1]) + ops.zeros((18,)),
                                                  ops.ones_like(out[..., :1]) * ops.ones((9,)))
    return keras.Model([image, feature], out)


def test_functional_model_trains_and_weights_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    model = build_pack_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = [rng.random((2, 8, 8, 4), dtype=np.float32), rng.random((2, 8, 8, 3), dtype=np.float32)]
    y = rng.random((2, 8, 8, 2), dtype=np.float32)
    before = ops.convert_to_numpy(model.get_layer("dcn").conv_offset.kernel).copy()
    model.fit(x, y, epochs=2, batch_size=2, verbose=0)
    # The zero-initialised offset conv must learn (its gradient flows through offsets and masks).
    assert np.abs(ops.convert_to_numpy(model.get_layer("dcn").conv_offset.kernel) - before).max() > 0
    expected = model.predict(x, verbose=0)

    path = os.path.join(tmp_path, "dcn.weights.h5")
    model.save_weights(path)
    clone = build_pack_model()
    clone.load_weights(path)
    np.testing.assert_allclose(clone.predict(x, verbose=0), expected, atol=1e-6)

    saved = os.path.join(tmp_path, "dcn.keras")
    model.save(saved)
    np.testing.assert_allclose(keras.saving.load_model(saved).predict(x, verbose=0), expected, atol=1e-6)
