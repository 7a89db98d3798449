"""The original FILM TFRecord triplet format: read (for training here) and write.

One ``tf.train.Example`` per triplet, with the keys of FILM's ``training/data_lib.py``:

=====================  =======  ==============================================
``frame_{i}/encoded``  bytes    PNG or JPEG bytes of frame ``i`` (0, 1, 2)
``frame_{i}/format``   bytes    ``"png"`` or ``"jpg"``
``frame_{i}/height``   int64    image height
``frame_{i}/width``    int64    image width
``path``               bytes    where the middle frame came from (free text)
=====================  =======  ==============================================

``frame_0`` and ``frame_2`` are the inputs ``x0`` / ``x1``, **``frame_1`` is the target** ``y``;
``time`` is not stored (always 0.5). Sharded file sets use FILM's ``<prefix>@N`` syntax, which
stands for ``<prefix>-00000-of-0000N`` ... (see :func:`expand_pattern`), so FILM's Vimeo-90K shards
and ``emzoo prepare`` outputs train here unchanged, and our files feed FILM's own trainer.

Example:
    >>> ds = film_tfrecord_dataset("vimeo_triplets/train.tfrecord@200", crop=256, batch_size=8)  # doctest: +SKIP
    >>> write_film_tfrecord("mine.tfrecord", [(x0, y, x1)])                                     # doctest: +SKIP
"""

import glob
import os
import re
import uuid

import numpy as np
import tensorflow as tf

from emzoo.data import augment as augment_lib
from emzoo.errors import EmzooError, VolumeError, describe

FRAMES = ("frame_0", "frame_1", "frame_2")


def feature_spec():
    """The ``tf.io.parse_single_example`` spec of a FILM triplet record (defaults as FILM's)."""
    spec = {"path": tf.io.FixedLenFeature((), tf.string, default_value="")}
    for frame in FRAMES:
        spec[f"{frame}/encoded"] = tf.io.FixedLenFeature((), tf.string, default_value="")
        spec[f"{frame}/format"] = tf.io.FixedLenFeature((), tf.string, default_value="jpg")
        spec[f"{frame}/height"] = tf.io.FixedLenFeature((), tf.int64, default_value=0)
        spec[f"{frame}/width"] = tf.io.FixedLenFeature((), tf.int64, default_value=0)
    return spec


def expand_pattern(pattern):
    """Files of ``pattern``: FILM's ``prefix@N`` shards, a glob, a comma-separated list or a list.

    Example:
        >>> expand_pattern("data/train.tfrecord@2")
        ['data/train.tfrecord-00000-of-00002', 'data/train.tfrecord-00001-of-00002']
    """
    if isinstance(pattern, (list, tuple)):
        return [f for p in pattern for f in expand_pattern(p)]
    pattern = os.fspath(pattern)
    if "," in pattern:
        return [f for p in pattern.split(",") if p for f in expand_pattern(p)]
    sharded = re.fullmatch(r"(.+)@(\d+)", pattern)
    if sharded:
        prefix, count = sharded.group(1), int(sharded.group(2))
        return [f"{prefix}-{i:05d}-of-{count:05d}" for i in range(count)]
    if any(ch in pattern for ch in "*?["):
        return sorted(glob.glob(pattern))
    return [pattern]


def _check_files(pattern):
    files = expand_pattern(pattern)
    missing = [f for f in files if not os.path.isfile(f)]
    if not files or missing:
        raise FileNotFoundError(describe("TFRecord file(s) not found.",
                                         "existing files (prefix@N, a glob, or a list)",
                                         pattern=os.fspath(pattern) if not isinstance(pattern, (list, tuple))
                                         else list(pattern), missing=missing[:3]))
    return files


def _decode(encoded, channels):
    image = tf.io.decode_image(encoded, dtype=tf.float32, expand_animations=False)
    stored = tf.shape(image)[-1]
    if channels == 1:
        image = tf.cond(stored == 1, lambda: image, lambda: tf.reduce_mean(image[..., :3], -1, keepdims=True))
    else:
        image = tf.cond(stored == 1, lambda: tf.tile(image, [1, 1, 3]), lambda: image[..., :3])
    image.set_shape([None, None, channels])
    return image


def parse_film_example(serialized, channels=3):
    """One serialized record -> stacked frames ``(H, W, 3C)`` float32 ``[x0 | y | x1]`` and its path."""
    features = tf.io.parse_single_example(serialized, feature_spec())
    x0, y, x1 = (_decode(features[f"{frame}/encoded"], channels) for frame in ("frame_0", "frame_1", "frame_2"))
    return tf.concat([x0, y, x1], axis=-1), features["path"]


def film_tfrecord_dataset(pattern, crop=256, batch_size=8, channels=3, augment=True, seed=0, repeat=True,
                          shuffle=True, shuffle_buffer=1024, rotate_degrees=0.0):
    """FILM TFRecord triplets as ``({"x0", "x1", "time"}, y)`` batches, like :func:`triplet_dataset`.

    Args:
        pattern: ``prefix@N`` shards, a glob, a comma-separated string or a list of files.
        crop: joint random crop size (centre crop when ``augment`` and ``shuffle`` are both off);
            ``None`` keeps full frames (they must then share one size to be batched).
        batch_size: samples per batch (``drop_remainder``, as FILM).
        channels: 3 (as stored for Vimeo) or 1 (mean of RGB; grey records are read as is).
        augment: joint rot90, left-right flip and temporal reversal (:mod:`emzoo.data.augment`).
        seed: seeds shuffling, crops and augmentation (stateless, keyed by element / batch index).
        repeat: endless stream; ``False`` reads the files once.
        shuffle: interleave files in random order and shuffle examples with ``shuffle_buffer``.
        rotate_degrees: > 0 adds FILM's random rotation (p = 0.5, reflect fill).

    Example:
        >>> ds = film_tfrecord_dataset("train.tfrecord@1", crop=128, batch_size=4, channels=1)  # doctest: +SKIP
    """
    from emzoo.data.triplets import _check_channels, _to_inputs

    _check_channels(channels)
    files = _check_files(pattern)
    seed = int(seed)
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
        dataset = dataset.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    random_crop = crop is not None and (augment or shuffle)

    def load(index, serialized):
        frames, _ = parse_film_example(serialized, channels)
        if crop is None:
            return frames
        size = [int(crop), int(crop), 3 * channels]
        shape = tf.shape(frames)
        tf.debugging.assert_greater_equal(
            tf.minimum(shape[0], shape[1]), int(crop),
            message=f"The crop is larger than the TFRecord frames. Expected frames of at least {crop} x {crop}.")
        if random_crop:
            return tf.image.stateless_random_crop(frames, size, seed=tf.stack([tf.constant(seed, tf.int64), index]))
        top, left = (shape[0] - int(crop)) // 2, (shape[1] - int(crop)) // 2
        return frames[top:top + int(crop), left:left + int(crop)]

    dataset = dataset.enumerate().map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(int(batch_size), drop_remainder=True)
    crop_shape = [int(batch_size), int(crop), int(crop), 3 * channels] if crop is not None else None

    def finish(index, frames):
        if augment:
            def augment_numpy(batch, key):
                return augment_lib.augment_batch(batch, (seed, int(key)))

            shape = frames.shape
            frames = tf.numpy_function(augment_numpy, [frames, index], tf.float32, stateful=False)
            frames.set_shape(shape)
        if rotate_degrees and rotate_degrees > 0:
            frames = augment_lib.random_rotate(frames, tf.stack([tf.constant(seed, tf.int64), index]),
                                               float(rotate_degrees))
        if crop_shape is not None:
            frames.set_shape(crop_shape)
        return _to_inputs(frames, channels)

    dataset = dataset.enumerate().map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _encode(frame, image_format):
    frame = np.asarray(frame)
    if frame.dtype.kind == "f":
        if not np.isfinite(frame).all():
            raise VolumeError(describe("Frame contains NaN or Inf.", "finite values in [0, 1]", dtype=str(frame.dtype)))
        frame = np.rint(np.clip(frame, 0.0, 1.0) * 255.0).astype(np.uint8)
    if frame.dtype not in (np.uint8, np.uint16):
        raise VolumeError(describe("Unsupported frame dtype for a TFRecord.", "uint8, uint16 or float [0, 1]",
                                   dtype=str(frame.dtype)))
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 3):
        raise VolumeError(describe("Unsupported frame shape for a TFRecord.", "(H, W), (H, W, 1) or (H, W, 3)",
                                   shape=frame.shape))
    if image_format == "png":
        encoded = tf.io.encode_png(frame).numpy()
    else:
        if frame.dtype != np.uint8:
            raise VolumeError(describe("JPEG needs 8-bit frames.", "uint8 frames or format='png'",
                                       dtype=str(frame.dtype)))
        encoded = tf.io.encode_jpeg(frame, quality=95).numpy()
    return encoded, frame.shape[0], frame.shape[1]


def film_example(x0, y, x1, path="", image_format="png"):
    """A ``tf.train.Example`` in FILM's format: ``frame_0 = x0``, ``frame_1 = y``, ``frame_2 = x1``."""
    if image_format not in ("png", "jpg"):
        raise EmzooError(describe("Invalid value for argument `image_format`.", "'png' or 'jpg'",
                                  image_format=image_format))
    feature = {"path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(path).encode()]))}
    for name, frame in zip(FRAMES, (x0, y, x1)):
        encoded, height, width = _encode(frame, image_format)
        feature[f"{name}/encoded"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
        feature[f"{name}/format"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_format.encode()]))
        feature[f"{name}/height"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[height]))
        feature[f"{name}/width"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[width]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_film_tfrecord(path, triplets, image_format="png", overwrite=False):
    """Writes triplets to one TFRecord file in FILM's format; returns the number written.

    ``triplets`` yields ``(x0, y, x1)`` or ``(x0, y, x1, path)`` with frames ``(H, W)`` /
    ``(H, W, 1|3)`` as uint8, uint16 (PNG only) or float in ``[0, 1]`` (stored as uint8). The file is
    written under a temporary name and renamed when complete; an error leaves nothing behind.

    Example:
        >>> write_film_tfrecord("train.tfrecord-00000-of-00001", [(a, b, c, "z0012")])  # doctest: +SKIP
        1
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise VolumeError(describe("The output already exists.", "a new path, or overwrite=True", path=path))
    temp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.partial")
    count = 0
    try:
        with tf.io.TFRecordWriter(temp) as writer:
            for item in triplets:
                x0, y, x1 = item[:3]
                name = item[3] if len(item) > 3 else f"triplet_{count:06d}"
                writer.write(film_example(x0, y, x1, name, image_format).SerializeToString())
                count += 1
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
    return count


def read_film_tfrecord(pattern, channels=None):
    """Yields ``(x0, y, x1, path)`` NumPy float32 frames of every record, in file order (no crops).

    ``channels=None`` keeps what is stored (grey records give ``(H, W, 1)``).

    Example:
        >>> x0, y, x1, path = next(read_film_tfrecord("train.tfrecord@1"))   # doctest: +SKIP
    """
    for serialized in tf.data.TFRecordDataset(_check_files(pattern)):
        features = tf.io.parse_single_example(serialized, feature_spec())
        frames = []
        for frame in FRAMES:
            image = tf.io.decode_image(features[f"{frame}/encoded"], dtype=tf.float32, expand_animations=False)
            if channels == 1 and image.shape[-1] != 1:
                image = tf.reduce_mean(image[..., :3], -1, keepdims=True)
            elif channels == 3 and image.shape[-1] == 1:
                image = tf.tile(image, [1, 1, 3])
            frames.append(image.numpy())
        yield frames[0], frames[1], frames[2], features["path"].numpy().decode()


__all__ = ["FRAMES", "expand_pattern", "feature_spec", "film_example", "film_tfrecord_dataset",
           "parse_film_example", "read_film_tfrecord", "write_film_tfrecord"]
