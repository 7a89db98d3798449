"""``upscale_volume``: z-upscaling of a whole volume, streamed chunk by chunk.

A chunk is a few neighbouring input pairs and their recursion trees: enough first-level midpoints
to fill a batch, and never more than a bounded number of dense-grid slices, whatever the length of
the volume. Each chunk's output slices are written before the next chunk is read.
"""

from emzoo.engine.job import Job
from emzoo.engine.memory import release_freed_memory
from emzoo.engine.midpoint import MidpointEngine, resolve_model
from emzoo.engine.positions import check_factor, isotropic_factor, upscale_positions

_CHUNK_GRID = 64  # dense-grid slices per chunk of input pairs (bounds memory)


def upscale_volume(volume, model, factor=2, output=None, isotropic=False, tile=None, overlap=32,
                   batch_size=None, voxel_size=None, overwrite=False, progress=True,
                   reuse_features=None, jit_compile="auto"):
    """Upscales ``volume`` along z by ``factor`` (or to isotropic voxels) with ``model``.

    See :mod:`emzoo.engine` for the method (recursive midpoints to the next power of two, then
    linear resampling at the exact positions j / factor).

    Args:
        volume: a path (TIFF, HDF5, slice folder), a NumPy array (Z, Y, X) or a Volume.
        model: an emzoo interpolator, or a registered name / saved model folder to load.
        factor: number >= 1 (2, 4, 8, 3, 2.5, ...). Ignored when ``isotropic``.
        output: path to write (TIFF or HDF5, by extension); ``None`` returns the array.
        isotropic: use factor = z spacing / x spacing (needs a voxel size in the file or
            ``voxel_size``).
        tile, overlap: process slices larger than ``tile`` pixels in tiles overlapping by
            ``overlap`` pixels (``None``: whole slices).
        batch_size: tile pairs per model call; ``None`` picks
            :func:`~emzoo.engine.policy.default_batch_size` (4 with a GPU, 1 on CPU).
        voxel_size: (z, y, x) in nm, replacing the file's.
        overwrite: replace an existing ``output``.
        progress: show a progress bar and print a summary line (stderr).
        reuse_features: compute FILM features once per slice (default: when the model can).
        jit_compile: XLA-compile model calls (TensorFlow backend): True, False or ``"auto"``
            (XLA for FILM on long jobs, where it is faster; see
            :func:`~emzoo.engine.policy.resolve_jit_compile`).

    Returns:
        The upscaled array (input dtype) when ``output`` is None, else a dict summary with
        ``output``, ``input_shape``, ``output_shape``, ``dtype``, ``voxel_size``, ``factor``,
        ``seconds`` and ``summary`` (the line printed).

    Example:
        >>> out = upscale_volume(np.zeros((3, 32, 48), np.uint8), model, factor=2.5)  # doctest: +SKIP
        >>> out.shape                                                                  # doctest: +SKIP
        (6, 32, 48)
    """
    job = Job(volume, output, overwrite, voxel_size, progress, minimum_slices=2)
    if isotropic:
        factor = isotropic_factor(job.voxel_size)
    positions, grid = upscale_positions(job.shape[0], factor)
    factor = check_factor(factor)
    voxel_in = job.voxel_size
    voxel_out = None if voxel_in is None else (voxel_in[0] / float(factor),) + voxel_in[1:]
    engine = MidpointEngine(resolve_model(model), job.shape[1], job.shape[2], tile, overlap,
                            batch_size, reuse_features, jit_compile,
                            expected_pairs=(job.shape[0] - 1) * (grid - 1))
    return job.write(_upscaled_slices(job, engine, positions, grid),
                     (len(positions),) + job.shape[1:], voxel_out, "upscale",
                     f"upscale x{float(factor):g}", factor=float(factor))


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
        while next_out < len(positions):
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
