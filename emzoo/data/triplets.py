"""tf.data pipelines of ``(z - g, z, z + g)`` triplets cut from EM volumes.

Elements are ``({"x0", "x1", "time"}, y)``: ``x0 = slice z - g``, ``x1 = slice z + g``, the target
``y = slice z``, all float32 ``(B, crop, crop, C)`` in ``[0, 1]`` (normalised by the dtype's range,
or by the volume's percentile window when a :class:`~emzoo.data.volumes.Volume` opened with
``percentiles=`` is passed), and ``time`` a ``(B, 1)`` tensor of 0.5. ``C = 1`` keeps grey levels,
``C = 3`` replicates them (FILM-compatible models).

**Sampling.** For every batch a gap ``g`` is drawn uniformly from the gaps that fit the split (so one
model learns x2, x4 and x8 steps equally), then a centre ``(volume, z)`` among all valid ones,
volumes weighted by their slice area, then a random crop position; augmentations (rot90, flip,
temporal reversal, optional small rotations; see :mod:`emzoo.data.augment`) are applied jointly.
Every random draw of batch ``i`` is keyed by ``(seed, i)``: the stream is identical whatever the
parallelism, and ``initial_batch=i`` restarts it exactly at batch ``i`` (exact resume).

**Split by z-range.** For each volume of depth ``D``, the last ``n_val = max(1, round(D *
val_fraction))`` slices form the validation range and the rest the training range. A triplet belongs
to a split only if all three of its slices lie inside that range, so no triplet straddles the
boundary and no validation slice is ever seen in training. Gaps too large for a range are skipped
there (the 30-slice ISBI stack has validation triplets for g = 1 and 2 only at ``val_fraction=0.2``).

**Throughput.** Volumes are loaded into memory once (raw dtype, when they total under
``max_memory_bytes``, else crops are read lazily from memory-mapped TIFF / HDF5); each batch is cut
in NumPy inside a parallel ``map`` (``AUTOTUNE``) and prefetched. ``benchmarks/bench_pipeline.py``
measures samples/s.

Example:
    >>> ds = triplet_dataset(["../shared/data/flyem_medulla_fibsem_10nm/volume.tif"],
    ...                      gaps=(1, 2, 4), crop=256, batch_size=8)           # doctest: +SKIP
    >>> inputs, y = next(iter(ds))                                             # doctest: +SKIP
    >>> inputs["x0"].shape, inputs["time"].shape, y.shape                      # doctest: +SKIP
    (TensorShape([8, 256, 256, 1]), TensorShape([8, 1]), TensorShape([8, 256, 256, 1]))
"""

import os

import numpy as np
import tensorflow as tf

from emzoo.data import augment as augment_lib
from emzoo.data.volumes import Volume, open_volume
from emzoo.errors import EmzooError, VolumeError, describe

SPLITS = ("train", "validation", "all")
_HISTOGRAM_BINS = 4096


def split_range(depth, split, val_fraction=0.2):
    """``(z_start, z_stop)`` of ``split`` in a volume of ``depth`` slices (see the module docstring).

    Example:
        >>> split_range(97, "train"), split_range(97, "validation"), split_range(97, "all")
        ((0, 78), (78, 97), (0, 97))
    """
    if split not in SPLITS:
        raise EmzooError(describe("Invalid value for argument `split`.", f"one of {', '.join(SPLITS)}",
                                  split=split))
    if not 0.0 <= float(val_fraction) < 1.0:
        raise EmzooError(describe("Invalid value for argument `val_fraction`.", "a number in [0, 1)",
                                  val_fraction=val_fraction))
    if split == "all":
        return 0, depth
    n_val = max(1, int(round(depth * val_fraction))) if val_fraction > 0 else 0
    boundary = depth - n_val
    return (0, boundary) if split == "train" else (boundary, depth)


def _check_gaps(gaps):
    if isinstance(gaps, (int, np.integer)):
        gaps = (gaps,)
    try:
        gaps = tuple(sorted({int(g) for g in gaps}))
    except (TypeError, ValueError) as error:
        raise EmzooError(describe("Invalid value for argument `gaps`.", "positive integers, e.g. (1, 2, 4)",
                                  gaps=gaps)) from error
    if not gaps or min(gaps) < 1:
        raise EmzooError(describe("Invalid value for argument `gaps`.", "positive integers, e.g. (1, 2, 4)",
                                  gaps=gaps))
    return gaps


def _as_sources(sources):
    if isinstance(sources, (str, os.PathLike, Volume, np.ndarray)):
        return [sources]
    sources = list(sources)
    if not sources:
        raise EmzooError(describe("No data sources were given.", "one or more volume paths", sources=sources))
    return sources


class TripletSampler:
    """The NumPy side of the pipelines: volumes, valid triplets per split, and batches of crops.

    ``sample_batch(index)`` returns stacked grey frames ``(B, crop, crop, 3)`` = ``[x0, y, x1]`` as
    float32 in ``[0, 1]``; it is a pure function of ``(seed, index)``.

    Example:
        >>> sampler = TripletSampler(["stack.tif"], gaps=(1, 2), crop=128, split="train")  # doctest: +SKIP
        >>> sampler.sample_batch(0, batch_size=4, seed=0).shape                           # doctest: +SKIP
        (4, 128, 128, 3)
    """

    def __init__(self, sources, gaps=(1, 2, 4), crop=256, split="train", val_fraction=0.2,
                 histogram_match=False, max_memory_bytes=4 * 2**30):
        self.gaps = _check_gaps(gaps)
        self.volumes = [open_volume(source) for source in _as_sources(sources)]
        self.names = [volume.path for volume in self.volumes]
        self.split = split
        self.ranges = [split_range(len(volume), split, val_fraction) for volume in self.volumes]
        self.crop = self._check_crop(crop)
        total = sum(int(np.prod(volume.shape)) * volume.dtype.itemsize for volume in self.volumes)
        # Raw arrays in memory (fast crops) or None (read crops through the lazy Volume).
        self.arrays = [None] * len(self.volumes)
        if total <= max_memory_bytes:
            for i, (volume, (z0, z1)) in enumerate(zip(self.volumes, self.ranges)):
                self.arrays[i] = (z0, np.ascontiguousarray(volume.read_range(z0, z1)))
        self.candidates = self._candidates()
        if not self.candidates:
            depths = {volume.path: len(volume) for volume in self.volumes}
            raise VolumeError(describe(f"No ({split}) triplet fits in the volumes for these gaps.",
                                       f"at least 2 * gap + 1 slices in the {split} z-range of a volume "
                                       f"(val_fraction={val_fraction})", gaps=self.gaps, slices=depths))
        self.count = sum(len(vol_ids) for vol_ids, _, _ in self.candidates.values())
        self._reference = self._histogram_reference(histogram_match)
        self._luts = {}

    def _check_crop(self, crop):
        if crop is None:
            shapes = {volume.shape[1:] for volume in self.volumes}
            if len(shapes) != 1:
                raise VolumeError(describe("Full slices of volumes of different sizes cannot be batched.",
                                           "a crop size", shapes=sorted(shapes)))
            return shapes.pop()
        try:
            crop = (int(crop), int(crop)) if np.ndim(crop) == 0 else tuple(int(c) for c in crop)
        except (TypeError, ValueError) as error:
            raise EmzooError(describe("Invalid value for argument `crop`.", "a positive integer", crop=crop)) from error
        if len(crop) != 2 or min(crop) < 1:
            raise EmzooError(describe("Invalid value for argument `crop`.", "a positive integer", crop=crop))
        for volume in self.volumes:
            if crop[0] > volume.shape[1] or crop[1] > volume.shape[2]:
                raise VolumeError(describe("The crop is larger than the volume's slices.",
                                           f"a crop of at most {volume.shape[1]} x {volume.shape[2]}",
                                           crop=crop[0] if crop[0] == crop[1] else crop, path=volume.path))
        return crop

    def _candidates(self):
        """{gap: (volume ids, centre z, probabilities)} of every triplet inside its split range."""
        out = {}
        for gap in self.gaps:
            vol_ids, centres, weights = [], [], []
            for i, (volume, (z0, z1)) in enumerate(zip(self.volumes, self.ranges)):
                zs = np.arange(z0 + gap, z1 - gap)
                vol_ids.append(np.full(len(zs), i))
                centres.append(zs)
                weights.append(np.full(len(zs), float(volume.shape[1] * volume.shape[2])))
            vol_ids, centres, weights = (np.concatenate(a) for a in (vol_ids, centres, weights))
            if len(centres):
                out[gap] = (vol_ids, centres, weights / weights.sum())
        return out

    def triplets(self):
        """Every valid triplet of the split, in order: a list of ``(volume index, z, gap)``."""
        return [(int(v), int(z), gap) for gap, (vol_ids, centres, _) in self.candidates.items()
                for v, z in zip(vol_ids, centres)]

    # ---- intensity -----------------------------------------------------------------------------

    def _histogram_reference(self, histogram_match):
        if histogram_match is None or histogram_match is False:
            return None
        if histogram_match is True:
            samples = []
            for volume, (z0, z1) in zip(self.volumes, self.ranges):
                for z in np.unique(np.linspace(z0, z1 - 1, min(8, z1 - z0)).round().astype(int)):
                    samples.append(volume.slice(int(z))[::4, ::4].ravel())
            return augment_lib.reference_quantiles(np.concatenate(samples))
        reference = histogram_match
        if isinstance(reference, (str, os.PathLike, Volume)):
            with_volume = open_volume(reference)
            picks = np.unique(np.linspace(0, len(with_volume) - 1, min(8, len(with_volume))).round().astype(int))
            reference = np.concatenate([with_volume.slice(int(z)).ravel() for z in picks])
        reference = np.asarray(reference)
        if reference.dtype.kind != "f":
            from emzoo.data.volumes import normalise

            reference = normalise(reference)
        return augment_lib.reference_quantiles(reference)

    def _slice_lut(self, vol_id, z):
        key = (vol_id, z)
        lut = self._luts.get(key)
        if lut is None:
            codes = augment_lib.quantise(self._frame(vol_id, z, 0, 0, *self.volumes[vol_id].shape[1:],
                                                     match=False), _HISTOGRAM_BINS)
            lut = augment_lib.histogram_lut(codes, _HISTOGRAM_BINS, self._reference)
            self._luts[key] = lut
        return lut

    def _frame(self, vol_id, z, y, x, height, width, match=True):
        stored = self.arrays[vol_id]
        volume = self.volumes[vol_id]
        if stored is not None:
            z0, array = stored
            raw = array[z - z0, y:y + height, x:x + width]
        else:
            raw = volume.read_crop(z, y, x, height, width)
        frame = volume.normalise_raw(raw)
        if match and self._reference is not None:
            frame = self._slice_lut(vol_id, z)[augment_lib.quantise(frame, _HISTOGRAM_BINS)]
        return frame

    # ---- batches -------------------------------------------------------------------------------

    def triplet_frames(self, vol_id, z, gap, y, x):
        """Stacked ``(crop_h, crop_w, 3)`` frames ``[z - gap, z, z + gap]`` at ``(y, x)``."""
        height, width = self.crop
        return np.stack([self._frame(vol_id, zz, y, x, height, width) for zz in (z - gap, z, z + gap)], axis=-1)

    def sample_batch(self, index, batch_size, seed=0, shuffle=True, augment=False):
        """Batch ``index`` of random triplets: float32 ``(batch_size, crop_h, crop_w, 3)``.

        With ``augment`` each sample gets the joint rot90 / flip / reversal of
        :func:`emzoo.data.augment.augment_triplet`, drawn from the same keyed stream.
        """
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index)])
        height, width = self.crop
        gaps = list(self.candidates)
        out = np.empty((batch_size, height, width, 3), np.float32)
        ordered = None if shuffle else self.triplets()
        for i in range(batch_size):
            if ordered is None:
                gap = gaps[rng.integers(len(gaps))]
                vol_ids, centres, probabilities = self.candidates[gap]
                pick = rng.choice(len(centres), p=probabilities)
                vol_id, z = int(vol_ids[pick]), int(centres[pick])
            else:
                vol_id, z, gap = ordered[(int(index) * batch_size + i) % len(ordered)]
            shape = self.volumes[vol_id].shape
            y = int(rng.integers(shape[1] - height + 1))
            x = int(rng.integers(shape[2] - width + 1))
            frames = self.triplet_frames(vol_id, z, gap, y, x)
            out[i] = augment_lib.augment_triplet(frames, rng) if augment else frames
        return out

    def close(self):
        for volume in self.volumes:
            volume.close()


def _to_inputs(frames, channels):
    """Stacked frames (B, H, W, 3k) -> ({"x0", "x1", "time"}, y) with C channels (grey replicated)."""
    x0, y, x1 = augment_lib.split_frames(frames)
    if channels == 3 and frames.shape[-1] == 3:
        x0, y, x1 = (tf.tile(t, [1, 1, 1, 3]) for t in (x0, y, x1))
    time = tf.fill([tf.shape(frames)[0], 1], tf.constant(0.5, tf.float32))
    return {"x0": x0, "x1": x1, "time": time}, y


def _check_channels(channels):
    if channels not in (1, 3):
        raise EmzooError(describe("Invalid value for argument `channels`.", "1 (grey) or 3 (replicated grey)",
                                  channels=channels))


def triplet_dataset(sources, gaps=(1, 2, 4), crop=256, batch_size=8, split="train", val_fraction=0.2,
                    augment=True, histogram_match=False, seed=0, channels=1, repeat=True, shuffle=True,
                    rotate_degrees=0.0, initial_batch=0, max_memory_bytes=4 * 2**30):
    """Random-crop triplet batches ``({"x0", "x1", "time"}, y)`` for training.

    Args:
        sources: a volume address (see :func:`emzoo.data.volumes.open_volume`), a ``Volume``, a
            ``(Z, Y, X)`` array, or a list of them.
        gaps: slice distances ``g`` of the triplets ``(z - g, z, z + g)``; one is drawn per sample.
        crop: square crop size (int) or ``(height, width)``; must fit in every volume.
        batch_size: samples per batch (every batch is full; the batch dimension is static).
        split: ``"train"``, ``"validation"`` or ``"all"`` (z-ranges, see the module docstring).
        val_fraction: fraction of each volume's slices (the last ones) held out for validation.
        augment: joint rot90, left-right flip and temporal reversal (swap x0 / x1).
        histogram_match: ``False``; ``True`` to match every slice's histogram to the pooled histogram
            of the sources; or a reference (array, path or Volume) to match to.
        seed: seeds every random draw; with ``initial_batch`` the stream is exactly reproducible.
        channels: 1 (grey) or 3 (grey replicated, for FILM-compatible models).
        repeat: endless stream (default); ``False`` stops after ``count // batch_size`` batches.
        shuffle: random triplets (default); ``False`` walks the triplets in order (random crops).
        rotate_degrees: > 0 adds FILM's random rotation (p = 0.5, uniform in +-degrees, reflect fill).
        initial_batch: index of the first batch (resume a run at its step count).
        max_memory_bytes: volumes totalling less are loaded into memory; larger ones are read lazily.

    Returns:
        A ``tf.data.Dataset``; the sampler is attached as ``dataset.sampler`` is not possible on
        datasets, so use :func:`count_triplets` for the number of triplets.

    Example:
        >>> ds = triplet_dataset("stack.tif", gaps=(1, 2), crop=128, batch_size=4)  # doctest: +SKIP
    """
    _check_channels(channels)
    if int(batch_size) < 1:
        raise EmzooError(describe("Invalid value for argument `batch_size`.", "a positive integer",
                                  batch_size=batch_size))
    batch_size = int(batch_size)
    sampler = TripletSampler(sources, gaps, crop, split, val_fraction, histogram_match, max_memory_bytes)
    height, width = sampler.crop
    if repeat:
        indices = tf.data.Dataset.range(int(initial_batch), np.iinfo(np.int64).max)
    else:
        indices = tf.data.Dataset.range(int(initial_batch), max(1, sampler.count // batch_size))
    seed = int(seed)

    def make_batch(index):
        return sampler.sample_batch(int(index), batch_size, seed, shuffle, augment=bool(augment))

    def load(index):
        frames = tf.numpy_function(make_batch, [index], tf.float32, stateful=False)
        frames.set_shape([batch_size, height, width, 3])
        if rotate_degrees and rotate_degrees > 0:
            frames = augment_lib.random_rotate(frames, tf.stack([tf.constant(seed, tf.int64), index]),
                                               float(rotate_degrees))
        return _to_inputs(frames, channels)

    dataset = indices.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def count_triplets(sources, gaps=(1, 2, 4), split="train", val_fraction=0.2):
    """Number of valid triplets of ``split`` (all gaps together).

    Example:
        >>> count_triplets("isbi.tif", gaps=(1,), split="validation")   # doctest: +SKIP
        4
    """
    sampler = TripletSampler(sources, gaps, crop=1, split=split, val_fraction=val_fraction, max_memory_bytes=0)
    try:
        return sampler.count
    finally:
        sampler.close()


def validation_triplets(sources, gaps=(1, 2, 4), crop=256, batch_size=8, split="validation", val_fraction=0.2,
                        channels=1, histogram_match=False):
    """Every triplet of ``split`` once, in a fixed order, centre-cropped (``crop=None``: full slices).

    No augmentation and no randomness: two calls give identical datasets, suited to
    ``model.evaluate`` and validation scores. The last batch may be smaller than ``batch_size``.
    The order is: for each gap (ascending), for each volume, for each centre z (ascending).

    Example:
        >>> scores = model.evaluate(validation_triplets("stack.tif", gaps=(1,), crop=256))  # doctest: +SKIP
    """
    _check_channels(channels)
    sampler = TripletSampler(sources, gaps, crop, split, val_fraction, histogram_match)
    height, width = sampler.crop
    triplets = np.asarray(sampler.triplets(), np.int64)

    def make_one(index):
        vol_id, z, gap = (int(v) for v in triplets[int(index)])
        shape = sampler.volumes[vol_id].shape
        y, x = (shape[1] - height) // 2, (shape[2] - width) // 2
        return sampler.triplet_frames(vol_id, z, gap, y, x).astype(np.float32)

    def load(index):
        frames = tf.numpy_function(make_one, [index], tf.float32, stateful=False)
        frames.set_shape([height, width, 3])
        return frames

    dataset = tf.data.Dataset.range(len(triplets)).map(load, num_parallel_calls=tf.data.AUTOTUNE,
                                                       deterministic=True)
    dataset = dataset.batch(int(batch_size)).map(lambda frames: _to_inputs(frames, channels))
    return dataset.prefetch(tf.data.AUTOTUNE)


__all__ = ["SPLITS", "TripletSampler", "count_triplets", "split_range", "triplet_dataset", "validation_triplets"]
