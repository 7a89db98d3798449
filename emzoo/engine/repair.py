"""``repair_volume``: damaged slices replaced by interpolation from their good neighbours.

Slice indices are 0-based. A run of adjacent damaged slices is interpolated as one, between the
nearest good slice on each side; every other slice is copied unchanged. :func:`repair_volume` is
the one-call form of :func:`~emzoo.engine.plan_repair` then :func:`~emzoo.engine.run`.
"""

from emzoo.engine.job import resample, unit
from emzoo.engine.memory import release_freed_memory
from emzoo.engine.positions import repair_positions
from emzoo.errors import EmzooError, describe

_MAX_RANGE = 1_000_000  # slices in one START-END range of parse_slices (no volume is longer)


def parse_slices(text):
    """Slice indices from ``"12,37,40-42"`` (0-based; ranges inclusive), sorted and unique.

    Example:
        >>> parse_slices("12, 37,40-42")
        [12, 37, 40, 41, 42]
    """
    indices = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part.lstrip("-"):
                start, end = (int(value) for value in part.split("-", 1))
            else:
                start = end = int(part)
        except ValueError:
            raise EmzooError(describe("Invalid value for argument `slices`.",
                                      "comma-separated slice indices or ranges, e.g. 12,37,40-42",
                                      slices=text)) from None
        if end - start >= _MAX_RANGE:
            raise EmzooError(describe(f"Invalid value for argument `slices`: range {part} is longer "
                                      "than any volume.", f"ranges of at most {_MAX_RANGE} slices",
                                      slices=text))
        if start > end:
            raise EmzooError(describe(f"Invalid value for argument `slices`: reversed range {part}.",
                                      "START-END with START <= END, e.g. 40-42", slices=text))
        indices.update(range(start, end + 1))
    if not indices:
        raise EmzooError(describe("Invalid value for argument `slices`.",
                                  "at least one slice index", slices=text))
    return sorted(indices)


def damaged_runs(slices, num_slices):
    """Maximal runs (first, last) of adjacent damaged slices, each with good slices on both sides."""
    if isinstance(slices, str):
        slices = parse_slices(slices)
    try:
        indices = sorted({int(z) for z in slices})
    except (TypeError, ValueError):
        raise EmzooError(describe("Invalid value for argument `slices`.", "integer slice indices",
                                  slices=slices)) from None
    if not indices:
        raise EmzooError(describe("Invalid value for argument `slices`.",
                                  "at least one slice index", slices=slices))
    bad = [z for z in indices if not 0 <= z < num_slices]
    if bad:
        raise EmzooError(describe("Slice indices outside the volume.",
                                  f"0-based indices from 0 to {num_slices - 1}", slices=bad))
    runs = []
    for z in indices:
        if runs and z == runs[-1][1] + 1:
            runs[-1][1] = z
        else:
            runs.append([z, z])
    for first, last in runs:
        if first == 0 or last == num_slices - 1:
            raise EmzooError(describe(
                f"Cannot repair slice(s) {first}..{last}: interpolation needs a good slice on both "
                "sides, and this run touches the end of the volume.",
                f"damaged slices between 1 and {num_slices - 2}", slices=indices))
    return [tuple(run) for run in runs]


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
    from emzoo.engine.plan import EngineOptions, plan_repair
    from emzoo.engine.runner import run
    from emzoo.engine.upscale import blockwise_of

    options = EngineOptions(tile, overlap, batch_size, reuse_features, jit_compile, precision)
    plan = plan_repair(volume, slices, output, voxel_size=voxel_size, options=options,
                       blockwise=blockwise_of(workers, scheduler, block_size, resume),
                       overwrite=overwrite, allow_incomplete=allow_incomplete, chunks=chunks)
    return run(plan, model, progress).to_dict()


def repaired_slices(plan, source, engine):
    """Yields ``(z, raw)`` for every slice of the repair ``plan``: good ones copied, each damaged
    run interpolated with the midpoint ``engine``."""
    starts = dict(plan.runs)
    z = 0
    while z < plan.input_shape[0]:
        if z not in starts:
            yield z, source.read(z)
            z += 1
            continue
        last = starts[z]
        positions, grid = repair_positions(last - z + 1)
        dense = {0: unit(source, z - 1), grid: unit(source, last + 1)}
        engine.fill_grid(dense, 0, grid, grid.bit_length() - 1)
        for k, position in enumerate(positions):
            yield z + k, resample(dense, position, source, plan.dtype)
        engine.forget()
        release_freed_memory()
        z = last + 1
