"""cremi_triplet preparation: aligned, defect-filtered, histogram-specified triplet tiles.

The procedure of the EM interpolation papers (TSAIN / SSAN, em_networks.md section 4.2), for CREMI-style
HDF5 volumes (``sample_A.hdf:/volumes/raw``; a bare ``.hdf`` / ``.h5`` path means ``/volumes/raw``)
or any volume :func:`emzoo.data.volumes.open_volume` reads:

1. **Alignment**: each slice is registered to the previous one by template matching: a central
   template of slice ``z`` (the slice minus ``max_shift`` pixels on every side) is located in slice
   ``z - 1`` by normalised cross-correlation (computed with FFTs), giving an integer shift. Shifts
   are chained and every slice is cropped to the region common to all, so nothing is padded.
2. **Tiles**: ``size x size`` tiles at ``stride`` over the aligned slices, for the consecutive
   triplets ``(z - 1, z, z + 1)``.
3. **Defects and continuity**: a triplet tile is dropped when any of its three frames has more than
   ``max_blank_fraction`` of pixels at the dtype's extremes (blacked-out or saturated sections,
   fill from alignment) or almost no contrast (std < 0.01), or when the normalised
   cross-correlation between the middle frame and either neighbour, measured on 4 x 4 block means,
   is below ``min_ncc`` (a section that does not continue its neighbours: fold, misalignment,
   wrong order). For reference, adjacent 4 x 4 nm x 50 nm ISBI sections score about 0.3-0.4 on
   smoothed images and 10 nm FIB-SEM about 0.98, so the default 0.1 only rejects broken sections.
4. **Histogram specification** of every aligned slice to one reference histogram (the usable slice
   nearest the middle of the first volume, or ``reference``), so brightness drift between sections disappears.
5. **Split 3:1:1 by z-range** per volume (train / validation / test); a triplet belongs to a split
   only when its three slices lie in that range, so splits never share a section.
6. **Output**: ``OUT/{train,validation,test}.tfrecord-00000-of-00001`` in the original FILM format
   (use ``OUT/train.tfrecord@1``), or ``OUT/{split}.h5`` with a ``triplets`` dataset
   ``(N, 3, size, size)``; plus ``OUT/prepare_summary.json`` (counts, reasons for drops, shifts).
   Everything is written into a temporary folder renamed to ``OUT`` at the end.

Example:
    >>> summary = prepare_triplets(["sample_A.hdf", "sample_B.hdf"], "cremi_triplet")  # doctest: +SKIP
    >>> summary["counts"]                                                               # doctest: +SKIP
    {'train': 1596, 'validation': 508, 'test': 508}
"""

import json
import os
import shutil
import uuid

import numpy as np

from emzoo.data import augment as augment_lib
from emzoo.data.volumes import denormalise, open_volume, split_container_path
from emzoo.errors import EmzooError, VolumeError, describe

SPLIT_NAMES = ("train", "validation", "test")


# --------------------------------------------------------------------------------------------------
# Alignment


def _box_sum(image, height, width):
    """Sums of ``image`` over every ``height x width`` window (valid positions), via an integral image."""
    integral = np.pad(np.cumsum(np.cumsum(image, 0), 1), ((1, 0), (1, 0)))
    return (integral[height:, width:] - integral[:-height, width:] - integral[height:, :-width]
            + integral[:-height, :-width])


def normalised_cross_correlation_map(image, template):
    """NCC of ``template`` at every valid position of ``image`` (``TM_CCOEFF_NORMED``), via FFTs.

    Returns an array of shape ``image.shape - template.shape + 1``; 1 is a perfect match.

    Example:
        >>> img = np.random.default_rng(0).random((20, 20))
        >>> ncc = normalised_cross_correlation_map(img, img[5:15, 3:13])
        >>> tuple(int(i) for i in np.unravel_index(np.argmax(ncc), ncc.shape))
        (5, 3)
    """
    image = np.asarray(image, np.float64)
    template = np.asarray(template, np.float64)
    th, tw = template.shape
    zero_mean = template - template.mean()
    shape = (image.shape[0] + th - 1, image.shape[1] + tw - 1)
    spectrum = np.fft.rfft2(image, shape) * np.conj(np.fft.rfft2(zero_mean, shape))
    correlation = np.fft.irfft2(spectrum, shape)[:image.shape[0] - th + 1, :image.shape[1] - tw + 1]
    count = th * tw
    sums = _box_sum(image, th, tw)
    variance = _box_sum(image * image, th, tw) - sums * sums / count
    denominator = np.sqrt(np.maximum(variance, 0.0) * float((zero_mean ** 2).sum()))
    return np.where(denominator > 1e-9, correlation / np.maximum(denominator, 1e-12), 0.0)


def estimate_shift(reference, moving, max_shift=32):
    """Integer ``(dy, dx)`` such that ``moving[p] ~ reference[p + (dy, dx)]`` (|dy|, |dx| <= max_shift).

    The central template of ``moving`` (``max_shift`` pixels in from every side) is located in
    ``reference`` by normalised cross-correlation. Returns ``((dy, dx), peak_ncc)``.

    Example:
        >>> ref = np.random.default_rng(1).random((64, 64))
        >>> estimate_shift(ref, np.roll(ref, (3, -2), axis=(0, 1)), max_shift=8)[0]
        (-3, 2)
    """
    height, width = moving.shape
    max_shift = int(min(max_shift, height // 4, width // 4))
    template = moving[max_shift:height - max_shift, max_shift:width - max_shift]
    ncc = normalised_cross_correlation_map(reference, template)
    peak = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    return (int(peak[0]) - max_shift, int(peak[1]) - max_shift), float(ncc[peak])


def _downsample(image, factor):
    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:height, :width].reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3))


def align_offsets(volume, max_shift=32):
    """Chained offsets ``(Z, 2)``: slice ``z`` pixel ``p`` sits at ``p + offsets[z]`` in slice 0's frame.

    Also returns the per-pair peak NCC values (a low value flags a pair that did not match).
    """
    offsets = np.zeros((len(volume), 2), np.int64)
    peaks = [1.0]
    previous = volume.slice(0)
    for z in range(1, len(volume)):
        current = volume.slice(z)
        (dy, dx), peak = estimate_shift(previous, current, max_shift)
        offsets[z] = offsets[z - 1] + (dy, dx)
        peaks.append(peak)
        previous = current
    return offsets, np.asarray(peaks)


def common_region(offsets, shape):
    """``(y0, x0, height, width)`` of the region (in slice 0's frame) that every aligned slice covers."""
    low = offsets.max(axis=0)
    high = offsets.min(axis=0) + np.asarray(shape)
    size = high - low
    return int(low[0]), int(low[1]), int(size[0]), int(size[1])


def aligned_slice(volume, z, offsets, region):
    """Float ``[0, 1]`` slice ``z`` cropped to the common ``region`` (see :func:`common_region`)."""
    y0, x0, height, width = region
    top, left = y0 - int(offsets[z][0]), x0 - int(offsets[z][1])
    return volume.slice(z)[top:top + height, left:left + width]


# --------------------------------------------------------------------------------------------------
# Quality measures


def blank_fraction(raw, dtype):
    """Fraction of pixels at the dtype's extremes (0 or max; for float data <= 0 or >= 1)."""
    raw = np.asarray(raw)
    top = 1.0 if np.dtype(dtype).kind == "f" else np.iinfo(dtype).max
    return float(np.mean((raw <= 0) | (raw >= top)))


def continuity_ncc(a, b, block=4):
    """NCC of two frames after ``block x block`` averaging (robust to noise; 1 = identical)."""
    a, b = _downsample(np.asarray(a, np.float64), block), _downsample(np.asarray(b, np.float64), block)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 1e-12 else 0.0


# --------------------------------------------------------------------------------------------------
# The whole procedure


def _parse_split(split):
    try:
        parts = [float(v) for v in (split.split(",") if isinstance(split, str) else split)]
    except (TypeError, ValueError) as error:
        raise EmzooError(describe("Invalid value for argument `split`.", "three weights like 3,1,1",
                                  split=split)) from error
    if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
        raise EmzooError(describe("Invalid value for argument `split`.", "three weights like 3,1,1", split=split))
    return np.asarray(parts) / sum(parts)


def split_of_slices(depth, weights):
    """Split name per slice index: consecutive z-ranges in proportions ``weights`` (train, val, test)."""
    bounds = np.round(np.cumsum(weights) * depth).astype(int)
    names = np.empty(depth, object)
    start = 0
    for name, stop in zip(SPLIT_NAMES, bounds):
        names[start:stop] = name
        start = stop
    return names


class _Sink:
    """Collects triplets of one split into a FILM TFRecord or an HDF5 file inside the temp folder."""

    def __init__(self, folder, split, fmt, size, dtype):
        self.count = 0
        self.fmt = fmt
        if fmt == "tfrecord":
            import tensorflow as tf

            from emzoo.data import tfrecord

            self._tfrecord = tfrecord
            self.path = os.path.join(folder, f"{split}.tfrecord-00000-of-00001")
            self._writer = tf.io.TFRecordWriter(self.path)
        else:
            import h5py

            self.path = os.path.join(folder, f"{split}.h5")
            self._file = h5py.File(self.path, "w")
            self._data = self._file.create_dataset("triplets", shape=(0, 3, size, size), maxshape=(None, 3, size, size),
                                                   dtype=dtype, chunks=(1, 3, size, size))
            self._names = []

    def add(self, frames, name):
        if self.fmt == "tfrecord":
            self._writer.write(self._tfrecord.film_example(*frames, path=name).SerializeToString())
        else:
            self._data.resize(self.count + 1, axis=0)
            self._data[self.count] = np.stack(frames)
            self._names.append(name)
        self.count += 1

    def close(self):
        if self.fmt == "tfrecord":
            self._writer.close()
        else:
            self._file.create_dataset("names", data=np.asarray(self._names, dtype=object),
                                      dtype=__import__("h5py").string_dtype())
            self._file.attrs["frames"] = "x0 (z-1), y (z, target), x1 (z+1)"
            self._file.close()


def _open_input(path):
    if isinstance(path, (str, os.PathLike)):
        file, dataset = split_container_path(path)
        if dataset is None and file.lower().endswith((".h5", ".hdf5", ".hdf", ".he5")):
            return open_volume(file, dataset="/volumes/raw")
    return open_volume(path)


def prepare_triplets(inputs, output, format="tfrecord", size=512, stride=512, split=(3, 1, 1),  # noqa: A002
                     max_shift=32, min_ncc=0.1, max_blank_fraction=0.05, histogram=True, reference=None,
                     overwrite=False, progress=None):
    """Runs the whole cremi_triplet procedure (see the module docstring); returns the summary dict.

    Args:
        inputs: volume addresses (or Volumes); bare HDF5 files mean ``/volumes/raw``.
        output: folder to create (refused when it exists unless ``overwrite``).
        format: ``"tfrecord"`` (FILM format) or ``"hdf5"``.
        size, stride: tile size and stride in pixels.
        split: train / validation / test weights (3:1:1) over each volume's z-range.
        max_shift: largest shift searched between consecutive slices.
        min_ncc: drop triplets whose middle frame correlates less than this with a neighbour.
        max_blank_fraction: drop triplets with more than this fraction of extreme-valued pixels.
        histogram: histogram-specify every slice to ``reference`` (default: middle slice of input 1).
        progress: optional callable ``progress(message)``.
    """
    if format not in ("tfrecord", "hdf5"):
        raise EmzooError(describe("Invalid value for argument `format`.", "'tfrecord' or 'hdf5'", format=format))
    size, stride = int(size), int(stride)
    if size < 8 or stride < 1:
        raise EmzooError(describe("Invalid tile geometry.", "size >= 8 and stride >= 1", size=size, stride=stride))
    weights = _parse_split(split)
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not inputs:
        raise EmzooError(describe("No inputs were given.", "one or more volumes", inputs=inputs))
    output = os.path.abspath(os.fspath(output))
    if os.path.exists(output) and not overwrite:
        raise VolumeError(describe("The output already exists.", "a new folder, or overwrite=True (--overwrite)",
                                   output=output))
    volumes = [_open_input(path) for path in inputs]
    for volume in volumes:
        if len(volume) < 3:
            raise VolumeError(describe("Too few slices for a triplet.", "at least 3 slices", slices=len(volume),
                                       path=volume.path))
    say = progress or (lambda message: None)
    parent = os.path.dirname(output)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"The output's parent folder does not exist. Expected an existing folder. "
                                f"Received: folder={parent!r}")
    temp = os.path.join(parent, f".{os.path.basename(output)}.{uuid.uuid4().hex[:8]}.partial")
    os.mkdir(temp)
    sinks = {}
    try:
        out_dtype = volumes[0].dtype if volumes[0].dtype != np.float32 else np.dtype(np.uint16)
        sinks = {name: _Sink(temp, name, format, size, out_dtype) for name in SPLIT_NAMES}
        summary = {"inputs": [], "size": size, "stride": stride, "format": format, "split": list(weights),
                   "min_ncc": min_ncc, "max_blank_fraction": max_blank_fraction, "histogram": bool(histogram),
                   "dropped": {"blank_or_flat": 0, "weak_continuity": 0}}
        ref_quantiles = None
        for index, volume in enumerate(volumes):
            say(f"aligning {volume.path} ({len(volume)} slices)")
            offsets, peaks = align_offsets(volume, max_shift)
            region = common_region(offsets, volume.shape[1:])
            if region[2] < size or region[3] < size:
                raise VolumeError(describe("The aligned common region is smaller than one tile.",
                                           f"at least {size} x {size} pixels after alignment",
                                           region=region[2:], path=volume.path))
            if histogram and ref_quantiles is None:
                if reference is not None:
                    ref_volume = _open_input(reference)
                    ref_quantiles = augment_lib.reference_quantiles(ref_volume.slice(len(ref_volume) // 2))
                else:  # the usable slice nearest the middle (a blank reference would blank everything)
                    order = sorted(range(len(volume)), key=lambda z: abs(z - len(volume) // 2))
                    for z in order:
                        candidate = aligned_slice(volume, z, offsets, region)
                        if blank_fraction(candidate, np.float32) <= max_blank_fraction and candidate.std() >= 0.01:
                            break
                    ref_quantiles = augment_lib.reference_quantiles(candidate)
            names = split_of_slices(len(volume), weights)
            positions = [(y, x) for y in range(0, region[2] - size + 1, stride)
                         for x in range(0, region[3] - size + 1, stride)]
            window = []  # the last three processed slices: (z, raw-dtype slice)
            kept = dict.fromkeys(SPLIT_NAMES, 0)
            for z in range(len(volume)):
                raw = volume.read(z)
                top, left = region[0] - int(offsets[z][0]), region[1] - int(offsets[z][1])
                raw = raw[top:top + region[2], left:left + region[3]]
                image = volume.normalise_raw(raw)
                if histogram:
                    image = augment_lib.match_histogram(image, ref_quantiles)
                window = (window + [(z, raw, denormalise(image, out_dtype))])[-3:]
                if len(window) < 3 or len({names[w[0]] for w in window}) != 1:
                    continue
                split_name = names[window[1][0]]
                for y, x in positions:
                    tiles = [w[2][y:y + size, x:x + size] for w in window]
                    raws = [w[1][y:y + size, x:x + size] for w in window]
                    floats = [volume.normalise_raw(r) for r in raws]
                    if any(blank_fraction(f, np.float32) > max_blank_fraction or f.std() < 0.01
                           for r, f in zip(raws, floats)):
                        summary["dropped"]["blank_or_flat"] += 1
                        continue
                    if min(continuity_ncc(floats[0], floats[1]), continuity_ncc(floats[1], floats[2])) < min_ncc:
                        summary["dropped"]["weak_continuity"] += 1
                        continue
                    sinks[split_name].add(tiles, f"{os.path.basename(volume.path)}:z{window[1][0]}:y{y}:x{x}")
                    kept[split_name] += 1
            summary["inputs"].append({"path": volume.path, "shape": list(volume.shape),
                                      "voxel_size_nm": list(volume.voxel_size) if volume.voxel_size else None,
                                      "shifts": offsets.tolist(), "alignment_ncc_min": float(peaks[1:].min()),
                                      "common_region": list(region), "kept": kept})
            say(f"  kept {kept}")
        for sink in sinks.values():
            sink.close()
        summary["counts"] = {name: sink.count for name, sink in sinks.items()}
        summary["files"] = {name: os.path.join(output, os.path.basename(sink.path)) for name, sink in sinks.items()}
        with open(os.path.join(temp, "prepare_summary.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=1)
        if os.path.exists(output):
            shutil.rmtree(output) if os.path.isdir(output) else os.remove(output)
        os.replace(temp, output)
        return summary
    except BaseException:
        for sink in sinks.values():
            try:
                sink.close()
            except Exception:
                pass
        shutil.rmtree(temp, ignore_errors=True)
        raise
    finally:
        for volume in volumes:
            volume.close()


__all__ = ["align_offsets", "aligned_slice", "blank_fraction", "common_region", "continuity_ncc", "estimate_shift",
           "normalised_cross_correlation_map", "prepare_triplets", "split_of_slices"]
