"""backward_warp against a NumPy loop reference (FILM semantics, border clamp), gradients included."""

import numpy as np
import pytest

import keras
from keras import ops

from emzoo import testing
from emzoo.layers.warp import BackwardWarp, backward_warp


def np_backward_warp(image, flow):
    """Loop reference: out[b,y,x] = bilinear(image[b], y + dy, x + dx), positions clamped."""
    batch, height, width, _ = image.shape
    out = np.zeros(image.shape, np.float64)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                sy = min(max(y + flow[b, y, x, 1], 0.0), height - 1.0)
                sx = min(max(x + flow[b, y, x, 0], 0.0), width - 1.0)
                y0, x0 = int(np.floor(sy)), int(np.floor(sx))
                y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
                fy, fx = sy - y0, sx - x0
                out[b, y, x] = ((1 - fy) * (1 - fx) * image[b, y0, x0] + (1 - fy) * fx * image[b, y0, x1]
                                + fy * (1 - fx) * image[b, y1, x0] + fy * fx * image[b, y1, x1])
    return out


def test_zero_flow_is_identity():
    image = np.random.default_rng(0).random((2, 5, 7, 3), dtype=np.float32)
    out = ops.convert_to_numpy(backward_warp(image, np.zeros((2, 5, 7, 2), np.float32)))
    np.testing.assert_allclose(out, image, atol=1e-6)


def test_integer_shift_reads_the_neighbour_and_replicates_the_border():
    image = np.arange(24, dtype=np.float32).reshape(1, 4, 6, 1)
    flow = np.zeros((1, 4, 6, 2), np.float32)
    flow[..., 0] = 10.0  # far to the right: every pixel reads the last column
    out = ops.convert_to_numpy(backward_warp(image, flow))
    np.testing.assert_array_equal(out[0, :, :, 0], np.repeat(image[0, :, 5:, 0], 6, axis=1))
    flow[..., 0], flow[..., 1] = 0.0, -1.0  # read the row above; the first row stays
    out = ops.convert_to_numpy(backward_warp(image, flow))
    np.testing.assert_array_equal(out[0, 1:, :, 0], image[0, :-1, :, 0])
    np.testing.assert_array_equal(out[0, 0, :, 0], image[0, 0, :, 0])


def test_non_finite_flow_gives_nan_there_and_no_gather_error():
    """A diverged training step's NaN flow must show as NaN pixels (so the step is seen as bad),
    not fail the gather with an out-of-range index; an infinite flow clamps to the border."""
    image = np.arange(30, dtype=np.float32).reshape(1, 5, 6, 1)
    flow = np.zeros((1, 5, 6, 2), np.float32)
    flow[0, 1, 1, 0], flow[0, 2, 2, 1] = np.nan, np.inf
    out = ops.convert_to_numpy(backward_warp(image, flow))[0, :, :, 0]
    assert np.isnan(out[1, 1]) and np.isnan(out).sum() == 1
    assert out[2, 2] == image[0, 4, 2, 0]
    finite = np.ones_like(out, bool)
    finite[1, 1] = finite[2, 2] = False
    np.testing.assert_array_equal(out[finite], image[0, :, :, 0][finite])


@pytest.mark.parametrize("shape", [(2, 6, 9, 3), (1, 1, 5, 2), (1, 7, 1, 1)])
def test_random_flow_matches_numpy(shape):
    rng = np.random.default_rng(1)
    image = rng.random(shape, dtype=np.float32)
    flow = (rng.standard_normal((*shape[:3], 2)) * 3).astype(np.float32)
    out = ops.convert_to_numpy(backward_warp(image, flow))
    np.testing.assert_allclose(out, np_backward_warp(image, flow), atol=1e-4)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    image = rng.random((1, 5, 6, 2), dtype=np.float32)
    # Fractional parts away from 0 and 1 and positions inside the image: the warp is linear in
    # the flow inside one pixel cell, so central differences are exact up to rounding.
    flow = (rng.integers(-1, 2, (1, 5, 6, 2)) + rng.uniform(0.3, 0.7, (1, 5, 6, 2))).astype(np.float32)
    flow[:, 0, :, 1] = np.abs(flow[:, 0, :, 1])
    flow[:, -1, :, 1] = -np.abs(flow[:, -1, :, 1])
    flow[:, :, 0, 0] = np.abs(flow[:, :, 0, 0])
    flow[:, :, -1, 0] = -np.abs(flow[:, :, -1, 0])
    flow[:, 1:-1, 1:-1] = np.clip(flow[:, 1:-1, 1:-1], -0.7, 0.7)
    weights = rng.standard_normal((1, 5, 6, 2)).astype(np.float32)

    def loss(im, fl):
        return ops.sum(backward_warp(im, fl) * weights)

    grad_image, grad_flow = testing.gradients(loss, image, flow)
    eps = 1e-2
    numeric_flow = np.zeros_like(flow)
    for index in np.ndindex(flow.shape):
        plus, minus = flow.copy(), flow.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric_flow[index] = (np.sum(np_backward_warp(image, plus) * weights)
                               - np.sum(np_backward_warp(image, minus) * weights)) / (2 * eps)
    np.testing.assert_allclose(grad_flow, numeric_flow, atol=1e-3)
    # The warp is linear in the image: the gradient is the transposed warp of the weights.
    numeric_image = np.zeros_like(image)
    for index in np.ndindex(image.shape):
        basis = np.zeros_like(image)
        basis[index] = 1.0
        numeric_image[index] = np.sum(np_backward_warp(basis, flow) * weights)
    np.testing.assert_allclose(grad_image, numeric_image, atol=1e-4)


def test_layer_wrapper_and_config_round_trip():
    layer = BackwardWarp(name="warp")
    image = np.random.default_rng(3).random((1, 4, 4, 1), dtype=np.float32)
    flow = np.full((1, 4, 4, 2), 0.5, np.float32)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(image, flow)), np_backward_warp(image, flow),
                               atol=1e-5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, BackwardWarp) and clone.name == "warp"


def test_symbolic_call_in_functional_model():
    image = keras.Input((None, None, 3))
    flow = keras.Input((None, None, 2))
    model = keras.Model([image, flow], BackwardWarp()(image, flow))
    data = np.random.default_rng(4).random((2, 6, 5, 3), dtype=np.float32)
    flows = np.random.default_rng(5).standard_normal((2, 6, 5, 2)).astype(np.float32)
    np.testing.assert_allclose(model.predict([data, flows], verbose=0), np_backward_warp(data, flows),
                               atol=1e-4)
