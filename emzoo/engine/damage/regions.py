"""Partial damage: the working grid, each slice's region scores against its good neighbours,
and the labelled regions they give (folds, tears, blobs, noise patches, shifted regions).

:func:`~emzoo.engine.damage.detect.find_damage` drives these passes; the mask labels of every
kind, whole-slice ones included, are :data:`KINDS`.
"""

import numpy as np
from scipy import ndimage

#: Mask label of each kind of damage (0 is intact). Whole-slice kinds first, then partial ones.
KINDS = {"blank": 1, "duplicate": 2, "intensity": 3, "content": 4,
         "dark": 5, "bright": 6, "texture": 7, "mismatch": 8}
WHOLE_SLICE_KINDS = ("blank", "duplicate", "intensity", "content")

_WORKING_SIDE = 256  # the working grid's longest side, about (block means of the full slice)
_SMOOTHING = 7.0  # working-grid pixels: damage of 5 % of a slice is far wider
_FINE_SMOOTHING = 1.5  # working-grid pixels: the extent of a region found at the coarse scale
_SHIFT_RADIUS = 8  # working-grid pixels (of 256 a side) joining the parts of one shifted region


def working_factor(shape):
    """The block size that brings a slice of ``shape`` (Y, X) to the working grid."""
    return max(1, int(round(max(shape) / _WORKING_SIDE)))


def block_mean(image, factor):
    """``image`` reduced by block means of ``factor`` x ``factor`` (the edge remainder dropped)."""
    if factor == 1:
        return np.asarray(image, np.float32)
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = np.asarray(image[:h, :w], np.float32).reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3))


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
    return block_mean(full, factor), block_mean(energy, factor)


def _neighbours(z, bad, depth):
    below = next((n for n in range(z - 1, -1, -1) if n not in bad), None)
    above = next((n for n in range(z + 1, depth) if n not in bad), None)
    return below, above


def region_pass(source, factor, bad, visit, also=(), tick=lambda: None):
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


def region_statistics(source, factor, bad, tick=lambda: None):
    """The stack's own level of each region score: (0, level) per map.

    The level is the median over good slices of each slice's 99th percentile of the score's
    magnitude: a clean slice reaches it on 1 % of its pixels. Most pixels of a slice lying between
    its neighbours score exactly 0, so a spread (MAD, quartiles) would be 0; a high percentile
    is not, and the median over slices is not moved by a few damaged ones.
    """
    rows = []

    def visit(z, maps):
        rows.append([np.percentile(np.abs(values), 99) for values in maps])

    region_pass(source, factor, bad, visit, tick=tick)
    if not rows:
        return None
    levels = np.median(np.asarray(rows), axis=0)
    return [(0.0, float(max(level, 1e-4))) for level in levels]


def labelled_regions(maps, statistics, sensitivity, min_fraction):
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
