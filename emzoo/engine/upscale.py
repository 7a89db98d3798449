"""``upscale_volume``: z-upscaling of a whole volume, streamed chunk by chunk.

A chunk is a few neighbouring input pairs and their recursion trees: enough first-level midpoints
to fill a batch, and never more than a bounded number of dense-grid slices, whatever the length of
the volume. Each chunk's output slices are written before the next chunk is read.
:func:`upscale_volume` is the one-call form of :func:`~emzoo.engine.plan_upscale` then
:func:`~emzoo.engine.run`.
"""

from emzoo.engine.plan import Blockwise, EngineOptions, plan_upscale
from emzoo.engine.runner import run

def upscale_volume(volume, model, factor=None, output=None, isotropic=False, tile=None,
                   overlap=32, batch_size=None, voxel_size=None, overwrite=False, progress=True,
                   reuse_features=None, jit_compile="auto", precision="float32", workers=None,
                   scheduler=None, resume=False, allow_incomplete=False, chunks=None,
                   block_size=None, calibrate=True):
    """Upscales ``volume`` along z by ``factor`` (or to isotropic voxels) with ``model``.

    See :mod:`emzoo.engine` for the method (recursive midpoints to the next power of two, then
    linear resampling at the exact positions j / factor). The keyword arguments are those of
    :func:`~emzoo.engine.plan_upscale`, :class:`~emzoo.engine.EngineOptions` and
    :class:`~emzoo.engine.Blockwise`, flattened; everything is checked before any work.

    Args:
        volume: a path (TIFF, HDF5, slice folder), a NumPy array (Z, Y, X) or a Volume.
        model: an emzoo interpolator, or a registered name / saved model folder to load.
        factor: number >= 1 (2, 4, 8, 3, 2.5, ...; default 2); excludes ``isotropic``.
        output: path to write (TIFF, HDF5 or a folder, by the name); ``None`` keeps the result in
            memory (``result["array"]``).
        isotropic: use factor = z spacing / x spacing (needs a voxel size in the file or
            ``voxel_size``).
        tile, overlap: process slices larger than ``tile`` pixels in tiles overlapping by
            ``overlap`` pixels (``None``: slices up to
            :data:`~emzoo.engine.plan.WHOLE_SLICE_MAX` pixels whole, larger ones in tiles of
            :data:`~emzoo.engine.plan.DEFAULT_TILE`).
        batch_size: tile pairs per model call; ``None`` picks
            :func:`~emzoo.engine.policy.default_batch_size` (4 with a GPU, 1 on CPU).
        voxel_size: (z, y, x) in nm, replacing the file's.
        overwrite: replace an existing ``output``.
        progress: show a progress bar (stderr); a callable is called as ``progress(done, total)``
            instead.
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
            format's, :func:`~emzoo.data.volumes.chunked.default_chunks`).
        block_size: blockwise only (with ``workers`` or ``scheduler``): (y, x) pixels of a block,
            rounded up to whole chunks (default :data:`~emzoo.engine.blocks.DEFAULT_REGION`).
        calibrate: first weigh the model against linear interpolation on the input itself, per
            recursion level (a few extra model calls; :mod:`~emzoo.engine.calibration`), so that
            a model is not trusted where this volume shows it does worse than linear (e.g. pixels
            much coarser than its training data); ``False`` runs the model's midpoints as they are.

    Returns:
        :meth:`JobResult.to_dict() <emzoo.engine.JobResult.to_dict>`, the same kind of result
        with or without ``output``: a dict with ``output`` (the path
        written, or ``None``), ``array`` (the upscaled volume in the input dtype when ``output``
        is ``None``, else ``None``), ``input_shape``, ``output_shape``, ``dtype``, ``voxel_size``
        (the output's, or ``None``), ``factor``, ``precision`` (the one the model ran in),
        ``seconds``, ``summary`` (one line) and ``residual_scales`` (the weights calibration
        fitted, level 1 first, or ``None``). The blockwise engine adds ``blocks``, ``computed``,
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
    options = EngineOptions(tile, overlap, batch_size, reuse_features, jit_compile, precision,
                            calibrate)
    plan = plan_upscale(volume, factor, output, isotropic=isotropic, voxel_size=voxel_size,
                        options=options, blockwise=blockwise_of(workers, scheduler, block_size, resume),
                        overwrite=overwrite, allow_incomplete=allow_incomplete, chunks=chunks)
    return run(plan, model, progress).to_dict()


def blockwise_of(workers, scheduler, block_size, resume):
    """The :class:`~emzoo.engine.plan.Blockwise` the keyword arguments of ``upscale_volume`` /
    ``repair_volume`` ask for, or ``None`` (one process)."""
    if workers is None and scheduler is None and block_size is None and not resume:
        return None
    return Blockwise(workers, scheduler, block_size, resume)
