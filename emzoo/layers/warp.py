"""Backward warping of images by a dense flow field (FILM semantics), in ``keras.ops``.

Conventions (the same as FILM, ``models/film_net/util.py : warp``):

* ``image`` is ``(B, H, W, C)``, ``flow`` is ``(B, H, W, 2)`` with channels ``(dx, dy)``.
* ``out[b, y, x] = bilinear(image[b], y + flow[b, y, x, 1], x + flow[b, y, x, 0])``: every output
  pixel *reads* the input at a displaced position (backward warping).
* Sample positions are clamped to the image, so anything outside takes the nearest border pixel
  (border replication). This is what ``tfa.image.dense_image_warp`` does and so what FILM
  checkpoints were trained with.

The four bilinear corners are read with ONE gather on the flattened image, which is much faster
than four separate gathers and is differentiable with respect to both the image and the flow
under every Keras backend.
"""

import keras
from keras import ops


def _as_float(value, dtype="float32"):
    return ops.cast(value, dtype)


def backward_warp(image, flow):
    """Samples ``image`` at ``(y + dy, x + dx)`` with bilinear interpolation and border clamping.

    Args:
        image: ``(B, H, W, C)`` float tensor.
        flow: ``(B, H, W, 2)`` float tensor; channel 0 is the horizontal displacement ``dx``,
            channel 1 the vertical displacement ``dy``, in pixels.

    Returns:
        ``(B, H, W, C)`` tensor of ``image``'s dtype: the warped image.

    Example:
        >>> import numpy as np
        >>> image = np.arange(12, dtype="float32").reshape(1, 3, 4, 1)
        >>> flow = np.zeros((1, 3, 4, 2), "float32"); flow[..., 0] = 1.0   # read one pixel right
        >>> np.asarray(backward_warp(image, flow))[0, :, :, 0]
        array([[ 1.,  2.,  3.,  3.],
               [ 5.,  6.,  7.,  7.],
               [ 9., 10., 11., 11.]], dtype=float32)
    """
    image = ops.convert_to_tensor(image)
    flow = ops.convert_to_tensor(flow)
    dtype = image.dtype
    shape = ops.shape(image)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]

    # Coordinates in float32 even for float16 images: positions need more precision than pixels.
    flow = _as_float(flow)
    height_f = _as_float(height)
    width_f = _as_float(width)
    rows = ops.arange(0, height, dtype="float32")
    cols = ops.arange(0, width, dtype="float32")
    y = ops.clip(rows[None, :, None] + flow[..., 1], 0.0, height_f - 1.0)
    x = ops.clip(cols[None, None, :] + flow[..., 0], 0.0, width_f - 1.0)

    # The top-left corner stays at most at size-2 so that the bottom/right neighbour exists; the
    # last row/column is then reached with weight 1 (this keeps the gradient of interior points).
    y0 = ops.clip(ops.floor(y), 0.0, ops.maximum(height_f - 2.0, 0.0))
    x0 = ops.clip(ops.floor(x), 0.0, ops.maximum(width_f - 2.0, 0.0))
    wy = y - y0
    wx = x - x0

    height_i = ops.cast(height, "int32")
    width_i = ops.cast(width, "int32")
    # Clipped again as integers: a non-finite flow (a diverged training step) casts to INT_MIN;
    # its pixels then read row/column 0 with NaN weights, so the NaN shows instead of a failed
    # gather.
    y0_i = ops.clip(ops.cast(y0, "int32"), 0, ops.maximum(height_i - 2, 0))
    x0_i = ops.clip(ops.cast(x0, "int32"), 0, ops.maximum(width_i - 2, 0))
    y1_i = ops.minimum(y0_i + 1, height_i - 1)
    x1_i = ops.minimum(x0_i + 1, width_i - 1)

    base = (ops.arange(0, batch, dtype="int32") * (height_i * width_i))[:, None, None]
    top = base + y0_i * width_i
    bottom = base + y1_i * width_i
    corners = ops.stack([top + x0_i, top + x1_i, bottom + x0_i, bottom + x1_i], axis=0)

    flat = ops.reshape(image, (-1, channels))
    values = ops.take(flat, corners, axis=0)  # (4, B, H, W, C): one gather for all corners

    weights = ops.stack([(1.0 - wy) * (1.0 - wx), (1.0 - wy) * wx, wy * (1.0 - wx), wy * wx], axis=0)
    weights = ops.cast(weights, dtype)[..., None]
    return ops.sum(values * weights, axis=0)


@keras.saving.register_keras_serializable(package="emzoo")
class BackwardWarp(keras.layers.Layer):
    """Layer form of :func:`backward_warp`, called as ``layer(image, flow)``.

    Useful in functional models and SavedModel exports where a named layer reads better than a
    bare op. It has no weights.

    Example:
        >>> import numpy as np
        >>> warp = BackwardWarp()
        >>> image = np.random.rand(2, 8, 8, 3).astype("float32")
        >>> out = warp(image, np.zeros((2, 8, 8, 2), "float32"))
        >>> bool(np.allclose(np.asarray(out), image))
        True
    """

    def call(self, image, flow):
        return backward_warp(image, flow)

    def compute_output_shape(self, image_shape, flow_shape=None):
        return tuple(image_shape)
