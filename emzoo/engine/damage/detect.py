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

from emzoo.engine.damage.regions import (KINDS, block_mean, labelled_regions, region_pass,
                                         region_statistics, working_factor)
from emzoo.engine.sources import check_output, open_source
from emzoo.errors import EmzooError, JobCancelled, VolumeError, describe

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
        small = block_mean(full, factor)
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
    factor = working_factor(shape[1:])
    tick = _ticker(4 * shape[0], progress, cancel)
    whole, thresholds = _whole_slice_findings(_whole_slice_statistics(source, factor, tick), shape,
                                              _WHOLE_DEVIATIONS / sensitivity)
    statistics = region_statistics(source, factor, set(whole), tick)
    thresholds["region_scores"] = statistics
    findings = []
    partial = {}

    def visit(z, maps):
        labels, scores = labelled_regions(maps, statistics, _REGION_LEVELS / sensitivity,
                                          min_fraction)
        if scores:
            partial[z] = (labels, scores)

    # a slice whose brightness or content broke may hold a large partial defect instead: it is
    # whole-slice damage only where its regions do not explain it
    breaks = {z for z, (kind, _) in whole.items() if kind in ("intensity", "content")}
    if statistics is not None:
        region_pass(source, factor, set(whole), visit, also=breaks, tick=tick)
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
