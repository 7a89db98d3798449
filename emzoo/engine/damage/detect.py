"""Finding damage in a z-stack from its own neighbour statistics.

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

Example:
    >>> report = find_damage("stack.tif")                                    # doctest: +SKIP
    >>> [(f["slice"], f["kind"]) for f in report.findings]                  # doctest: +SKIP
    [(12, 'blank'), (40, 'dark')]
"""

import contextlib
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from emzoo.engine.sources import check_output, open_source
from emzoo.errors import EmzooError, JobCancelled, VolumeError, describe

#: Mask label of each kind of damage (0 is intact). Whole-slice kinds first, then partial ones.
KINDS = {"blank": 1, "duplicate": 2, "intensity": 3, "content": 4,
         "dark": 5, "bright": 6, "texture": 7, "mismatch": 8}
WHOLE_SLICE_KINDS = ("blank", "duplicate", "intensity", "content")

_WORKING_SIDE = 256  # the working grid's longest side, about (block means of the full slice)
_SMOOTHING = 7.0  # working-grid pixels: damage of 5 % of a slice is far wider
_FINE_SMOOTHING = 1.5  # working-grid pixels: the extent of a region found at the coarse scale
_WHOLE_DEVIATIONS = 8.0  # robust deviations of the stack's neighbour measures: a whole-slice break
_REGION_LEVELS = 3.5  # times the stack's 99th-percentile level of a region score: a region's seeds
_SHIFT_RADIUS = 8  # working-grid pixels (of 256 a side) joining the parts of one shifted region
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


def _twin_evidence(content):
    """How much farther (log ratio) the far side of the earlier twin of a duplicated pair must
    be than the later twin's for the earlier to be called the copy: the median of
    ``|log(d(z, z+1) / d(z-2, z-1))|`` over the stack's own steps, how much two one-section
    steps two apart usually differ. On FIB-SEM a missing section doubles the step, far past the
    median; on 50 nm ssTEM the content distance is near saturation and the two sides differ by
    about that median, so the later twin is kept as the copy (a section
    imaged again comes after its first image). Measured in benchmarks/README.md (Repair).
    """
    content = np.asarray(content, np.float64)
    usual = np.nanmedian(content) if np.isfinite(content).any() else 0.0
    pairs = [(content[z], content[z + 2]) for z in range(len(content) - 2)]
    ratios = [abs(math.log(b / a)) for a, b in pairs
              if np.isfinite(a) and np.isfinite(b) and min(a, b) > 0.05 * usual and min(a, b) > 0]
    return float(np.median(ratios)) if ratios else 0.0


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
    evidence = _twin_evidence(content)
    thresholds["duplicate_earlier_log_ratio"] = evidence
    for z in range(1, depth):
        if step[z] <= 0.05 * step_median and z not in found and z - 1 not in found:
            # the copy is the one whose other neighbour is then two sections away: the earlier
            # twin only when its far side is farther than the stack's own step-to-step spread
            # allows; else the later (a section imaged again comes after its first image)
            after = content[z + 1] if z + 1 < depth else np.nan
            before = content[z - 1] if z - 1 >= 1 else np.nan
            earlier = bool(np.isfinite(before) and np.isfinite(after) and before > 0
                           and math.log(before / max(after, 1e-9)) > evidence)
            copy = z - 1 if earlier else z
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
    return _merge_shifted(labels, scores, _SHIFT_RADIUS * max(signed.shape) / _WORKING_SIDE)


def _merge_shifted(labels, scores, radius):
    """Dark and bright regions that lie together, merged into one ``mismatch`` region.

    A region of a section shifted out of place shows, against its neighbours, structures that
    moved: dark where a membrane arrived, bright where one left, in fragments covering about half
    of it. Where a dark and a bright region lie within ``radius`` working-grid pixels of each
    other, their union is closed with a disk of that radius and its holes filled, and the whole
    is relabelled ``mismatch``. Folds (dark only), blobs (one sign) and noise patches (texture)
    are left as they are. Measured in benchmarks/README.md (shifted regions found with mask IoU
    >= 0.5 in 8 of 10 cases instead of 4).
    """
    dark, bright = labels == KINDS["dark"], labels == KINDS["bright"]
    if not (dark.any() and bright.any()):
        return labels, scores
    r = max(1, int(round(radius)))
    disk = np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r
    closed = ndimage.binary_fill_holes(
        ndimage.binary_closing(np.pad(dark | bright, r), disk)[r:-r, r:-r])
    components, _ = ndimage.label(closed)
    both = np.intersect1d(np.unique(components[dark]), np.unique(components[bright]))
    merged = np.isin(components, both[both > 0])
    if not merged.any():
        return labels, scores
    labels = labels.copy()
    labels[merged & ((labels == 0) | dark | bright)] = KINDS["mismatch"]
    scores = dict(scores)
    scores["mismatch"] = max(scores.get("mismatch", 0.0),
                             min(scores.get("dark", 0.0), scores.get("bright", 0.0)))
    return labels, scores


def find_damage(volume, sensitivity=1.0, min_fraction=0.01, margin=1, mask_output=None,
                overwrite=False, keep_mask=True, progress=None, cancel=None):
    """Finds whole-slice and partial damage in a z-stack from its own neighbour statistics.

    Whole slices: ``blank`` (contrast under a tenth of the stack's median), ``duplicate`` (equal
    to a neighbour: mean difference under 5 % of the stack's median neighbour difference; the
    copy is the later twin unless the earlier's other neighbour is farther than the stack's own
    step-to-step spread allows), ``intensity`` (mean or contrast
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
    with writer if writer is not None else contextlib.nullcontext():  # aborted on errors
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
    return DamageReport(findings, shape, mask,
                        None if mask_output is None else os.fspath(mask_output), thresholds)


def _ticker(total, progress, cancel):
    """A function to call once per slice of work: checks ``cancel``, then reports progress."""
    done = [0]

    def tick():
        if cancel is not None and cancel.is_set():
            raise JobCancelled(None)
        done[0] += 1
        if callable(progress):
            progress(min(done[0], total), total)
    return tick


def _finding(z, kind, bbox, fraction, score):
    return {"slice": int(z), "kind": kind, "label": KINDS[kind], "bbox": [int(v) for v in bbox],
            "fraction": round(float(fraction), 4), "score": round(float(score), 2)}
