"""What upscaling and repair share: the checked input and output, resampling, writing, reporting.

A :class:`Job` opens and checks its input and output (:meth:`Job.ready` once the output shape is
known); the job plans (:mod:`~emzoo.engine.plan`) are made from it. The jobs then produce
``(z, raw slice)`` pairs in output order; :func:`write_slices` streams them to the output (or
into an array) and reports progress.
"""

import errno
import math

import numpy as np

from emzoo.data.volumes import create_volume, denormalise
from emzoo.engine.progress import job_progress
from emzoo.engine.sources import (check_output, check_output_size, check_volume, open_source,
                                  source_voxel_size)
from emzoo.errors import JobCancelled, VolumeError, describe


class Job:
    """A volume job's input and output, checked: its source, shape, dtype and voxel size.

    Args:
        volume: a path (TIFF, HDF5, slice folder), a NumPy array (Z, Y, X) or a Volume.
        output: path to write; ``None`` keeps the result in memory.
        overwrite: an existing ``output`` may be replaced.
        voxel_size: (z, y, x) in nm replacing the file's, or ``None``.
        minimum_slices: the fewest input slices the job can work with.
        allow_incomplete: read an input that is the unfinished output of an emzoo job.
    """

    def __init__(self, volume, output, overwrite, voxel_size, minimum_slices=2,
                 allow_incomplete=False):
        self.output = check_output(output, overwrite, volume)
        self.source = open_source(volume, allow_incomplete)
        self.shape = check_volume(self.source, minimum_slices)
        self.dtype = np.dtype(self.source.dtype)
        self.voxel_size = source_voxel_size(self.source, voxel_size)

    def ready(self, shape, remedy="a smaller factor"):
        """Checks, before any work, that an output of ``shape`` can be made, then reads what the
        input's normalisation needs (a float volume's value range, which refuses NaN / Inf):
        returns that range as two floats, or ``None`` for integer data."""
        check_output_size(shape, self.dtype, self.output, remedy)
        value_range = getattr(self.source, "value_range", None)
        if self.dtype.kind != "f" or not callable(value_range):
            return None
        return tuple(float(v) for v in value_range())


def unit(source, z):
    """Input slice ``z`` of ``source`` as the engine's (H, W, 1) float32 in [0, 1]."""
    return np.asarray(source.slice(z), np.float32)[..., None]


def write_slices(plan, slices, progress=True, cancel=None):
    """Writes the ``(z, raw)`` pairs of ``slices`` to ``plan``'s output (or into an array);
    returns ``(array or None, seconds)``.

    I/O errors become one VolumeError; a set ``cancel`` event stops the job between two slices
    (:class:`~emzoo.errors.JobCancelled`), and the output's temporary name is removed.
    """
    bar = job_progress(progress, plan.output_shape[0], plan.job)
    writer = _open_writer(plan.output, plan.output_shape, plan.dtype, plan.output_voxel_size,
                          plan.overwrite, plan.chunks)
    try:
        with writer:
            for z, raw in slices:
                if cancel is not None and cancel.is_set():
                    raise JobCancelled(None)
                writer.write(z, raw)
                bar.update()
    except OSError as error:
        raise _disk_error(error, plan.output, plan.output_shape, plan.dtype) from None
    bar.close()
    return (writer.array if plan.output is None else None), bar.seconds


def resample(dense, position, source, dtype):
    """The raw slice (``dtype``) at ``position`` (a fraction, dense-grid units) of the grid slices
    ``dense`` (key -> (H, W, 1) float32 in [0, 1]), mapped back to ``source``'s values.

    A position on the grid takes that slice; any other is the linear interpolation of the two
    nearest grid slices (weights by distance along z). The single-process and the blockwise
    engines both resample here, so they give the same values.

    Example:
        >>> from fractions import Fraction
        >>> dense = {0: np.zeros((1, 1, 1), np.float32), 1: np.ones((1, 1, 1), np.float32)}
        >>> resample(dense, Fraction(1, 4), None, np.uint8).tolist()
        [[64]]
    """
    below = math.floor(position)
    weight = float(position - below)
    unit = dense[below] if weight == 0 else (
        (1.0 - weight) * dense[below] + weight * dense[below + 1])
    back = getattr(source, "denormalise_raw", None)  # the inverse of the source's mapping
    raw = back(unit[..., 0]) if callable(back) else denormalise(unit[..., 0], dtype)
    return np.asarray(raw).astype(dtype, copy=False)


class _ArrayWriter:
    """Collects output slices into a NumPy array (the ``output=None`` case)."""

    def __init__(self, shape, dtype):
        self.array = np.empty(shape, dtype)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, z, raw):
        self.array[z] = raw


def _open_writer(output, shape, dtype, voxel_size, overwrite, chunks=None):
    if output is None:
        return _ArrayWriter(shape, dtype)
    return create_volume(output, shape, dtype, voxel_size, overwrite=overwrite, chunks=chunks)


def _disk_error(error, output, shape, dtype):
    """An OSError while writing, as a VolumeError saying what happened and what is needed."""
    size_mb = int(np.prod(shape)) * np.dtype(dtype).itemsize / 1e6
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        problem = f"The disk ran out of space while writing {output}; nothing was written."
    else:
        problem = (f"Writing {output} failed ({' '.join(str(error).split())}); "
                   "nothing was written.")
    return VolumeError(describe(problem, f"about {size_mb:.0f} MB of free space in the output "
                                          "folder", output=str(output)))


def summary_line(kind, source_shape, shape, dtype, voxel_in, voxel_out, seconds, output):
    """A job's one-line summary (both engines end with it).

    Example:
        >>> summary_line("upscale x2", (3, 8, 8), (5, 8, 8), "uint8", (20, 10, 10), (10, 10, 10), 1.0, None)
        'upscale x2: (3, 8, 8) -> (5, 8, 8) uint8, voxel 20x10x10 nm -> 10x10x10 nm, 1.0 s, (array)'
    """
    where = output if output is not None else "(array)"

    def fmt(v):
        return "unknown" if v is None else "x".join(f"{x:g}" for x in v) + " nm"
    return (f"{kind}: {tuple(source_shape)} -> {tuple(shape)} {np.dtype(dtype).name}, voxel "
            f"{fmt(voxel_in)} -> {fmt(voxel_out)}, {seconds:.1f} s, {where}")
