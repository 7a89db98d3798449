"""Image pyramid and resizing against NumPy references (half-pixel bilinear, 2x2 average pool)."""

import numpy as np
import pytest

import keras
from keras import ops

from emzoo.errors import EmzooError
from emzoo.layers.pyramid import (build_image_pyramid, downsample2x_average, resize_bilinear,
                                  resize_nearest, upsample2x, upsample2x_bilinear)


def np_average_pool2x(images):
    height, width = images.shape[1] // 2 * 2, images.shape[2] // 2 * 2
    x = images[:, :height, :width]
    return (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]) / 4


def np_resize_bilinear(images, size):
    """Half-pixel centres: output i reads input (i + 0.5) * in / out - 0.5, clamped to the image."""
    _, in_h, in_w, _ = images.shape
    out = np.zeros((images.shape[0], *size, images.shape[3]), np.float64)
    for i in range(size[0]):
        sy = min(max((i + 0.5) * in_h / size[0] - 0.5, 0.0), in_h - 1.0)
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, in_h - 1), sy - y0
        for j in range(size[1]):
            sx = min(max((j + 0.5) * in_w / size[1] - 0.5, 0.0), in_w - 1.0)
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, in_w - 1), sx - x0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * images[:, y0, x0] + fx * images[:, y0, x1])
                            + fy * ((1 - fx) * images[:, y1, x0] + fx * images[:, y1, x1]))
    return out


def test_pyramid_levels_are_average_pools_finest_first():
    images = np.random.default_rng(0).random((2, 13, 16, 3), dtype=np.float32)
    pyramid = build_image_pyramid(images, 4)
    assert [tuple(level.shape) for level in pyramid] == [(2, 13, 16, 3), (2, 6, 8, 3), (2, 3, 4, 3),
                                                         (2, 1, 2, 3)]
    expected = images
    for level in pyramid:
        np.testing.assert_allclose(ops.convert_to_numpy(level), expected, atol=1e-6)
        expected = np_average_pool2x(expected)
    np.testing.assert_allclose(ops.convert_to_numpy(downsample2x_average(images)), np_average_pool2x(images),
                               atol=1e-6)


@pytest.mark.parametrize("levels", [0, -1, 2.0, True])
def test_pyramid_rejects_bad_levels(levels):
    with pytest.raises(EmzooError, match=r"Invalid value for argument `levels`. Expected a strictly "
                                         r"positive integer. Received: levels="):
        build_image_pyramid(np.zeros((1, 4, 4, 1), np.float32), levels)


@pytest.mark.parametrize("in_size, out_size", [((4, 5), (8, 10)), ((7, 3), (5, 11)), ((8, 8), (4, 4)),
                                               ((1, 3), (2, 6))])
def test_resize_bilinear_matches_half_pixel_reference(in_size, out_size):
    images = np.random.default_rng(1).random((2, *in_size, 2), dtype=np.float32)
    out = ops.convert_to_numpy(resize_bilinear(images, out_size))
    np.testing.assert_allclose(out, np_resize_bilinear(images, out_size), atol=1e-5)


def test_upsample2x_bilinear_and_nearest():
    images = np.random.default_rng(2).random((1, 3, 4, 2), dtype=np.float32)
    np.testing.assert_allclose(ops.convert_to_numpy(upsample2x_bilinear(images)),
                               np_resize_bilinear(images, (6, 8)), atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(upsample2x(images)), np_resize_bilinear(images, (6, 8)),
                               atol=1e-5)
    nearest = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
    np.testing.assert_allclose(ops.convert_to_numpy(upsample2x(images, "nearest")), nearest, atol=0)
    np.testing.assert_allclose(ops.convert_to_numpy(resize_nearest(images, (6, 8))), nearest, atol=0)


def test_resize_rejects_bad_arguments():
    images = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(EmzooError, match="Expected 'bilinear' or 'nearest'. Received: interpolation='cubic'"):
        upsample2x(images, "cubic")
    with pytest.raises(EmzooError, match=r"Expected a \(height, width\) pair. Received: size=\(4,\)"):
        resize_bilinear(images, (4,))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF-only: compares with tf.image.resize")
def test_resize_bilinear_equals_tf_image_resize():
    import tensorflow as tf

    images = np.random.default_rng(3).random((2, 9, 6, 3), dtype=np.float32)
    for size in [(18, 12), (5, 4), (9, 13)]:
        expected = tf.image.resize(images, size, method="bilinear", antialias=False).numpy()
        np.testing.assert_allclose(ops.convert_to_numpy(resize_bilinear(images, size)), expected, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF-only: dynamic shapes in tf.function")
def test_upsample2x_bilinear_with_dynamic_shapes():
    import tensorflow as tf

    fn = tf.function(upsample2x_bilinear, input_signature=[tf.TensorSpec((None, None, None, 2), tf.float32)])
    images = np.random.default_rng(4).random((1, 3, 5, 2), dtype=np.float32)
    np.testing.assert_allclose(fn(images).numpy(), np_resize_bilinear(images, (6, 10)), atol=1e-5)
