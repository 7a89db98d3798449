"""Image pyramids and resizing, in ``keras.ops``.

Conventions (FILM's, ``models/film_net/util.py``): a pyramid is a Python list of ``(B, H, W, C)``
tensors, **finest level first**; each coarser level is a 2x2 average pool with stride 2 and
"valid" padding of the previous one (odd sizes lose their last row/column). Bilinear resizing
uses half-pixel centres (``align_corners=False``) and no antialiasing, i.e. it equals
``tf.image.resize(..., "bilinear")`` and PyTorch's ``interpolate(..., align_corners=False)`` for
upsampling. Resizing is written with gathers so that it also works where sizes are only known at
run time (a SavedModel with ``None`` height and width).
"""

from keras import ops

from emzoo.errors import EmzooError, describe


def build_image_pyramid(images, levels):
    """Returns ``levels`` images, finest first, each a 2x2 average pool of the one before.

    Args:
        images: ``(B, H, W, C)`` tensor.
        levels: number of levels (>= 1); level 0 is ``images`` itself.

    Example:
        >>> import numpy as np
        >>> pyramid = build_image_pyramid(np.ones((1, 16, 16, 1), "float32"), 3)
        >>> [tuple(level.shape) for level in pyramid]
        [(1, 16, 16, 1), (1, 8, 8, 1), (1, 4, 4, 1)]
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise EmzooError(describe("Invalid value for argument `levels`.",
                                  "a strictly positive integer", levels=levels))
    pyramid = [ops.convert_to_tensor(images)]
    for _ in range(levels - 1):
        pyramid.append(downsample2x_average(pyramid[-1]))
    return pyramid


def downsample2x_average(images):
    """Halves height and width with a 2x2 average pool, stride 2, "valid" padding.

    Example:
        >>> import numpy as np
        >>> x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
        >>> np.asarray(downsample2x_average(x))[0, :, :, 0]
        array([[ 2.5,  4.5],
               [10.5, 12.5]], dtype=float32)
    """
    return ops.average_pool(images, pool_size=2, strides=2, padding="valid")


def resize_bilinear(images, size):
    """Bilinear resize of ``(B, H, W, C)`` images to ``size = (height, width)``.

    Half-pixel centres, no antialiasing: output pixel ``i`` reads the input at
    ``(i + 0.5) * in / out - 0.5``, clamped to the image.

    Example:
        >>> import numpy as np
        >>> tuple(resize_bilinear(np.zeros((2, 5, 7, 3), "float32"), (10, 14)).shape)
        (2, 10, 14, 3)
    """
    return _resize(images, size, "bilinear")


def resize_nearest(images, size):
    """Nearest-neighbour resize of ``(B, H, W, C)`` images to ``size = (height, width)``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[1.0, 2.0]], "float32").reshape(1, 1, 2, 1)
        >>> np.asarray(resize_nearest(x, (1, 4)))[0, 0, :, 0]
        array([1., 1., 2., 2.], dtype=float32)
    """
    return _resize(images, size, "nearest")


def upsample2x_bilinear(images):
    """Doubles height and width with :func:`resize_bilinear`.

    FILM upsamples flows this way (and multiplies them by 2, which is the caller's business).

    Example:
        >>> import numpy as np
        >>> tuple(upsample2x_bilinear(np.zeros((1, 3, 5, 2), "float32")).shape)
        (1, 6, 10, 2)
    """
    shape = ops.shape(images)
    return resize_bilinear(images, (shape[1] * 2, shape[2] * 2))


def upsample2x(images, interpolation="bilinear"):
    """Doubles height and width with ``interpolation`` ("bilinear" or "nearest").

    Example:
        >>> import numpy as np
        >>> tuple(upsample2x(np.zeros((1, 3, 5, 2), "float32"), "nearest").shape)
        (1, 6, 10, 2)
    """
    shape = ops.shape(images)
    return _resize(images, (shape[1] * 2, shape[2] * 2), interpolation)


def _resize(images, size, interpolation):
    if interpolation not in ("bilinear", "nearest"):
        raise EmzooError(describe("Invalid value for argument `interpolation`.",
                                  "'bilinear' or 'nearest'", interpolation=interpolation))
    if len(size) != 2:
        raise EmzooError(describe("Invalid value for argument `size`.",
                                  "a (height, width) pair", size=tuple(size)))
    images = ops.convert_to_tensor(images)
    dtype = images.dtype
    # Integer images are interpolated in float32 and cast back (truncating), like tf.image.resize.
    work = images if "float" in str(dtype) else ops.cast(images, "float32")
    # Separable: rows, then columns. Gathers along one axis work with sizes only known at run
    # time (SavedModel exports with None dimensions), where ``ops.image.resize`` refuses them.
    shape = ops.shape(work)
    work = _resize_axis(work, 1, shape[1], size[0], interpolation)
    work = _resize_axis(work, 2, shape[2], size[1], interpolation)
    return work if work.dtype == dtype else ops.cast(work, dtype)


def _resize_axis(images, axis, in_size, out_size, interpolation):
    """Resizes one axis with half-pixel centres: output i reads input (i + 0.5) * in / out - 0.5."""
    in_size_f = ops.cast(in_size, "float32")
    scale = in_size_f / ops.cast(out_size, "float32")
    centres = (ops.arange(0, out_size, dtype="float32") + 0.5) * scale
    last = ops.cast(in_size, "int32") - 1
    if interpolation == "nearest":
        index = ops.minimum(ops.cast(ops.floor(centres), "int32"), last)
        return ops.take(images, index, axis=axis)
    position = ops.clip(centres - 0.5, 0.0, in_size_f - 1.0)
    lower = ops.floor(position)
    fraction = ops.cast(position - lower, images.dtype)
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, last)
    fraction = ops.reshape(fraction, (-1, 1, 1) if axis == 1 else (-1, 1))  # broadcast over NHWC
    start = ops.take(images, lower, axis=axis)
    end = ops.take(images, upper, axis=axis)
    return start + (end - start) * fraction
