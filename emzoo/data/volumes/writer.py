"""The writer every format's writer extends: checks, temporary name, rename into place, clean-up.

:class:`VolumeWriter` is also the writer factory (``VolumeWriter(path, ...)`` returns the writer of
the format ``path`` names; see :mod:`emzoo.data.volumes`). The conventions (voxel sizes in nm,
atomic writes) are stated in :mod:`emzoo.data.volumes.base`. This module imports NumPy only.
"""

import os
import shutil
import uuid

import numpy as np

from emzoo.data.volumes.base import check_dtype, check_finite, check_voxel_size, denormalise
from emzoo.errors import VolumeError, describe


class VolumeWriter:
    """Writes a volume slice by slice to a temporary name, renamed into place on :meth:`close`.

    The base of every format's writer, and the writer factory: ``VolumeWriter(path, ...)`` is
    :func:`~emzoo.data.volumes.create_volume` ``(path, ...)`` and returns the writer of the format
    ``path`` names (an instance of a subclass). This class holds what all formats share (argument
    checks, the temporary name, ordering, the rename, clean-up on errors), so a patch of
    ``VolumeWriter.write`` reaches every format. A format's subclass implements ``_create()`` (make
    the temporary output at ``self.temp_path``), ``_store(z, data)`` (write one checked slice),
    ``_finish()`` (complete it before the rename) and ``_release()`` (close handles on abort); it may
    override ``_file_of(path)`` (the file an address names) and declare ``OPTIONS`` (its own keyword
    options and their defaults; an option given as ``None`` means its default and every format
    accepts it).

    Args:
        path: the output address (see :mod:`emzoo.data.volumes` for the formats).
        shape: ``(Z, Y, X)`` of the whole output.
        dtype: uint8, uint16 or float32.
        voxel_size: ``(z, y, x)`` nm written into the file's metadata, or ``None``.
        overwrite: replace an existing output (default: refuse with :class:`VolumeError`).
        **options: the format's ``OPTIONS`` (TIFF: ``bigtiff``).

    ``write(raw)`` stores the next slice; ``write(z, raw)`` stores slice ``z``, in any order for
    every format. ``write_normalised`` takes float ``[0, 1]``. Closing with slices missing, or
    leaving the ``with`` block through an exception, deletes the temporary output and leaves any
    existing file untouched.

    Example:
        >>> with VolumeWriter("iso.tif", (97, 520, 520), "uint8", (10, 10, 10)) as out:  # doctest: +SKIP
        ...     for z in range(97):
        ...         out.write(slices[z])
    """

    OPTIONS = {}

    def __init__(self, path, shape, dtype, voxel_size=None, overwrite=False, **options):
        self._closed = True  # until the temporary output exists (__del__ and abort rely on it)
        self.path = os.fspath(path)
        try:
            self.shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError) as error:
            raise VolumeError(describe("Invalid value for argument `shape`.", "(Z, Y, X) positive integers",
                                       shape=shape)) from error
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise VolumeError(describe("Invalid value for argument `shape`.", "(Z, Y, X) positive integers",
                                       shape=shape))
        self.dtype = check_dtype(dtype)
        self.voxel_size = check_voxel_size(voxel_size)
        given = {name: value for name, value in options.items() if value is not None}  # None: the default
        unknown = sorted(set(given) - set(self.OPTIONS))
        if unknown:
            raise VolumeError(describe(f"Unknown option for {type(self).__name__}.",
                                       f"one of: {', '.join(self.OPTIONS) or 'no options'}",
                                       option=unknown[0]))
        self.options = {**self.OPTIONS, **given}
        self.target = os.path.abspath(self._file_of(self.path))
        if os.path.exists(self.target) and not overwrite:
            raise VolumeError(describe("The output already exists.", "a new path, or overwrite=True "
                                       "(--overwrite)", path=self.target))
        parent = os.path.dirname(self.target)
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"The output folder does not exist. Expected an existing folder. "
                                    f"Received: folder={parent!r}")
        base = os.path.basename(self.target.rstrip(os.sep))
        self.temp_path = os.path.join(parent, f".{base}.{uuid.uuid4().hex[:8]}.partial")
        self._written = np.zeros(self.shape[0], bool)
        self._next = 0
        try:
            self._create()
        except BaseException:
            self._remove_temp()
            raise
        self._closed = False

    # A format's writer implements these (and may override _file_of).
    def _file_of(self, path):
        return path

    def _create(self):
        raise NotImplementedError

    def _store(self, z, data):
        raise NotImplementedError

    def _finish(self):
        pass

    def _release(self):
        pass

    def write(self, *args):
        """``write(raw_slice)`` appends; ``write(z, raw_slice)`` writes slice ``z``.

        ``raw_slice`` is ``(Y, X)`` (or ``(Y, X, 1)``) in the writer's dtype; float input for an
        integer output is refused (use :meth:`write_normalised`).
        """
        if len(args) == 1:
            z, data = self._next, args[0]
        elif len(args) == 2:
            z, data = args
        else:
            raise TypeError("write(raw_slice) or write(z, raw_slice)")
        if self._closed:
            raise VolumeError(describe("The writer is closed.", "writes before close()", path=self.path))
        z = int(z)
        if not 0 <= z < self.shape[0]:
            raise VolumeError(describe("Slice index out of range.", f"0 <= z < {self.shape[0]}", z=z,
                                       path=self.path))
        data = np.asarray(data)
        if data.ndim == 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.shape != self.shape[1:]:
            raise VolumeError(describe("Slice shape does not match the output.", f"shape {self.shape[1:]}",
                                       shape=data.shape, z=z))
        if data.dtype != self.dtype:
            if data.dtype.kind == "f" and self.dtype.kind != "f":
                raise VolumeError(describe("Float slice given for an integer output.",
                                           f"{self.dtype} values (or write_normalised for [0, 1] floats)",
                                           dtype=str(data.dtype)))
            data = data.astype(self.dtype)
        check_finite(data, f"slice {z} written to {self.path}")
        self._store(z, data)
        self._written[z] = True
        self._next = z + 1

    def write_normalised(self, *args):
        """Like :meth:`write` for float ``[0, 1]`` data: clips, rounds to the output dtype, writes."""
        if len(args) == 1:
            return self.write(denormalise(args[0], self.dtype))
        z, data = args
        return self.write(z, denormalise(data, self.dtype))

    def close(self):
        """Finishes the file and renames it into place; raises if slices are missing (output removed)."""
        if self._closed:
            return
        missing = np.flatnonzero(~self._written)
        if missing.size:
            self.abort()
            raise VolumeError(describe(f"{missing.size} slices were never written; no output was kept.",
                                       f"all {self.shape[0]} slices written before close",
                                       first_missing=int(missing[0]), path=self.path))
        self._publish(self._finish)

    def _publish(self, finish):
        """Runs ``finish()`` on the temporary output, then renames it into place; on any error
        (or interruption) the temporary output is removed instead and the error raised."""
        try:
            finish()
            self._closed = True
            self._replace_target()
        except BaseException:
            self._closed = True
            self._remove_temp()
            raise

    def _replace_target(self):
        if os.path.isdir(self.target) and not os.path.islink(self.target):
            trash = f"{self.temp_path}.old"
            os.replace(self.target, trash)
            os.replace(self.temp_path, self.target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.temp_path, self.target)

    def abort(self):
        """Discards everything written; the destination is left as it was."""
        if self._closed:
            return
        self._closed = True
        try:
            self._release()
        except Exception:
            pass
        self._remove_temp()

    def _remove_temp(self):
        if os.path.isdir(self.temp_path):
            shutil.rmtree(self.temp_path, ignore_errors=True)
        elif os.path.exists(self.temp_path):
            try:
                os.remove(self.temp_path)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def __del__(self):
        try:
            if not self._closed:
                self.abort()
        except Exception:
            pass
