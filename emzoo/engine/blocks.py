"""The blockwise engine's plan: which output chunks each task writes, what it reads and computes.

A **block** is a range of output slices ``z0:z1`` (whole z-chunks of the output) times a region
``y0:y1, x0:x1`` (whole (y, x) chunks). The blocks of a :class:`BlockPlan` cover the output and
never share a chunk, so each task writes only its own chunks, in any order.

**What a block reads.** Each output slice is an input slice copied (:class:`Copy`) or a position
between two input slices ``left`` and ``right`` on their dense power-of-two grid
(:class:`Interpolate`): for upscaling the input pair that contains it, for repair the good slices
around its damaged run (a *recipe*: :class:`UpscaleRecipe`, :class:`RepairRecipe`). It depends on
those two input slices only (recursive midpoints between them, then linear resampling on their
grid: :mod:`emzoo.engine.positions`), so a block reads only the input slices of its pairs, which
may lie outside its own z-range (:func:`input_slices`).

**The (y, x) halo.** Slices are cut into the tiles of ONE grid over the whole slice
(:class:`~emzoo.engine.tiler.Tiler`, with the job's tile and overlap). A midpoint on the block's
region is the blend of the global tiles that weigh on it (:meth:`Tiler.window
<emzoo.engine.tiler.Tiler.window>`), with their global weights; those tiles read a larger part of
the slice (:meth:`Tiler.span <emzoo.engine.tiler.Tiler.span>`). A midpoint is also an input of the
next recursion level, so one that deeper midpoints need is computed on the span of what they need:
its *reach* is how many rings of tiles it extends past the region (0 for the midpoints that are
only resampled; one more per level above). The block's values are then those the single-process
engine computes on the same region with the same tile and overlap (to float rounding in the
model's batches). Tiles near a block's edges are computed by both neighbours, and deeper factors
reach further: that is the halo's cost, relatively smaller for larger regions.

:func:`compute_block` runs one block with a given :class:`~emzoo.engine.midpoint.MidpointEngine`
and input volume; this module imports NumPy only (no Dask: see :mod:`emzoo.engine.distributed`).

Example:
    >>> recipe = UpscaleRecipe(9, factor=2)
    >>> plan = BlockPlan((recipe.count, 64, 96), chunks=(4, 32, 32), region=32)
    >>> len(plan), plan[0]
    (30, Block(id=0, z0=0, z1=4, y0=0, y1=32, x0=0, x1=32))
    >>> input_slices(recipe, 4, 8)
    [2, 3, 4]
"""

import collections
import collections.abc
import fractions
import math

import numpy as np

from emzoo.engine.job import resample
from emzoo.engine.positions import repair_positions, upscale_positions
from emzoo.errors import EmzooError, check_integer, describe

DEFAULT_REGION = 2048  # (y, x) pixels of a block's region by default, rounded up to whole chunks

Copy = collections.namedtuple("Copy", "z")
Copy.__doc__ = "An output slice that is input slice ``z``, copied raw."
Interpolate = collections.namedtuple("Interpolate", "left right grid position")
Interpolate.__doc__ = ("An output slice at ``position`` (a fraction, in dense-grid units: 0 is input "
                       "slice ``left``, ``grid`` is input slice ``right``) on the dense grid of "
                       "``grid`` steps between two input slices.")
Block = collections.namedtuple("Block", "id z0 z1 y0 y1 x0 x1")
Block.__doc__ = "Output slices ``z0:z1`` x region ``y0:y1, x0:x1``, whole chunks; ``id`` its index."


class UpscaleRecipe:
    """Where each output slice of an upscaling by ``factor`` comes from (see :mod:`emzoo.engine`).

    Example:
        >>> recipe = UpscaleRecipe(3, factor=2.5)
        >>> recipe.count, recipe(0), recipe(1)
        (6, Copy(z=0), Interpolate(left=0, right=1, grid=4, position=Fraction(8, 5)))
    """

    def __init__(self, num_slices, factor):
        self.positions, self.grid = upscale_positions(num_slices, factor)
        self.factor = self.positions.factor
        self.count = self.positions.count

    def __call__(self, j):
        position = self.positions[j]
        pair = math.floor(position)
        if position == pair:
            return Copy(pair)
        return Interpolate(pair, pair + 1, self.grid, (position - pair) * self.grid)

    def describe(self):
        """The recipe as JSON-ready values (for the job's plan)."""
        return {"factor": str(self.factor)}


class RepairRecipe:
    """Where each slice of a repair comes from: good slices copied, each damaged run interpolated
    between the good slices around it (``runs``: ``(first, last)`` of each run; see
    :func:`~emzoo.engine.repair_volume`).

    Example:
        >>> recipe = RepairRecipe(6, [(2, 3)])
        >>> recipe(1), recipe(3)
        (Copy(z=1), Interpolate(left=1, right=4, grid=4, position=Fraction(8, 3)))
    """

    def __init__(self, num_slices, runs):
        self.count = int(num_slices)
        self.runs = [(int(first), int(last)) for first, last in runs]
        self._damaged = {}
        for first, last in self.runs:
            positions, grid = repair_positions(last - first + 1)
            for k, position in enumerate(positions):
                self._damaged[first + k] = Interpolate(first - 1, last + 1, grid, position)

    def __call__(self, j):
        return self._damaged.get(j) or Copy(j)

    def describe(self):
        """The recipe as JSON-ready values (for the job's plan)."""
        return {"slices": sorted(self._damaged)}


def input_slices(recipe, z0, z1):
    """The input slices the output slices ``z0:z1`` of ``recipe`` read, sorted.

    Example:
        >>> input_slices(UpscaleRecipe(9, factor=4), 0, 4)
        [0, 1]
    """
    found = set()
    for j in range(z0, z1):
        what = recipe(j)
        found.update((what.z,) if isinstance(what, Copy) else (what.left, what.right))
    return sorted(found)


def _regions(length, chunk, size, whole):
    """``[(start, end), ...]`` along one axis: ``size`` rounded up to whole chunks, or the whole axis."""
    step = length if whole else max(chunk, -(-size // chunk) * chunk)
    return [(start, min(start + step, length)) for start in range(0, length, step)]


class BlockPlan(collections.abc.Sequence):
    """The blocks of an output of ``shape`` (Z, Y, X) with chunk shape ``chunks`` (z, y, x).

    Each block is one z-chunk deep (``depth`` slices, a multiple of the chunk depth, if given) and
    ``region`` pixels high and wide (an int, or ``(height, width)``; rounded up to whole chunks;
    default :data:`DEFAULT_REGION`).
    With a ``tiler`` that has a single tile along an axis (tiles as large as the slice), blocks span
    that whole axis, since every region would need the whole tile anyway. Blocks are numbered in
    z, then y, then x order.

    Example:
        >>> plan = BlockPlan((17, 64, 96), (4, 32, 32), region=64)
        >>> len(plan), plan.block_shape, plan[-1]
        (10, (4, 64, 64), Block(id=9, z0=16, z1=17, y0=0, y1=64, x0=64, x1=96))
    """

    def __init__(self, shape, chunks, tiler=None, region=None, depth=None):
        self.shape = tuple(int(s) for s in shape)
        self.chunks = tuple(int(c) for c in chunks)
        if len(self.shape) != 3 or len(self.chunks) != 3 or min(self.shape + self.chunks) < 1:
            raise EmzooError(describe("Invalid block plan.", "a (Z, Y, X) shape and (z, y, x) chunks of "
                                      "positive integers", shape=shape, chunks=chunks))
        region = DEFAULT_REGION if region is None else region
        if isinstance(region, (tuple, list)) and len(region) == 2:
            size_y, size_x = (check_integer("block_size", r) for r in region)
        else:
            size_y = size_x = check_integer("block_size", region)
        depth = self.chunks[0] if depth is None else check_integer("depth", depth)
        whole_y = tiler is not None and len(tiler.ys) == 1
        whole_x = tiler is not None and len(tiler.xs) == 1
        zs = _regions(self.shape[0], self.chunks[0], depth, False)
        ys = _regions(self.shape[1], self.chunks[1], size_y, whole_y)
        xs = _regions(self.shape[2], self.chunks[2], size_x, whole_x)
        self.block_shape = (zs[0][1] - zs[0][0], ys[0][1] - ys[0][0], xs[0][1] - xs[0][0])
        self._blocks = [Block(index, z0, z1, y0, y1, x0, x1) for index, ((z0, z1), (y0, y1), (x0, x1))
                        in enumerate((z, y, x) for z in zs for y in ys for x in xs)]

    def __len__(self):
        return len(self._blocks)

    def __getitem__(self, index):
        return self._blocks[index]

    def describe(self):
        """The plan as JSON-ready values (for the job's plan)."""
        return {"chunks": list(self.chunks), "block_shape": list(self.block_shape),
                "count": len(self)}


def _key(what, offset):
    """A dense-grid slice's key: its position in input-slice units (input slices are integers)."""
    return fractions.Fraction(what.left) + fractions.Fraction(
        (what.right - what.left) * offset, what.grid)


class BlockWork:
    """What one block computes: its copied slices, the dense-grid slices its outputs are resampled
    from and, recursively, the midpoints those need, each with its *reach* (how many rings of tiles
    past the block's region it must be known on; see the module's docstring).

    Keys of dense-grid slices are their positions in input-slice units (a fraction; input slices
    are the integers), so slices shared by neighbouring pairs are computed once.

    Attributes:
        copies: ``[(j, z)]``: output slice ``j`` is input slice ``z``.
        outputs: ``[(j, Interpolate)]``: output slices resampled on a dense grid.
        inputs: ``{key: (z, reach)}``: input slices read.
        parents: ``{key: (left key, right key)}``: the midpoints to compute.
        reach: ``{key: reach}`` of every dense-grid slice (inputs and midpoints).

    Example:
        >>> work = BlockWork(UpscaleRecipe(3, factor=4), 0, 4)
        >>> work.copies, sorted(work.inputs.items())
        ([(0, 0)], [(Fraction(0, 1), (0, 2)), (Fraction(1, 1), (1, 2))])
        >>> [(float(key), work.reach[key]) for key in sorted(work.parents)]
        [(0.25, 0), (0.5, 1), (0.75, 0)]
    """

    def __init__(self, recipe, z0, z1):
        self.copies, self.outputs = [], []
        needed = {}  # (left, right, grid) -> {offset: reach}
        for j in range(z0, z1):
            what = recipe(j)
            if isinstance(what, Copy):
                self.copies.append((j, what.z))
                continue
            self.outputs.append((j, what))
            offsets = needed.setdefault(what[:3], {})
            below = math.floor(what.position)
            for offset in (below, below + 1) if what.position != below else (below,):
                offsets[offset] = max(offsets.get(offset, 0), 0)
        self.inputs, self.parents, self.reach, self._levels = {}, {}, {}, {}
        for segment, offsets in needed.items():
            what = Interpolate(*segment, None)
            levels = what.grid.bit_length() - 1
            half = 1
            while half < what.grid:  # deepest level first: parents get their children's reach + 1
                for offset in [o for o in offsets if 0 < o < what.grid and o & -o == half]:
                    key, reach = _key(what, offset), offsets[offset]
                    self.parents[key] = (_key(what, offset - half), _key(what, offset + half))
                    self._levels[key] = levels - (half.bit_length() - 1)
                    for parent in (offset - half, offset + half):
                        offsets[parent] = max(offsets.get(parent, 0), reach + 1)
                half *= 2
            for offset, reach in offsets.items():
                key = _key(what, offset)
                self.reach[key] = max(self.reach.get(key, 0), reach)
                if offset in (0, what.grid):
                    z = what.left if offset == 0 else what.right
                    self.inputs[key] = (z, max(self.inputs.get(key, (z, 0))[1], reach))

    @property
    def max_reach(self):
        return max(self.reach.values(), default=0)

    def steps(self):
        """The midpoints in the order they can be computed: ``[((level, reach), [keys])]``, level
        by level (parents first), grouped by reach (one tile window per group)."""
        groups = {}
        for key in self.parents:
            groups.setdefault((self._levels[key], self.reach[key]), []).append(key)
        return [(group, sorted(groups[group])) for group in sorted(groups)]


def _crop(entry, extent):
    """The part ``extent`` (y0, y1, x0, x1) of a dense-grid slice ``(array, its own extent)``."""
    array, (y0, _, x0, _) = entry
    top, bottom, left, right = extent
    return array[top - y0:bottom - y0, left - x0:right - x0]


def compute_block(block, recipe, tiler, engine, source, scales=None):
    """The raw output of ``block`` (``(z1 - z0, y1 - y0, x1 - x0)``, the input's dtype).

    Args:
        block: a :class:`Block`.
        recipe: :class:`UpscaleRecipe` or :class:`RepairRecipe` of the job.
        tiler: the job's global :class:`~emzoo.engine.tiler.Tiler` (whole slices, the job's tile
            and overlap).
        engine: a :class:`~emzoo.engine.midpoint.MidpointEngine` for that slice size; its
            ``tiler`` is set to each step's window while the block runs, then restored.
        source: the input :class:`~emzoo.data.volumes.Volume` (``read_crop``, ``normalise_raw``,
            ``denormalise_raw``).
        scales: each recursion level's weight of the model against linear interpolation (level
            1 first; :mod:`~emzoo.engine.calibration`), or ``None`` (the model's midpoints).

    Example:
        >>> raw = compute_block(plan[3], recipe, engine.tiler, engine, volume)   # doctest: +SKIP
    """
    work = BlockWork(recipe, block.z0, block.z1)
    region = (block.y0, block.y1, block.x0, block.x1)
    height, width = block.y1 - block.y0, block.x1 - block.x0
    dtype = np.dtype(source.dtype)
    out = np.empty((block.z1 - block.z0, height, width), dtype)
    for j, z in work.copies:  # input slices: copied, never re-quantised
        out[j - block.z0] = source.read_crop(z, block.y0, block.x0, height, width)
    if not work.outputs:
        return out
    extents = [region]  # extents[r]: the part of the slice known at reach r
    while len(extents) <= work.max_reach:
        extents.append(tiler.span(*extents[-1]))
    dense = {}  # key -> (float32 (h, w, 1) in [0, 1], its extent)
    for key, (z, reach) in work.inputs.items():
        y0, y1, x0, x1 = extents[reach]
        raw = source.read_crop(z, y0, x0, y1 - y0, x1 - x0)
        dense[key] = (np.asarray(source.normalise_raw(raw), np.float32)[..., None], extents[reach])
    whole = engine.tiler
    try:
        for (level, reach), keys in work.steps():
            engine.tiler = tiler.window(*extents[reach])
            pairs = [work.parents[key] for key in keys]
            parents = {k: _crop(dense[k], extents[reach + 1]) for pair in pairs for k in pair}
            scale = 1.0 if scales is None else scales[level - 1]
            for key, midpoint in zip(keys, engine.midpoints(pairs, parents, scale)):
                dense[key] = (midpoint, extents[reach])
            engine.forget()  # cached features belong to this window's tiles
    finally:
        engine.tiler = whole
        engine.forget()
    for j, what in work.outputs:
        below = math.floor(what.position)
        grid = {offset: _crop(dense[_key(what, offset)], region)
                for offset in ((below, below + 1) if what.position != below else (below,))}
        out[j - block.z0] = resample(grid, what.position, source, dtype)
    return out
