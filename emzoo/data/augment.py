"""Joint triplet augmentations and histogram specification.

Augmentations work on **stacked frames** ``(H, W, 3 * C)`` (or batches of them) whose channel groups are
``[x0 | y | x1]``: stacking is what makes them joint, since every geometric transform is applied
to the stack once, so the two inputs and the target always move together. They follow FILM's list
(``augmentation_lib.py``: rot90, left-right flip, rotation, temporal reversal) with two changes
that suit EM:

* every random draw is keyed by ``seed`` (ints, e.g. ``(seed, batch_index)``), so a pipeline can
  be replayed exactly from any batch (exact resume of training);
* small rotations use reflection padding instead of FILM's black corners.

Temporal reversal swaps ``x0`` and ``x1``: for a midpoint target the triplet stays valid.

Histogram specification (:func:`match_histogram`, :func:`histogram_lut`) maps grey levels so an
image's cumulative histogram follows a reference one; it is used by the pipelines' optional
``histogram_match`` and by ``emzoo prepare``.

Example:
    >>> stacked = np.concatenate([x0, y, x1], axis=-1)          # (B, H, W, 3C)   # doctest: +SKIP
    >>> out = augment_batch(stacked, seed=(0, 17))                                # doctest: +SKIP
"""

import math

import numpy as np

# --------------------------------------------------------------------------------------------------
# Joint augmentations of stacked frames (..., H, W, 3C), channel groups [x0 | y | x1]
#
# rot90, flip and reversal are done in NumPy on views while each sample is copied into its batch,
# so they cost nothing next to the copy (the equivalent TF ops cost far more per batch).


def augment_triplet(frames, rng, rot90=True, flip=True, reverse=True):
    """One sample's joint rot90 / left-right flip / temporal reversal, drawn from ``rng``.

    ``frames`` is ``(H, W, 3C)`` stacked ``[x0 | y | x1]``; returns a (possibly strided) view. Order as
    in FILM: rot90 (k uniform in {0, 1, 2, 3}; {0, 2} for non-square frames), flip (p = 0.5),
    reverse (swap x0 and x1, p = 0.5). Three draws are always made so the random stream does not
    depend on which augmentations are enabled.

    Example:
        >>> frames = np.arange(2 * 2 * 3).reshape(2, 2, 3)
        >>> out = augment_triplet(frames, np.random.default_rng(0))
        >>> sorted(out[..., 1].ravel().tolist()) == sorted(frames[..., 1].ravel().tolist())
        True
    """
    square = frames.shape[0] == frames.shape[1]
    k = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    do_flip = rng.random() < 0.5
    do_reverse = rng.random() < 0.5
    if rot90 and k:
        frames = np.rot90(frames, k, axes=(0, 1))
    if flip and do_flip:
        frames = frames[:, ::-1]
    if reverse and do_reverse:
        group = frames.shape[-1] // 3
        frames = np.concatenate([frames[..., 2 * group:], frames[..., group:2 * group], frames[..., :group]],
                                axis=-1)
    return frames


def augment_batch(frames, seed, rot90=True, flip=True, reverse=True):
    """:func:`augment_triplet` on every sample of ``(B, H, W, 3C)``; draws keyed by ``seed`` (ints).

    Example:
        >>> batch = np.random.rand(4, 8, 8, 3).astype(np.float32)
        >>> np.array_equal(augment_batch(batch, (0, 5)), augment_batch(batch, (0, 5)))
        True
    """
    rng = np.random.default_rng([int(s) & 0xFFFFFFFF for s in np.ravel(seed)])
    out = np.empty_like(frames)
    for i in range(frames.shape[0]):
        out[i] = augment_triplet(frames[i], rng, rot90, flip, reverse)
    return out


def split_frames(frames):
    """Splits stacked ``(..., 3C)`` tensors into ``(x0, y, x1)`` (TensorFlow)."""
    import tensorflow as tf

    return tuple(tf.split(frames, 3, axis=-1))


def random_rotate(frames, seed, max_degrees=10.0, probability=0.5):
    """TensorFlow: with ``probability``, rotates each sample of ``(B, H, W, 3C)`` by an angle uniform in
    ``[-max_degrees, max_degrees]`` (bilinear; reflection at the borders instead of FILM's black corners).

    ``seed`` is a stateless seed (two ints); the same seed gives the same rotation.

    Example:
        >>> out = random_rotate(tf.zeros([2, 8, 8, 3]), seed=(0, 1), max_degrees=10)  # doctest: +SKIP
    """
    import tensorflow as tf

    batch = tf.shape(frames)[0]
    seed = tf.reshape(tf.cast(tf.convert_to_tensor(seed), tf.int64), [-1])[:2]
    seed_angle, seed_apply = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    limit = float(max_degrees) * math.pi / 180.0
    angles = tf.random.stateless_uniform([batch], seed_angle, -limit, limit)
    apply = tf.random.stateless_uniform([batch], seed_apply) < probability
    angles = tf.where(apply, angles, tf.zeros_like(angles))
    height = tf.cast(tf.shape(frames)[1], tf.float32)
    width = tf.cast(tf.shape(frames)[2], tf.float32)
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    cos, sin = tf.cos(angles), tf.sin(angles)
    # Output pixel (x, y) samples input (cos*(x-cx) - sin*(y-cy) + cx, sin*(x-cx) + cos*(y-cy) + cy).
    zeros = tf.zeros_like(angles)
    transforms = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                           sin, cos, cy - sin * cx - cos * cy, zeros, zeros], axis=1)
    rotated = tf.raw_ops.ImageProjectiveTransformV3(
        images=frames, transforms=transforms, output_shape=tf.shape(frames)[1:3],
        fill_value=tf.constant(0.0, frames.dtype), interpolation="BILINEAR", fill_mode="REFLECT")
    rotated.set_shape(frames.shape)
    return rotated


# --------------------------------------------------------------------------------------------------
# Histogram specification (NumPy)


def reference_quantiles(images, levels=256):
    """Quantiles ``(levels,)`` of the grey values of ``images`` (float [0, 1]): a target histogram.

    Example:
        >>> reference_quantiles(np.linspace(0, 1, 11), levels=3).tolist()
        [0.0, 0.5, 1.0]
    """
    values = np.asarray(images, np.float32).ravel()
    return np.quantile(values, np.linspace(0.0, 1.0, levels)).astype(np.float32)


def histogram_lut(codes, bins, reference):
    """Look-up table ``(bins,)`` mapping integer grey codes of one image to matched float values.

    ``codes`` are the image's values as integers in ``[0, bins)`` (uint8 values, or quantised
    floats); ``reference`` are target quantiles from :func:`reference_quantiles`. Each code goes to
    the reference quantile at the middle of its cumulative-histogram step (classic histogram
    specification, exact for discrete data).
    """
    counts = np.bincount(np.asarray(codes).ravel(), minlength=bins).astype(np.float64)
    cdf = np.cumsum(counts)
    total = max(cdf[-1], 1.0)
    middle = (cdf - counts / 2.0) / total
    grid = np.linspace(0.0, 1.0, len(reference))
    return np.interp(middle, grid, reference).astype(np.float32)


def quantise(image01, bins):
    """Float ``[0, 1]`` values to integer codes in ``[0, bins)``."""
    return np.clip(np.rint(np.asarray(image01, np.float32) * (bins - 1)), 0, bins - 1).astype(np.int32)


def match_histogram(image01, reference, bins=4096):
    """Histogram specification of a float ``[0, 1]`` image to ``reference`` quantiles.

    Example:
        >>> ref = reference_quantiles(np.linspace(0.2, 0.4, 100))
        >>> out = match_histogram(np.linspace(0, 1, 100), ref)
        >>> round(float(out.min()), 2), round(float(out.max()), 2)
        (0.2, 0.4)
    """
    codes = quantise(image01, bins)
    return histogram_lut(codes, bins, reference)[codes]


__all__ = ["augment_batch", "augment_triplet", "histogram_lut", "match_histogram", "quantise", "random_rotate",
           "reference_quantiles", "split_frames"]
