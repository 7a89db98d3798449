"""Repairing only the masked pixels of a stack, from the nearest good slices at each place.

:func:`repair_masked` replaces the pixels that are non-zero in a mask volume of the same shape with
the interpolation from the nearest good slices at that place, with the same recursive midpoints
:func:`~emzoo.engine.repair_volume` uses for runs of damaged slices, blended into the intact
surroundings over a band of a few pixels outside the mask. Every pixel farther than ``band``
pixels from the mask is copied byte for byte.

Example:
    >>> fixed = repair_masked("stack.tif", "mask.tif", "default")["array"]  # doctest: +SKIP
"""

import contextlib
import math

import numpy as np
from scipy import ndimage

from emzoo.engine.memory import release_freed_memory
from emzoo.engine.interpolators import midpoint_engine, resolve_model
from emzoo.engine.positions import repair_positions
from emzoo.engine.progress import Progress
from emzoo.engine.sources import (check_output, check_output_size, check_volume, open_source,
                                  source_voxel_size)
from emzoo.errors import EmzooError, JobCancelled, VolumeError, describe

BLENDS = ("feather", "poisson")


def repair_masked(volume, mask, model, output=None, band=4, blend="feather", tile=None,
                  overlap=32, batch_size=None, voxel_size=None, overwrite=False, progress=True,
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
        blend: ``"feather"`` (the linear weight above) or ``"poisson"`` (gradient-domain: inside
            the mask and its band the slice takes the interpolation's gradients and meets the
            intact pixels at the band's outer edge, solved as a Poisson equation per slice;
            ``benchmarks/README.md`` compares the two).
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
    band = check_band(band)
    check_blend(blend)
    job = _MaskedJob(volume, output, overwrite, voxel_size, allow_incomplete)
    masks = check_mask_shape(mask, job.shape)
    damaged, pairs = _plan_masked(masks, job.shape)
    check_output_size(job.shape, job.dtype, job.output, "a smaller input")
    engine = None
    if pairs:
        engine = midpoint_engine(resolve_model(model), job.shape[1], job.shape[2], tile, overlap,
                                 batch_size=batch_size, reuse_features=reuse_features,
                                 jit_compile=jit_compile, expected_pairs=pairs,
                                 precision=precision)
    counted = {"pixels": 0}
    slices = _masked_slices(job, masks, engine, band, blend, damaged, counted)
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
    with writer if writer is not None else contextlib.nullcontext():  # aborted on errors
        for done, (z, raw) in enumerate(slices, 1):
            if cancel is not None and cancel.is_set():
                raise JobCancelled(None)
            if writer is None:
                array[z] = raw
            else:
                writer.write(z, raw)
            bar.update()
            if callable(progress):
                progress(done, job.shape[0])
    bar.close()
    return (array if writer is None else None), bar.seconds


def check_blend(blend):
    """Refuses a ``blend`` that is not one of :data:`BLENDS`."""
    if blend not in BLENDS:
        raise EmzooError(describe("Invalid value for argument `blend`.",
                                  " or ".join(repr(b) for b in BLENDS), blend=blend))
    return blend


def check_band(band):
    try:
        value = int(band)
    except (TypeError, ValueError):
        value = None
    if value is None or value != band or value < 0:
        raise EmzooError(describe("Invalid value for argument `band`.",
                                  "a whole number of pixels >= 0, e.g. 4", band=band))
    return value


def check_mask_shape(mask, shape):
    """``mask`` opened as a source, refused unless it has the volume's ``shape``."""
    masks = open_source(mask)
    if tuple(masks.shape) != tuple(shape):
        raise VolumeError(describe("The mask must have the volume's shape.",
                                   f"a mask volume of shape {tuple(shape)} (non-zero = damaged)",
                                   mask_shape=tuple(masks.shape)))
    return masks


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


def _masked_slices(job, masks, engine, band, blend, damaged, counted):
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
        active = weight > 0
        # Poisson needs the repair's gradients across the region's edge: one pixel more
        reach = ndimage.binary_dilation(active) if blend == "poisson" else active
        if band or blend == "poisson":  # pixels near the mask take the nearest masked pixel's pair
            nearest = ndimage.distance_transform_edt(~here, return_distances=False,
                                                     return_indices=True)
            keys = keys[nearest[0], nearest[1]]
        interpolated = np.zeros(job.shape[1:], np.float32)
        for key in np.unique(keys[reach]):
            a, b = divmod(int(key), depth + 1)
            region = reach & (keys == key)
            interpolated[region] = _interpolate(job, engine, grids, repaired_units, a, b, z)[region]
        if blend == "poisson":
            unit = _poisson_blend(original[..., 0], interpolated, active)
        else:
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


def _poisson_blend(original, interpolated, region):
    """``original`` with ``region`` replaced by the image whose gradients are those of
    ``interpolated`` and whose values meet ``original`` just outside ``region``.

    The discrete Poisson equation (4-neighbour Laplacian) over the region's pixels, with the
    intact pixels around it as boundary values, solved with SciPy's sparse LU; a region pixel on
    the slice's edge takes no neighbour across it (zero normal derivative there). Written here
    because OpenCV's ``seamlessClone`` takes 8-bit colour images only.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    if region.all():  # a whole damaged slice: no intact pixel to meet
        return interpolated.astype(np.float32)
    out = original.astype(np.float64)
    ys, xs = np.nonzero(region)
    index = np.full(region.shape, -1, np.int64)
    index[ys, xs] = np.arange(ys.size)
    guide = interpolated.astype(np.float64)
    rows, cols, values = [], [], []
    rhs = np.zeros(ys.size)
    degree = np.zeros(ys.size)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < region.shape[0]) & (nx >= 0) & (nx < region.shape[1])
        me = np.flatnonzero(inside)
        ny, nx = ny[inside], nx[inside]
        degree[me] += 1
        rhs[me] += guide[ys[me], xs[me]] - guide[ny, nx]  # the guide's gradient towards it
        neighbour = index[ny, nx]
        unknown = neighbour >= 0
        rows.append(me[unknown])
        cols.append(neighbour[unknown])
        values.append(np.full(int(unknown.sum()), -1.0))
        rhs[me[~unknown]] += out[ny[~unknown], nx[~unknown]]  # intact boundary values
    rows.append(np.arange(ys.size))
    cols.append(np.arange(ys.size))
    values.append(degree)
    matrix = coo_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(ys.size, ys.size)).tocsc()
    out[ys, xs] = spsolve(matrix, rhs)
    return out.astype(np.float32)
