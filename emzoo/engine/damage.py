"""Damage in real sections: found from the stack's own statistics, repaired only where it is.

Serial sections suffer whole-slice defects (a blank or missing section, a section imaged twice, a
section whose brightness, contrast or content breaks from both neighbours) and partial ones (a
fold's dark band, a tear, a stain or charging blob, a noisy patch, a region shifted out of place)
that spoil part of a slice while the rest is good.

:func:`find_damage` reads the stack slice by slice (twice: once for whole-slice statistics, once
for the regions) and compares every slice with its nearest good neighbours. Nothing is judged by
an absolute number: each measure is turned into a robust score against the same measure over the
whole stack (its median and its median absolute deviation, MAD), so a FIB-SEM stack (neighbours
10 nm apart, nearly equal) and an ssTEM stack (50 nm sections, neighbours differ much more) are
judged by the same defaults. Regions are found on a working grid of at most about 256 pixels a
side (block means), so the cost per slice does not grow with the slice.

:func:`repair_masked` replaces only the masked pixels (non-zero in a mask volume of the same shape)
with the interpolation from the nearest good slices at that place, with the same recursive
midpoints :func:`~emzoo.engine.repair_volume` uses for runs of damaged slices, blended into the
intact surroundings over a band of a few pixels outside the mask. Every pixel farther than
``band`` pixels from the mask is copied byte for byte.

Example:
    >>> report = find_damage("stack.tif")                                    # doctest: +SKIP
    >>> [(f["slice"], f["kind"]) for f in report.findings]                  # doctest: +SKIP
    [(12, 'blank'), (40, 'dark')]
    >>> fixed = repair_masked("stack.tif", report.mask, "default")["array"]  # doctest: +SKIP
"""

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from emzoo.engine.memory import release_freed_memory
from emzoo.engine.midpoint import MidpointEngine, resolve_model
from emzoo.engine.positions import repair_positions
from emzoo.engine.progress import Progress
from emzoo.engine.sources import (check_output, check_output_size, check_volume, open_source,
                                  source_voxel_size)
from emzoo import errors
from emzoo.errors import EmzooError, VolumeError, describe

#: Mask label of each kind of damage (0 is intact). Whole-slice kinds first, then partial ones.
KINDS = {"blank": 1, "duplicate": 2, "intensity": 3, "content": 4,
         "dark": 5, "bright": 6, "texture": 7, "mismatch": 8}
WHOLE_SLICE_KINDS = ("blank", "duplicate", "intensity", "content")

_WORKING_SIDE = 256  # the working grid's longest side, about (block means of the full slice)
_SMOOTHING = 7.0  # working-grid pixels: damage of 5 % of a slice is far wider
_FINE_SMOOTHING = 1.5  # working-grid pixels: the extent of a region found at the coarse scale
_WHOLE_DEVIATIONS = 8.0  # robust deviations of the stack's neighbour measures: a whole-slice break
_REGION_LEVELS = 3.5  # times the stack's 99th-percentile level of a region score: a region's seeds
_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


@dataclass
class DamageReport:
    """What :func:`find_damage` found.

    Attributes:
        findings: one dict per damaged slice or region, JSON-serialisable: ``slice`` (0-based),
            ``kind`` (a key of :data:`KINDS`), ``label`` (its value in the mask), ``bbox``
            ``[y0, x0, y1, x1]`` (full-resolution pixels, end exclusive), ``fraction`` (of the
            slice's area) and ``score`` (how many robust deviations from the stack's normal).
        shape: the volume's (Z, Y, X).
        mask: the uint8 mask volume (Z, Y, X), one label per kind, or ``None`` when it was written
            to ``mask_path`` instead.
        mask_path: where the mask volume was written, or ``None``.
        thresholds: the stack's own statistics the decisions used (for the record).
    """

    findings: list
    shape: tuple
    mask: object = None
    mask_path: str = None
    thresholds: dict = field(default_factory=dict)

    @property
    def damaged_slices(self):
        """Sorted indices of the slices with any finding."""
        return sorted({f["slice"] for f in self.findings})

    def to_dict(self):
        """The report without the mask array (JSON-serialisable)."""
        return {"shape": list(self.shape), "kinds": dict(KINDS), "findings": self.findings,
                "damaged_slices": self.damaged_slices, "mask_path": self.mask_path,
                "thresholds": self.thresholds}

    def save(self, path):
        """Writes :meth:`to_dict` as JSON to ``path`` (temporary name, then renamed)."""
        path = os.fspath(path)
        temp = f"{path}.partial"
        with open(temp, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=1)
        os.replace(temp, path)
        return path


# --------------------------------------------------------------------------------- statistics
def _robust(values, floor):
    """(median, sigma) of ``values``: sigma from the MAD, never below ``floor``."""
    values = np.asarray([v for v in values if np.isfinite(v)], np.float64)
    if values.size == 0:
        return 0.0, floor
    median = float(np.median(values))
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
    return median, max(sigma, floor)


def _working_factor(shape):
    return max(1, int(round(max(shape) / _WORKING_SIDE)))


def _block_mean(image, factor):
    """``image`` reduced by block means of ``factor`` x ``factor`` (the edge remainder dropped)."""
    if factor == 1:
        return np.asarray(image, np.float32)
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = np.asarray(image[:h, :w], np.float32).reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3))


def _content_distance(a, b):
    """1 - normalised cross-correlation: 0 for equal content whatever its brightness or contrast."""
    a = a - a.mean()
    b = b - b.mean()
    norm = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return 1.0 if norm == 0 else 1.0 - float((a * b).sum()) / norm


# ----------------------------------------------------------------------------- whole slices
def _whole_slice_statistics(source, factor, tick=lambda: None):
    """Per-slice measures on the working grid, read slice by slice (three in memory at once)."""
    depth = source.shape[0]
    mean, std = np.zeros(depth), np.zeros(depth)
    step = np.full(depth, np.nan)  # mean |z - (z-1)|, full resolution
    content = np.full(depth, np.nan)  # content distance of z and z - 1
    skip = np.full(depth, np.nan)  # content distance of z - 1 and z + 1
    window = []
    for z in range(depth):
        tick()
        full = source.slice(z)
        small = _block_mean(full, factor)
        mean[z], std[z] = float(small.mean()), float(small.std())
        if window:
            step[z] = float(np.abs(full - window[-1][0]).mean())
            content[z] = _content_distance(small, window[-1][1])
        if len(window) == 2:
            skip[z - 1] = _content_distance(window[0][1], small)
        window = (window + [(full, small)])[-2:]
    return mean, std, step, content, skip


def _whole_slice_findings(stats, shape, sensitivity):
    """``{z: (kind, score)}`` for the whole-slice defects, and the thresholds used."""
    mean, std, step, content, skip = stats
    depth = shape[0]
    found, thresholds = {}, {}
    # blank: no contrast left compared with the stack's usual slice
    std_median = float(np.median(std))
    for z in np.flatnonzero(std <= 0.1 * std_median + 1e-6):
        found[int(z)] = ("blank", float(std_median / max(std[z], 1e-9)))
    thresholds["blank_std"] = 0.1 * std_median
    # duplicate: equal to a neighbour, where real neighbours differ by the stack's usual step
    step_median = float(np.nanmedian(step)) if depth > 1 else 0.0
    thresholds["duplicate_step"] = 0.05 * step_median
    for z in range(1, depth):
        if step[z] <= 0.05 * step_median and z not in found and z - 1 not in found:
            # the copy is the one whose other neighbour is then two sections away
            after = content[z + 1] if z + 1 < depth else -np.inf
            before = content[z - 1] if z - 1 >= 1 else -np.inf
            copy = z if after >= before else z - 1
            found[copy] = ("duplicate", float(step_median / max(step[z], 1e-9)))
    # brightness / contrast: the slice's mean or contrast away from both neighbours' average
    levels = {"brightness": mean, "contrast": np.log(np.maximum(std, 1e-6))}
    floors = {"brightness": 0.01, "contrast": 0.02}
    for name, values in levels.items():
        jumps = np.full(depth, np.nan)
        for z in range(depth):
            sides = [values[n] for n in (z - 1, z + 1) if 0 <= n < depth and n not in found]
            if sides and z not in found:
                # the smaller departure from either neighbour: a drift moves both, a break neither
                jumps[z] = min(abs(values[z] - s) for s in sides)
        centre, sigma = _robust(jumps, floors[name])
        limit = centre + sensitivity * sigma
        thresholds[f"{name}_jump"] = limit
        for z in np.flatnonzero(jumps > limit):
            found.setdefault(int(z), ("intensity", float((jumps[z] - centre) / sigma)))
    # content: far from both neighbours, farther than they are from each other
    ratio = np.full(depth, np.nan)
    for z in range(1, depth - 1):
        if z in found or z - 1 in found or z + 1 in found:
            continue
        ratio[z] = min(content[z], content[z + 1]) / max(skip[z], 1e-6)
    centre, sigma = _robust(ratio, 0.05)
    limit = max(centre + sensitivity * sigma, 1.0)
    thresholds["content_ratio"] = limit
    for z in np.flatnonzero(ratio > limit):
        found.setdefault(int(z), ("content", float((ratio[z] - centre) / sigma)))
    return found, thresholds


# ---------------------------------------------------------------------------------- regions
def _outside(value, low, high):
    """How far ``value`` lies outside [min(low, high), max(low, high)]: 0 inside, signed outside.

    A slice next to a damaged one lies between its neighbours there, so it scores 0: only the
    slice that departs from both neighbours is flagged.
    """
    return value - np.clip(value, np.minimum(low, high), np.maximum(low, high))


def _score_maps(x, a, b, weight):
    """Region scores of slice ``x`` against its good neighbours ``a`` (below) and ``b`` (above).

    Each argument is a pair (working-grid image, its working-grid detail: the block mean of the
    full-resolution high-pass energy, so that noise is measured before block means hide it).
    ``weight`` is x's position between them (0.5 halfway). Returns six maps, (signed, texture,
    mismatch) smoothed coarsely (to find damage) then finely (to draw its extent): how much
    brighter (positive) or darker than both neighbours, divided by where the neighbours disagree;
    how much more (positive) or less detail than both, in log units; and the log ratio of x's
    disagreement with the neighbours' interpolation to their disagreement with each other.
    """
    (x, x_detail), (a, a_detail), (b, b_detail) = x, a, b
    middle = (1.0 - weight) * a + weight * b
    maps = []
    for sigma in (_SMOOTHING, _FINE_SMOOTHING):
        smooth = lambda image, sigma=sigma: ndimage.gaussian_filter(image, sigma)  # noqa: E731
        spread = smooth(np.abs(a - b))  # where the neighbours disagree, x may too
        signed = _outside(smooth(x), smooth(a), smooth(b))
        signed -= np.median(signed)  # a slight global brightness change is not a region
        signed /= spread + np.median(spread) + 1e-3
        detail = lambda energy: np.log(np.sqrt(smooth(energy)) + 1e-3)  # noqa: E731
        texture = _outside(detail(x_detail), detail(a_detail), detail(b_detail))
        texture -= np.median(texture)  # a whole section sharper or softer (focus) is no region
        mismatch = np.log(smooth(np.abs(x - middle)) + 1e-3) - np.log(0.5 * spread + 1e-3)
        maps += [signed, texture, mismatch]
    return maps


def _working_slice(source, z, factor):
    """Slice ``z`` on the working grid and its high-pass energy (measured at full resolution)."""
    full = source.slice(z)
    energy = (full - ndimage.gaussian_filter(full, 1.0)) ** 2
    return _block_mean(full, factor), _block_mean(energy, factor)


def _neighbours(z, bad, depth):
    below = next((n for n in range(z - 1, -1, -1) if n not in bad), None)
    above = next((n for n in range(z + 1, depth) if n not in bad), None)
    return below, above


def _region_pass(source, factor, bad, visit, also=(), tick=lambda: None):
    """Calls ``visit(z, maps)`` for every slice not in ``bad`` (and each in ``also``) that has
    slices not in ``bad`` on both sides (its neighbours)."""
    depth = source.shape[0]
    also = set(also)
    cache = {}

    def small(n):
        if n not in cache:
            cache[n] = _working_slice(source, n, factor)
        return cache[n]

    for z in range(depth):
        tick()
        if z in bad and z not in also:
            continue
        below, above = _neighbours(z, bad, depth)
        if below is None or above is None:
            continue
        weight = (z - below) / (above - below)
        visit(z, _score_maps(small(z), small(below), small(above), weight))
        for n in [n for n in cache if n < below]:
            del cache[n]


def _region_statistics(source, factor, bad, tick=lambda: None):
    """The stack's own level of each region score: (0, level) per map.

    The level is the median over good slices of each slice's 99th percentile of the score's
    magnitude: a clean slice reaches it on 1 % of its pixels. Most pixels of a slice lying between
    its neighbours score exactly 0, so a spread (MAD, quartiles) would be 0; a high percentile
    is not, and the median over slices is not moved by a few damaged ones.
    """
    rows = []

    def visit(z, maps):
        rows.append([np.percentile(np.abs(values), 99) for values in maps])

    _region_pass(source, factor, bad, visit, tick=tick)
    if not rows:
        return None
    levels = np.median(np.asarray(rows), axis=0)
    return [(0.0, float(max(level, 1e-4))) for level in levels]


def _regions(maps, statistics, sensitivity, min_fraction):
    """Labelled region mask (working grid, KINDS values) and (kind, score) per region of a slice.

    Seeds: coarse score past ``sensitivity``. Extent: the connected pixels whose fine score is
    past 40 % of it (holes filled), kept where the coarse score is past a quarter of it. A
    region is kept when it covers ``min_fraction`` of the slice and its median coarse score is
    past half of ``sensitivity`` (a lone peak on a clean slice is not damage).
    """
    signed, texture, mismatch, signed_fine, texture_fine, mismatch_fine = (
        (m - c) / s for m, (c, s) in zip(maps, statistics))
    candidates = {"dark": (-signed, -signed_fine), "bright": (signed, signed_fine),
                  "texture": (np.abs(texture), np.abs(texture_fine)),
                  "mismatch": (mismatch, mismatch_fine)}
    area = signed.size
    labels = np.zeros(signed.shape, np.uint8)
    scores = {}
    for kind, (coarse, fine) in candidates.items():
        seeds = coarse > sensitivity
        if not seeds.any():
            continue
        extent = ndimage.binary_closing(fine > 0.4 * sensitivity, iterations=2)
        extent = (ndimage.binary_fill_holes(extent) & (coarse > 0.25 * sensitivity)) | seeds
        components, count = ndimage.label(extent)
        seeded = [c for c in np.unique(components[seeds]) if c]
        if not seeded:
            continue
        sizes = ndimage.sum_labels(np.ones_like(coarse), components, index=seeded)
        strengths = ndimage.median(coarse, components, index=seeded)
        keep = [c for c, size, strength in zip(seeded, sizes, strengths)
                if size >= min_fraction * area and strength > 0.5 * sensitivity]
        if not keep:
            continue
        region = np.isin(components, keep)
        # a strong defect's edge: where its fine score falls to a third of its typical value
        # (a fixed fraction of the threshold would let a very strong one spread by blur)
        edge = max(0.4 * sensitivity, np.percentile(fine[region], 75) / 3.0)
        refined = ndimage.binary_fill_holes(
            ndimage.binary_closing(region & (fine > edge), iterations=2))
        if refined.sum() >= min_fraction * area:
            region = refined
        new = region & (labels == 0)
        labels[new] = KINDS[kind]
        scores[kind] = float(np.median(coarse[region]))
    return labels, scores


def find_damage(volume, sensitivity=1.0, min_fraction=0.01, margin=1, mask_output=None,
                overwrite=False, keep_mask=True, progress=None, cancel=None):
    """Finds whole-slice and partial damage in a z-stack from its own neighbour statistics.

    Whole slices: ``blank`` (contrast under a tenth of the stack's median), ``duplicate`` (equal
    to a neighbour: mean difference under 5 % of the stack's median neighbour difference; the
    copy is the one whose other neighbour is then farther), ``intensity`` (mean or contrast
    departs from both neighbours by more than 8 robust deviations of the stack's own neighbour
    jumps) and ``content`` (farther in content from both neighbours than they are from each
    other, by the same robust rule); a break explained by regions covering under half the slice
    is reported as those regions. Regions of the other slices, compared with their nearest good
    neighbours: ``dark`` (folds, tears, dark stains) and ``bright`` (charging, bright blobs),
    darker or brighter than both neighbours; ``texture`` (noise, blur), more or less detail
    than both; ``mismatch`` (a region shifted or replaced), far from the neighbours'
    interpolation where they agree with each other. Each score is found at a coarse scale and
    drawn at a fine one; a region needs a seed past 3.5 times the stack's own level of that
    score (the median over slices of each slice's 99th percentile), its median past half of
    that, and ``min_fraction`` of the slice.

    Why these defaults: every threshold is relative to the stack itself (neighbour measures'
    median and MAD, scores' typical 99th percentile), so FIB-SEM, whose neighbours nearly
    agree, and ssTEM, whose neighbours differ a lot, are judged alike. They were chosen on
    FlyEM FIB-SEM (10 nm) and ISBI 2012 ssTEM (50 nm) with synthetic defects: the lowest that
    left the undamaged stacks without findings (``benchmarks/bench_repair.py``; its table in
    ``benchmarks/README.md``).

    Args:
        volume: a path, a NumPy array (Z, Y, X) or a Volume; read slice by slice, twice.
        sensitivity: divides every threshold: 1 is the default, 2 finds fainter damage (and
            more false alarms), 0.5 only the plainest.
        min_fraction: smallest region kept, as a fraction of the slice's area.
        margin: working-grid pixels added around each region (damage edges are soft).
        mask_output: a path to write the uint8 mask volume to (TIFF, HDF5, Zarr, ...), or
            ``None``.
        overwrite: replace an existing ``mask_output``.
        keep_mask: return the mask array in the report (``False`` with ``mask_output`` keeps
            memory to one slice).
        progress: ``None``, or a callable called as ``progress(done, total)`` after each slice
            of each of the four passes.
        cancel: a ``threading.Event``; once set, the search stops at the next slice (the
            job-wide cancellation error) and a ``mask_output`` is not left behind.

    Returns:
        A :class:`DamageReport`. A clean stack gives no findings and an all-zero mask.

    Example:
        >>> stack = np.random.default_rng(0).integers(0, 256, (6, 64, 64), dtype=np.uint8)
        >>> stack[3] = 0
        >>> [(f["slice"], f["kind"]) for f in find_damage(stack).findings]
        [(3, 'blank')]
    """
    source = open_source(volume)
    shape = tuple(int(s) for s in source.shape)
    if len(shape) != 3 or shape[0] < 3:
        raise VolumeError(describe("Finding damage needs a stack of at least 3 slices (Z, Y, X).",
                                   "a grey-level volume of 3 or more slices", shape=shape))
    if not sensitivity > 0:
        raise EmzooError(describe("Invalid value for argument `sensitivity`.",
                                  "a positive number, e.g. 1 (the default) or 2 (finds more)",
                                  sensitivity=sensitivity))
    if not 0 <= min_fraction < 1:
        raise EmzooError(describe("Invalid value for argument `min_fraction`.",
                                  "a fraction of the slice in [0, 1)", min_fraction=min_fraction))
    if mask_output is not None:
        check_output(mask_output, overwrite, volume)  # before any work; never the input
    factor = _working_factor(shape[1:])
    tick = _ticker(4 * shape[0], progress, cancel)
    whole, thresholds = _whole_slice_findings(_whole_slice_statistics(source, factor, tick), shape,
                                              _WHOLE_DEVIATIONS / sensitivity)
    statistics = _region_statistics(source, factor, set(whole), tick)
    thresholds["region_scores"] = statistics
    findings = []
    partial = {}

    def visit(z, maps):
        labels, scores = _regions(maps, statistics, _REGION_LEVELS / sensitivity, min_fraction)
        if scores:
            partial[z] = (labels, scores)

    # a slice whose brightness or content broke may hold a large partial defect instead: it is
    # whole-slice damage only where its regions do not explain it
    breaks = {z for z, (kind, _) in whole.items() if kind in ("intensity", "content")}
    if statistics is not None:
        _region_pass(source, factor, set(whole), visit, also=breaks, tick=tick)
    for z in breaks:
        if z in partial and (partial[z][0] > 0).mean() < 0.5:
            del whole[z]
        else:
            partial.pop(z, None)
    writer = None
    if mask_output is not None:
        from emzoo.data.volumes import create_volume

        writer = create_volume(os.fspath(mask_output), shape, np.uint8,
                               getattr(source, "voxel_size", None), overwrite=overwrite)
    mask = np.zeros(shape, np.uint8) if (keep_mask or writer is None) else None
    try:
        for z in range(shape[0]):
            tick()
            plane = np.zeros(shape[1:], np.uint8)
            if z in whole:
                kind, score = whole[z]
                plane[:] = KINDS[kind]
                findings.append(_finding(z, kind, [0, 0, shape[1], shape[2]], 1.0, score))
            elif z in partial:
                labels, scores = partial.pop(z)
                if margin:
                    grown = ndimage.grey_dilation(labels, size=2 * margin + 1)
                    labels = np.where(labels > 0, labels, grown)
                full = np.kron(labels, np.ones((factor, factor), np.uint8))
                plane[:full.shape[0], :full.shape[1]] = full
                if full.shape != plane.shape:  # the remainder past the last whole block
                    plane[:, full.shape[1]:] = plane[:, full.shape[1] - 1:full.shape[1]]
                    plane[full.shape[0]:] = plane[full.shape[0] - 1:full.shape[0]]
                for kind, score in scores.items():
                    where = plane == KINDS[kind]
                    if where.mean() < min_fraction / 2:  # mostly drawn under another kind
                        continue
                    ys, xs = np.nonzero(where.any(axis=1))[0], np.nonzero(where.any(axis=0))[0]
                    findings.append(_finding(z, kind, [ys[0], xs[0], ys[-1] + 1, xs[-1] + 1],
                                             float(where.mean()), score))
            if mask is not None:
                mask[z] = plane
            if writer is not None:
                writer.write(z, plane)
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return DamageReport(findings, shape, mask,
                        None if mask_output is None else os.fspath(mask_output), thresholds)


def _ticker(total, progress, cancel):
    """A function to call once per slice of work: checks ``cancel``, then reports progress."""
    done = [0]

    def tick():
        if cancel is not None and cancel.is_set():
            raise getattr(errors, "JobCancelled", EmzooError)(None)
        done[0] += 1
        if callable(progress):
            progress(min(done[0], total), total)
    return tick


def _finding(z, kind, bbox, fraction, score):
    return {"slice": int(z), "kind": kind, "label": KINDS[kind], "bbox": [int(v) for v in bbox],
            "fraction": round(float(fraction), 4), "score": round(float(score), 2)}


# ----------------------------------------------------------------------------------- repair
def repair_masked(volume, mask, model, output=None, band=4, tile=None, overlap=32,
                  batch_size=None, voxel_size=None, overwrite=False, progress=True,
                  reuse_features=None, jit_compile="auto", precision="float32",
                  allow_incomplete=False, chunks=None, cancel=None):
    """Replaces only the masked pixels by interpolation from the nearest good slices there.

    At each masked pixel of slice z, the good slices are the nearest ones below and above that
    are not masked at that pixel (a run of damaged slices is bridged as in
    :func:`~emzoo.engine.repair_volume`: recursive midpoints between the two good slices, then
    linear resampling off the power-of-two grid). Where only one side has a good slice (damage
    in the first or last slice), its value is copied. The repaired pixels are feathered into the
    intact ones over ``band`` pixels outside the mask (the weight of the interpolation falls
    linearly from 1 at the mask's edge to 0 past the band), so no seam shows; every pixel
    farther than ``band`` pixels (in-slice distance) from the mask is copied byte for byte, and
    a slice with no masked pixel is copied unchanged (an empty mask gives an identical volume
    and never runs the model).

    Args:
        volume: a path, a NumPy array (Z, Y, X) or a Volume.
        mask: a volume of the same shape (path, array or Volume; non-zero = damaged), e.g. the
            ``mask`` of :func:`find_damage` or its saved mask volume edited by hand.
        model: an interpolator, a registered name or a saved model folder (``"flow"``: the
            optical-flow baseline).
        band: width in pixels of the blend outside the mask (0: no blending).
        output, tile, overlap, batch_size, voxel_size, overwrite, progress, reuse_features,
            jit_compile, precision, allow_incomplete, chunks: as in
            :func:`~emzoo.engine.repair_volume` (single process). ``progress`` may also be a
            callable, called as ``progress(done, total)`` after each slice.
        cancel: a ``threading.Event``; once set, the job stops between two slices
            (:class:`~emzoo.errors.JobCancelled`) and leaves no output behind.

    Returns:
        The summary dict of :func:`~emzoo.engine.repair_volume`, with ``repaired`` (the slices
        with masked pixels) and ``repaired_pixels`` (how many).

    Example:
        >>> stack = np.tile(np.arange(32, dtype=np.uint8)[None, None], (3, 32, 1))
        >>> mask = np.zeros_like(stack)
        >>> mask[1, 8:16, 8:16] = 1
        >>> stack[1, 8:16, 8:16] = 255                      # a bright blob
        >>> def mean_model(inputs, training=False):         # any interpolator
        ...     return {"image": (inputs["x0"] + inputs["x1"]) / 2}
        >>> fixed = repair_masked(stack, mask, mean_model, progress=False)["array"]
        >>> int(fixed[1, 12, 12]), bool((fixed[0] == stack[0]).all())
        (12, True)
    """
    band = _check_band(band)
    job = _MaskedJob(volume, output, overwrite, voxel_size, allow_incomplete)
    masks = open_source(mask)
    if tuple(masks.shape) != tuple(job.shape):
        raise VolumeError(describe("The mask must have the volume's shape.",
                                   f"a mask volume of shape {tuple(job.shape)} "
                                   "(non-zero = damaged)",
                                   mask_shape=tuple(masks.shape)))
    damaged, pairs = _plan_masked(masks, job.shape)
    check_output_size(job.shape, job.dtype, job.output, "a smaller input")
    engine = None
    if pairs:
        engine = MidpointEngine(resolve_model(model), job.shape[1], job.shape[2], tile, overlap,
                                batch_size, reuse_features, jit_compile,
                                expected_pairs=pairs, precision=precision)
    counted = {"pixels": 0}
    slices = _masked_slices(job, masks, engine, band, damaged, counted)
    array, seconds = _write(job, slices, chunks, progress, cancel)
    precision = engine.precision if engine is not None else precision
    kind = f"repair masked pixels of {len(damaged)} slice(s)"
    return {"output": job.output, "array": array, "input_shape": job.shape,
            "output_shape": job.shape, "dtype": job.dtype.name, "voxel_size": job.voxel_size,
            "repaired": sorted(damaged), "repaired_pixels": counted["pixels"],
            "precision": precision, "seconds": seconds,
            "summary": f"{kind}: {job.shape} {job.dtype.name}, {seconds:.1f} s, "
                       f"{job.output if job.output is not None else '(array)'}"}


class _MaskedJob:
    """The checked input and output of :func:`repair_masked`."""

    def __init__(self, volume, output, overwrite, voxel_size, allow_incomplete):
        self.output = check_output(output, overwrite, volume)
        self.overwrite = overwrite
        self.source = open_source(volume, allow_incomplete)
        self.shape = check_volume(self.source, 2)
        self.dtype = np.dtype(self.source.dtype)
        self.voxel_size = source_voxel_size(self.source, voxel_size)


def _write(job, slices, chunks, progress, cancel):
    """Streams ``(z, raw)`` to the output (temporary name, renamed when complete) or an array.

    ``progress``: ``True`` draws a bar on stderr, a callable is called as ``progress(done,
    total)``; a set ``cancel`` event stops between two slices and leaves no output behind.
    """
    bar = Progress(job.shape[0], "repair", enabled=progress is True)
    if job.output is None:
        array = np.empty(job.shape, job.dtype)
        writer = None
    else:
        from emzoo.data.volumes import create_volume

        options = {} if chunks is None else {"chunks": chunks}
        writer = create_volume(job.output, job.shape, job.dtype, job.voxel_size,
                               overwrite=job.overwrite, **options)
    try:
        for done, (z, raw) in enumerate(slices, 1):
            if cancel is not None and cancel.is_set():
                # the job-wide cancellation error where this version has one
                raise getattr(errors, "JobCancelled", EmzooError)(None)
            if writer is None:
                array[z] = raw
            else:
                writer.write(z, raw)
            bar.update()
            if callable(progress):
                progress(done, job.shape[0])
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    bar.close()
    return (array if writer is None else None), bar.seconds


def _check_band(band):
    try:
        value = int(band)
    except (TypeError, ValueError):
        value = None
    if value is None or value != band or value < 0:
        raise EmzooError(describe("Invalid value for argument `band`.",
                                  "a whole number of pixels >= 0, e.g. 4", band=band))
    return value


def _plan_masked(masks, shape):
    """Slices with masked pixels, and an estimate of the pairs the model will interpolate.

    Refuses, before any work, a mask that covers some pixel in every slice (nothing to
    interpolate from there).
    """
    damaged = []
    ever_good = np.zeros(shape[1:], bool)
    ever_bad = np.zeros(shape[1:], bool)
    for z in range(shape[0]):
        plane = np.asarray(masks.read(z)) != 0
        ever_good |= ~plane
        if plane.any():
            damaged.append(z)
            ever_bad |= plane
    hopeless = ever_bad & ~ever_good
    if hopeless.any():
        y, x = (int(v[0]) for v in np.nonzero(hopeless))
        raise VolumeError(describe(
            f"The mask covers pixel (y={y}, x={x}) in every slice: there is no good slice to "
            "interpolate it from.", "a mask that leaves each pixel intact in at least one slice",
            masked_pixels=int(hopeless.sum())))
    return set(damaged), len(damaged)


def _masked_slices(job, masks, engine, band, damaged, counted):
    """Yields ``(z, raw)`` for every slice: intact ones copied, masked pixels interpolated."""
    depth = job.shape[0]
    mask_cache = {}

    def masked(n):
        if n not in mask_cache:
            mask_cache[n] = np.asarray(masks.read(n)) != 0
        return mask_cache[n]

    grids = {}  # (a, b) -> (dense grid of unit slices, positions of a+1..b-1)
    repaired_units = {}  # output slices already repaired, as inputs for later ones
    below = np.full(job.shape[1:], -1, np.int64)  # nearest slice below not masked, per pixel
    for z in range(depth):
        if z not in damaged:
            raw = job.source.read(z)
            below[:] = z
            yield z, raw
            _forget(mask_cache, grids, repaired_units, z)
            continue
        here = masked(z)
        above = np.full(job.shape[1:], depth, np.int64)
        missing = here.copy()
        n = z + 1
        while missing.any() and n < depth:
            good = missing & ~masked(n)
            above[good] = n
            missing &= ~good
            n += 1
        raw = job.source.read(z)
        original = job.source.normalise_raw(raw)[..., None]
        keys = np.where(here, below * (depth + 1) + above, -1)
        weight = _blend_weight(here, band)
        if band:  # pixels near the mask take the pair of the nearest masked pixel
            nearest = ndimage.distance_transform_edt(~here, return_distances=False,
                                                     return_indices=True)
            keys = keys[nearest[0], nearest[1]]
        active = weight > 0
        interpolated = np.zeros(job.shape[1:], np.float32)
        for key in np.unique(keys[active]):
            a, b = divmod(int(key), depth + 1)
            region = active & (keys == key)
            interpolated[region] = _interpolate(job, engine, grids, repaired_units, a, b, z)[region]
        unit = original[..., 0] * (1.0 - weight) + interpolated * weight
        back = getattr(job.source, "denormalise_raw", None)
        out = np.asarray(back(unit)).astype(job.dtype, copy=False)
        out = np.where(weight > 0, out, raw)
        counted["pixels"] += int(here.sum())
        repaired_units[z] = job.source.normalise_raw(out)
        below[~here] = z
        yield z, out
        _forget(mask_cache, grids, repaired_units, z)


def _forget(mask_cache, grids, repaired_units, z):
    for n in [n for n in mask_cache if n <= z]:
        del mask_cache[n]
    for key in [key for key in grids if key[1] <= z]:
        del grids[key]
    for n in [n for n in repaired_units if n < z - 64]:  # runs longer than this read the input
        del repaired_units[n]


def _interpolate(job, engine, grids, repaired_units, a, b, z):
    """The whole slice z interpolated between good slices a < z < b (float32 (Y, X) in [0, 1]).

    ``a = -1`` or ``b = depth`` means no good slice on that side: the other one is copied.
    """
    depth = job.shape[0]

    def unit(n):
        return repaired_units[n] if n in repaired_units else job.source.slice(n)

    if a < 0:
        return unit(b)
    if b >= depth:
        return unit(a)
    if (a, b) not in grids:
        positions, grid = repair_positions(b - a - 1)
        dense = {0: unit(a)[..., None], grid: unit(b)[..., None]}
        engine.forget()  # cached features are keyed by grid position, not by slice
        engine.fill_grid(dense, 0, grid, grid.bit_length() - 1)
        engine.forget()
        grids[(a, b)] = (dense, positions)
        release_freed_memory()
    dense, positions = grids[(a, b)]
    position = positions[z - a - 1]
    below = math.floor(position)
    weight = float(position - below)
    if weight == 0:
        return dense[below][..., 0]
    return ((1.0 - weight) * dense[below] + weight * dense[below + 1])[..., 0]


def _blend_weight(mask, band):
    """1 inside ``mask``, falling linearly towards 0 at ``band + 1`` pixels outside it; 0 past
    ``band`` pixels (Euclidean distance to the nearest masked pixel of the slice)."""
    if not band:
        return mask.astype(np.float32)
    distance = ndimage.distance_transform_edt(~mask)
    weight = np.clip(1.0 - distance / (band + 1), 0.0, 1.0).astype(np.float32)
    weight[distance > band] = 0.0
    return weight


def repair_damage(volume, model, output=None, detect=True, mask=None, dry_run=False,
                  save_mask=None, report=None, sensitivity=1.0, band=4, overwrite=False,
                  **options):
    """Finds damage and/or takes a mask, then repairs the masked pixels: one call per request.

    ``detect`` runs :func:`find_damage` (its mask written to ``save_mask`` and its report to
    ``report`` as JSON when given); ``mask`` is a mask volume (non-zero = damaged), e.g. a saved
    detected mask edited by hand. With both, the union is repaired. ``dry_run`` only finds and
    reports (no ``output``). Everything that can be checked is checked before any work.

    Args:
        volume: a path, a NumPy array (Z, Y, X) or a Volume.
        model: as in :func:`repair_masked`.
        output: where to write the repaired volume (``None``: returned as ``array``).
        options: keyword arguments of :func:`repair_masked` (tile, overlap, batch_size,
            voxel_size, progress, jit_compile, precision, allow_incomplete, chunks, cancel).

    Returns:
        A dict: ``findings`` (``None`` without ``detect``), ``damaged_slices``, ``report`` and
        ``mask_path`` (the paths written, or ``None``), and, unless ``dry_run``, the summary of
        :func:`repair_masked` under ``repair``.

    Example:
        >>> done = repair_damage("stack.tif", "default", "fixed.tif",
        ...                      report="found.json")                  # doctest: +SKIP
    """
    if not detect and mask is None:
        raise EmzooError(describe("Nothing marks the damage.", "detect=True, a mask, or both",
                                  detect=detect, mask=mask))
    if dry_run and not detect:
        raise EmzooError(describe("A dry run only reports what detection finds.",
                                  "detect=True with dry_run=True", detect=detect))
    for path in (report, save_mask) + (() if dry_run else (output,)):
        if path is not None:
            check_output(path, overwrite, volume)  # none of them may be the input
    _check_band(band)
    found, combined = None, None
    if mask is not None:
        masks = open_source(mask)
        source = open_source(volume, options.get("allow_incomplete", False))
        if tuple(masks.shape) != tuple(source.shape):
            raise VolumeError(describe("The mask must have the volume's shape.",
                                       f"a mask volume of shape {tuple(source.shape)} "
                                       "(non-zero = damaged)", mask_shape=tuple(masks.shape)))
        combined = masks
    if detect:
        found = find_damage(volume, sensitivity=sensitivity, mask_output=save_mask,
                            overwrite=overwrite, cancel=options.get("cancel"))
        if report is not None:
            found.save(report)
        combined = found.mask if combined is None else _union(found.mask, combined)
    result = {"findings": None if found is None else found.findings,
              "damaged_slices": None if found is None else found.damaged_slices,
              "report": None if report is None else os.fspath(report),
              "mask_path": None if save_mask is None else os.fspath(save_mask)}
    if not dry_run:
        result["repair"] = repair_masked(volume, combined, model, output=output, band=band,
                                         overwrite=overwrite, **options)
    return result


def _union(detected, masks):
    """The detected mask where it marks damage, else the given mask's labels (as uint8 > 0)."""
    out = np.array(detected, np.uint8, copy=True)
    for z in range(out.shape[0]):
        given = np.asarray(masks.read(z)) != 0
        out[z][given & (out[z] == 0)] = 255
    return out
