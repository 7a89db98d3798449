"""``repair_volume``: damaged slices replaced by interpolation from their good neighbours.

Slice indices are 0-based. A run of adjacent damaged slices is interpolated as one, between the
nearest good slice on each side; every other slice is copied unchanged. :func:`repair_volume` is
the one-call form of :func:`~emzoo.engine.plan_repair` then :func:`~emzoo.engine.run`.
"""

from emzoo.engine.plan import EngineOptions, plan_repair
from emzoo.engine.runner import run
from emzoo.engine.upscale import blockwise_of


def repair_volume(volume, slices, model, output=None, tile=None, overlap=32, batch_size=None,
                  voxel_size=None, overwrite=False, progress=True, reuse_features=None,
                  jit_compile="auto", precision="float32", workers=None, scheduler=None,
                  resume=False, allow_incomplete=False, chunks=None, block_size=None):
    """Replaces damaged slices by interpolating from the nearest good slices on both sides.

    A run of ``r`` adjacent damaged slices between good slices ``a`` and ``b = a + r + 1`` gets the
    positions t = k / (r + 1), k = 1..r, between them. They come from recursive midpoints on the
    power-of-two grid ``P >= r + 1`` (the same recursion as upscaling, as midpoint-trained models
    need), then linear interpolation between the two nearest grid slices when t is not on the
    grid (e.g. one damaged slice: t = 1/2 exactly; three: 1/4, 1/2, 3/4 exactly; two: 1/3 and 2/3
    resampled from the grid of quarters). Good slices are copied unchanged.

    Args:
        volume: a path, a NumPy array (Z, Y, X) or a Volume.
        slices: 0-based indices of the damaged slices (a list, or a string "12,37,40-42").
        model, output, tile, overlap, batch_size, voxel_size, overwrite, progress,
        reuse_features, jit_compile, precision: as in :func:`~emzoo.engine.upscale_volume`.
        workers, scheduler, resume, allow_incomplete, chunks, block_size: as in
            :func:`~emzoo.engine.upscale_volume` (blockwise on Dask: the damaged runs are found
            here, and each block recomputes the damaged slices of its z-range from the nearest
            good slices, wherever they lie, and copies the others).

    Returns:
        The same kind of result with or without ``output``: the dict upscale_volume returns
        (``output``, ``array`` (the repaired volume when ``output`` is ``None``), shapes, ``dtype``,
        ``voxel_size``, ``precision``, ``seconds``, ``summary``), plus ``repaired``: the list of
        replaced indices.

    Example:
        >>> fixed = repair_volume(stack, [12, 13], "default")["array"]      # doctest: +SKIP
    """

    options = EngineOptions(tile, overlap, batch_size, reuse_features, jit_compile, precision)
    plan = plan_repair(volume, slices, output, voxel_size=voxel_size, options=options,
                       blockwise=blockwise_of(workers, scheduler, block_size, resume),
                       overwrite=overwrite, allow_incomplete=allow_incomplete, chunks=chunks)
    return run(plan, model, progress).to_dict()
