"""Lateral training triplets: frames taken perpendicular to x and to y of the input volume; and
the input's own axial triplets, which can veto an adaptation.

Lateral planes are coarse along z (one row per input slice). Before cropping they are stretched
along z by linear interpolation to the lateral spacing, so they look like the isotropic slices the
model sees at inference; used raw (or as axial triplets of the input's own slices, whose outer
frames are twice the input spacing apart) the adaptation taught the model the wrong spacing and
lowered its scores (measurements in benchmarks/README.md). The gap of a triplet is chosen per
recursion level of the requested factor (:func:`lateral_gaps`).

Example:
    >>> lateral_gaps(40.0, 10.0, 4)
    [2, 1]
"""

import math

import numpy as np

from emzoo.errors import VolumeError, describe

# The largest (y, x) window read from the volume: adaptation needs texture, not the whole slice.
MAX_EXTENT = 512


def lateral_gaps(z_spacing, lateral_spacing, factor):
    """Lateral gaps ``g`` (pixels) whose triplets bridge what each recursion level bridges.

    Example:
        >>> lateral_gaps(40.0, 10.0, 4)        # outer frames 40 and 20 nm apart
        [2, 1]
        >>> lateral_gaps(50.0, 4.0, 8)
        [6, 3, 2]
    """
    levels = max(1, math.ceil(math.log2(max(float(factor), 2.0)) - 1e-9))
    ratio = float(z_spacing) / float(lateral_spacing)
    gaps = []
    for level in range(1, levels + 1):
        gap = max(1, int(round(ratio / 2 ** level)))
        if gap not in gaps:
            gaps.append(gap)
    return gaps


def stretch_along_z(plane, ratio):
    """``(Z, L)`` plane resampled along z by linear interpolation to ``round((Z - 1) * ratio) + 1``
    rows."""
    rows = plane.shape[0]
    length = int(round((rows - 1) * ratio)) + 1
    if length <= rows:
        return plane
    position = np.linspace(0.0, rows - 1, length, dtype=np.float64)
    low = np.minimum(np.floor(position).astype(int), rows - 2)
    weight = (position - low).astype(np.float32)[:, None]
    return (1.0 - weight) * plane[low] + weight * plane[low + 1]


class LateralTriplets:
    """Lateral triplets of a normalised block ``(Z, Y, X)``, split along x into train / held out.

    Args:
        block: float32 ``(Z, Y, X)`` in [0, 1].
        ratio: z spacing over lateral spacing (how much a plane is stretched along z).
        gaps: lateral gaps in pixels (see :func:`lateral_gaps`).
        crop: square crop size of the frames (reduced to what the planes allow).
        val_fraction: the share of the x range held out for self-validation.
    """

    def __init__(self, block, ratio, gaps, crop, val_fraction=0.2):
        self.block = block
        self.ratio = float(ratio)
        self.gaps = list(gaps)
        depth, height, width = block.shape
        self.stretched_depth = int(round((depth - 1) * max(self.ratio, 1.0))) + 1
        self.crop = int(min(crop, self.stretched_depth, height, width))
        split = int(round(width * (1.0 - val_fraction)))
        margin = max(self.gaps)
        self.train_x = (margin, split - margin)          # x-planes (and their gap neighbours)
        self.held_x = (split + margin, width - margin)
        # Planes perpendicular to x are (Z, Y) images, so they fit whatever the width; those
        # perpendicular to y are used only where a split's x range is at least one crop wide.
        if (self.train_x[1] - self.train_x[0] < 1 or self.held_x[1] - self.held_x[0] < 1
                or height < 2 * margin + 1 or self.crop < 8):
            wide = math.ceil((2 * margin + 1) / min(val_fraction, 1 - val_fraction))
            raise VolumeError(describe(
                "The volume is too small to adapt on.",
                f"slices at least about {wide} pixels wide and {max(2 * margin + 1, 8)} high, "
                f"and enough slices for 8-pixel crops after stretching along z",
                shape=tuple(block.shape), crop=crop, gaps=self.gaps))
        self.split = split

    def _triplet(self, rng, held_out):
        """One ``(x0, y, x1)`` of ``crop`` x ``crop`` frames."""
        gap = self.gaps[rng.integers(len(self.gaps))]
        depth, height, _ = self.block.shape
        y_planes_fit = (self.block.shape[2] - self.split if held_out else self.split) >= self.crop
        if rng.random() < 0.5 or not y_planes_fit:   # planes perpendicular to x: (Z, Y) images
            low, high = self.held_x if held_out else self.train_x
            x = int(rng.integers(low, high))
            frames = [self.block[:, :, x + d] for d in (-gap, 0, gap)]
        else:                    # planes perpendicular to y, within this split's x range
            y = int(rng.integers(gap, height - gap))
            x_range = slice(self.split, None) if held_out else slice(0, self.split)
            frames = [self.block[:, y + d, x_range] for d in (-gap, 0, gap)]
        frames = [stretch_along_z(f, self.ratio) for f in frames]
        rows, cols = frames[0].shape
        top = int(rng.integers(0, rows - self.crop + 1))
        left = int(rng.integers(0, cols - self.crop + 1))
        frames = [f[top:top + self.crop, left:left + self.crop] for f in frames]
        if rng.random() < 0.5:
            frames = [f[:, ::-1] for f in frames]
        if rng.random() < 0.5:  # the model sees slices in both orientations
            frames = [f.T for f in frames]
        return frames

    def batch(self, rng, size, channels, held_out=False):
        """``(inputs, target)`` for Keras: ``{"x0", "x1", "time"}`` and the middle frames."""
        triplets = [self._triplet(rng, held_out) for _ in range(size)]
        stack = np.asarray(triplets, np.float32)[..., None]            # (B, 3, H, W, 1)
        if channels != 1:
            stack = np.repeat(stack, channels, axis=-1)
        inputs = {"x0": stack[:, 0], "x1": stack[:, 2],
                  "time": np.full((size, 1), 0.5, np.float32)}
        return inputs, stack[:, 1]


def read_block(volume):
    """The normalised ``(Z, Y, X)`` block (centre window of at most MAX_EXTENT) and its voxel
    size."""
    depth, height, width = volume.shape
    h, w = min(height, MAX_EXTENT), min(width, MAX_EXTENT)
    top, left = (height - h) // 2, (width - w) // 2
    block = np.stack([volume.normalise_raw(volume.read_crop(z, top, left, h, w))
                      for z in range(depth)]).astype(np.float32)
    return block, volume.voxel_size


def axial_batches(block, multiple, count=8, size=256):
    """The input's own axial triplets ``(z - 1, z, z + 1)`` as ``[(inputs, target)]`` batches of
    one: up to ``count`` of them, evenly spread along z, each a centre crop of at most ``size``
    pixels square, cut to a multiple of ``multiple``. Empty when the block has fewer than 3 slices
    or its slices are smaller than ``multiple``.

    Their outer frames are twice the input spacing apart (the task one recursion level above the
    finest), but they are real axial slices with the microscope's own noise and section-to-section
    change, which lateral frames (neighbouring pixel columns of one slice) do not have.

    Example:
        >>> len(axial_batches(np.zeros((5, 64, 64), np.float32), 16, count=8))
        3
    """
    depth, height, width = block.shape
    side = (min(size, height, width) // multiple) * multiple
    if depth < 3 or side < multiple:
        return []
    top, left = (height - side) // 2, (width - side) // 2
    centres = np.unique(np.linspace(1, depth - 2, min(count, depth - 2)).round().astype(int))
    batches = []
    for z in centres:
        frames = [block[z + d, top:top + side, left:left + side][None, ..., None]
                  for d in (-1, 0, 1)]
        inputs = {"x0": frames[0], "x1": frames[2], "time": np.full((1, 1), 0.5, np.float32)}
        batches.append((inputs, frames[1]))
    return batches
