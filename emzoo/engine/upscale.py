"""``upscale_volume``: z-upscaling of a whole volume, streamed chunk by chunk.

A chunk is a few neighbouring input pairs and their recursion trees: enough first-level midpoints
to fill a batch, and never more than a bounded number of dense-grid slices, whatever the length of
the volume. Each chunk's output slices are written before the next chunk is read.
"""

from emzoo.engine.blocks import UpscaleRecipe
from emzoo.engine.distributed import check_request, run_blockwise, wants_blockwise
from emzoo.engine.job import Job
from emzoo.engine.memory import release_freed_memory
from emzoo.engine.midpoint import MidpointEngine, resolve_model
from emzoo.engine.positions import check_factor, isotropic_factor, upscale_positions

_CHUNK_GRID = 64  # dense-grid slices per chunk of input pairs (bounds memory)


def upscale_volume(volume, model, factor=2, output=None, isotropic=False, tile=None, overlap=32,
                   batch_size=None, voxel_size=None, overwrite=False, progress=True,
                   reuse_features=None, jit_compile="auto", precision="float32", workers=None,
                   scheduler=None, resume=False, allow_incomplete=False, chunks=None,
                   block_size=None):
    """Upscales ``volume`` along z by ``factor`` (or to isotropic voxels) with ``model``.

    See :mod:`emzoo.engine` for the method (recursive midpoints to the next power of two, then
    linear resampling at the exact positions j / factor).

    Args:
        volume: a path (TIFF, HDF5, slice folder), a NumPy array (Z, Y, X) or a Volume.
        model: an emzoo interpolator, or a registered name / saved model folder to load.
        factor: number >= 1 (2, 4, 8, 3, 2.5, ...). Ignored when ``isotropic``.
        output: path to write (TIFF, HDF5 or a folder, by the name); ``None`` keeps the result in
            memory (``result["array"]``).
        isotropic: use factor = z spacing / x spacing (needs a voxel size in the file or
            ``voxel_size``).
        tile, overlap: process slices larger than ``tile`` pixels in tiles overlapping by
            ``overlap`` pixels (``None``: whole slices).
        batch_size: tile pairs per model call; ``None`` picks
            :func:`~emzoo.engine.policy.default_batch_size` (4 with a GPU, 1 on CPU).
        voxel_size: (z, y, x) in nm, replacing the file's.
        overwrite: replace an existing ``output``.
        progress: show a progress bar (stderr).
        reuse_features: compute FILM features once per slice (default: when the model can).
        jit_compile: XLA-compile model calls (TensorFlow backend): True, False or ``"auto"``
            (XLA for FILM on long jobs, where it is faster; see
            :func:`~emzoo.engine.policy.resolve_jit_compile`).
        precision: what the model computes in: ``"float32"``, ``"bf16"`` (Keras
            ``mixed_bfloat16``; refused with one line where the device or model cannot) or
            ``"auto"`` (bf16 where supported); see :mod:`emzoo.engine.precision`.
        workers: run blockwise on a local Dask cluster of this many worker processes (``None``:
            the single-process engine). Needs a Zarr / OME-Zarr / N5 ``output`` and an input path;
            see :mod:`emzoo.engine.distributed`.
        scheduler: run blockwise on the existing Dask cluster at this address instead
            (``"tcp://host:8786"``).
        resume: continue the blockwise job that left ``output`` incomplete (killed), redoing only
            the blocks it did not record as finished; nothing to do if it is complete.
        allow_incomplete: read an input that is the unfinished output of an emzoo job.
        chunks: the chunk shape (z, y, x) of a Zarr / OME-Zarr / N5 output (default: the
            format's, :func:`~emzoo.data.volumes.zarr_chunked.default_chunks`).
        block_size: blockwise only: (y, x) pixels of a block, rounded up to whole chunks (default
            :data:`~emzoo.engine.blocks.DEFAULT_REGION`). Without ``tile``, the blockwise path
            processes slices up to :data:`~emzoo.engine.distributed.WHOLE_SLICE_MAX` pixels whole
            (as here) and tiles larger ones with :data:`~emzoo.engine.distributed.DEFAULT_TILE`.

    Returns:
        The same kind of result with or without ``output``: a dict with ``output`` (the path
        written, or ``None``), ``array`` (the upscaled volume in the input dtype when ``output``
        is ``None``, else ``None``), ``input_shape``, ``output_shape``, ``dtype``, ``voxel_size``
        (the output's, or ``None``), ``factor``, ``precision`` (the one the model ran in),
        ``seconds`` and ``summary`` (one line). The blockwise engine adds ``blocks``, ``computed``,
        ``skipped``, ``workers``, ``threads`` and ``already_complete``.

    Raises:
        EmzooError: bad arguments or input, or an output too large to make (over 1 TiB, see
            :func:`~emzoo.engine.sources.check_output_size`, or over the free disk space), all
            checked before any work.

    Example:
        >>> result = upscale_volume(np.zeros((3, 32, 48), np.uint8), model, factor=2.5)  # doctest: +SKIP
        >>> result["array"].shape, result["output"]                                      # doctest: +SKIP
        ((6, 32, 48), None)
        >>> upscale_volume("stack.tif", model, factor=4, output="iso.tif")["output_shape"]  # doctest: +SKIP
        (117, 512, 512)
        >>> upscale_volume("in.ome.zarr", "default", factor=4, output="out.ome.zarr",
        ...                workers=2)["computed"]                                    # doctest: +SKIP
        48
    """
    blockwise = wants_blockwise(workers, scheduler, resume)
    if blockwise:
        check_request(volume, output, workers, scheduler, resume, overwrite)
    job, positions, grid, factor, shape = plan_upscale(volume, factor, output, isotropic,
                                                       voxel_size, overwrite or bool(resume),
                                                       progress, allow_incomplete, chunks)
    voxel_in = job.voxel_size
    voxel_out = None if voxel_in is None else (voxel_in[0] / float(factor),) + voxel_in[1:]
    if blockwise:
        return run_blockwise(
            job, UpscaleRecipe(job.shape[0], factor), shape, voxel_out, model, label="upscale",
            kind=f"upscale x{float(factor):g}", extra={"factor": float(factor)}, tile=tile,
            overlap=overlap, batch_size=batch_size, reuse_features=reuse_features,
            jit_compile=jit_compile, precision=precision, workers=workers, scheduler=scheduler,
            resume=resume, overwrite=overwrite, chunks=chunks, block_size=block_size,
            allow_incomplete=allow_incomplete, expected_pairs=(job.shape[0] - 1) * (grid - 1),
            progress=progress)
    engine = MidpointEngine(resolve_model(model), job.shape[1], job.shape[2], tile, overlap,
                            batch_size, reuse_features, jit_compile,
                            expected_pairs=(job.shape[0] - 1) * (grid - 1), precision=precision)
    return job.write(_upscaled_slices(job, engine, positions, grid), shape, voxel_out, "upscale",
                     f"upscale x{float(factor):g}", factor=float(factor),
                     precision=engine.precision)


def plan_upscale(volume, factor=2, output=None, isotropic=False, voxel_size=None,
                 overwrite=False, progress=False, allow_incomplete=False, chunks=None):
    """What :func:`upscale_volume` checks before any work: input, output, factor and size.

    Returns ``(job, positions, grid, factor, output_shape)``. The command-line app calls it
    before loading a model, so a bad input or an output too large to make costs no start-up.

    Example:
        >>> plan_upscale(np.zeros((3, 8, 8), np.uint8), factor=4)[-1]    # doctest: +SKIP
        (9, 8, 8)
    """
    job = Job(volume, output, overwrite, voxel_size, progress, minimum_slices=2,
              allow_incomplete=allow_incomplete, chunks=chunks)
    if isotropic:
        factor = isotropic_factor(job.voxel_size)
    positions, grid = upscale_positions(job.shape[0], factor)
    factor = check_factor(factor)
    shape = (positions.count,) + job.shape[1:]
    job.ready(shape)
    return job, positions, grid, factor, shape


def _upscaled_slices(job, engine, positions, grid):
    """Yields ``(j, raw)`` for the output slices at ``positions``, one chunk of pairs at a time."""
    num_slices = job.shape[0]
    levels = grid.bit_length() - 1
    chunk = max(1, min(engine.batch_size, _CHUNK_GRID // grid))
    next_out = 0
    left_unit = job.unit(0)
    for first in range(0, num_slices - 1, chunk):
        last = min(first + chunk, num_slices - 1)
        dense = {first * grid: left_unit}
        for z in range(first + 1, last + 1):
            dense[z * grid] = job.unit(z)
        engine.fill_grid(dense, first * grid, last * grid, levels)
        final_chunk = last == num_slices - 1
        while next_out < positions.count:
            position = positions[next_out] * grid  # in dense-grid units
            if position >= last * grid and not (final_chunk and position == last * grid):
                break
            if position.denominator == 1 and position.numerator % grid == 0:
                # An input slice: copied, never re-quantised.
                yield next_out, job.source.read(position.numerator // grid)
            else:
                yield next_out, job.resample(dense, position)
            next_out += 1
        left_unit = dense[last * grid]
        engine.forget(keep=(last * grid,))
        del dense
        release_freed_memory()
