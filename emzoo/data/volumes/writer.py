"""The writer every format's writer extends: checks, temporary name, rename into place, clean-up.

:class:`VolumeWriter` is a base class, never used itself: each format's module subclasses it, and
:func:`emzoo.data.volumes.create_volume` returns the subclass instance of the format a path names
(:func:`emzoo.data.volumes.writer_class`). The conventions (voxel sizes in nm, atomic writes) are
stated in :mod:`emzoo.data.volumes.base`.

Before it creates anything a writer refuses an output that is one of the volumes this process is
reading (:func:`check_not_input`; ``overwrite`` never replaces an input) and an output folder it
cannot write in (:func:`check_writable`), and removes what killed runs left of the same output
(hidden ``.NAME.HASH-PID.partial`` files or folders whose process is gone; one line on stderr says
so). This module imports NumPy only.
"""

import errno
import os
import re
import shutil
import sys
import tempfile
import uuid

import numpy as np

from emzoo.data.volumes.base import (check_dtype, check_finite, check_voxel_size, denormalise,
                                     open_inputs, split_container_path)
from emzoo.errors import VolumeError, describe

_HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_not_input(input_address, output_address):
    """Refuses an output that would replace the input volume (even with ``overwrite``).

    An HDF5 output replaces only its own dataset, so it is refused when it names the input's
    dataset in the same file; the other formats replace the whole file, folder or store, so they
    are refused when it is the input's (a Zarr or N5 output into the store that holds the input
    array would delete that array). Files are compared as files (links and relative paths
    resolved). A bare HDF5 input address (no ``:/dataset``) means its ``/volumes/raw`` here; the
    face's :func:`emzoo.data.volumes.check_not_input` first resolves it as the reader does.
    Returns ``None``; raises :class:`VolumeError`.

    Example:
        >>> check_not_input("stack.tif", "stack.tif")  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        emzoo.errors.VolumeError: The output is the input volume itself: writing it would replace ...
    """
    in_file, in_inner = split_container_path(os.fspath(input_address))
    out_file, out_inner = split_container_path(os.fspath(output_address))
    if not os.path.exists(in_file) or not _same_file(in_file, out_file):
        return
    if out_file.lower().endswith(_HDF5_SUFFIXES):
        out_dataset = "/" + (out_inner or "/volumes/raw").strip("/")
        if "/" + (in_inner or "/volumes/raw").strip("/") != out_dataset:
            return  # another dataset of the same file: written beside the input, which stays
        problem = f"The output is the input volume itself ({out_file}:{out_dataset})"
    elif in_inner and (out_inner or "").strip("/") != in_inner.strip("/"):
        problem = (f"The output store {out_file} holds the input {input_address}, and a Zarr / N5 "
                   "output replaces its whole store")
    else:
        problem = f"The output is the input volume itself ({out_file})"
    raise VolumeError(describe(f"{problem}: writing it would replace the data being read, even with "
                               "`overwrite`.", "an output path other than the input",
                               input=os.fspath(input_address), output=os.fspath(output_address)))


def check_writable(output_address):
    """Refuses an output whose folder is missing or not writable, naming the output as given.

    Called before any work (and by every writer), so a read-only folder is reported at once rather
    than when the first temporary file is made. Returns the folder.

    Example:
        >>> check_writable("/proc/out.tif")  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        emzoo.errors.VolumeError: Cannot write in the output folder /proc. Expected a folder you may ...
    """
    file = split_container_path(os.fspath(output_address))[0]
    folder = os.path.dirname(os.path.abspath(file.rstrip(os.sep) or file))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"The output folder does not exist. Expected an existing folder. "
                                f"Received: folder={folder!r}")
    problem = None if os.access(folder, os.W_OK | os.X_OK) else "permission denied"
    if problem is None:  # root passes os.access; read-only mounts and immutable folders do not
        try:
            handle, probe = tempfile.mkstemp(prefix=".emzoo-write-check-", dir=folder)
            os.close(handle)
            os.remove(probe)
        except OSError as error:
            problem = os.strerror(error.errno) if error.errno else str(error)
    if problem is not None:
        raise VolumeError(describe(f"Cannot write in the output folder {folder} ({problem.lower()}).",
                                   "a folder you may write in", output=os.fspath(output_address)))
    return folder


def temporary_name(name):
    """The hidden temporary name of ``name`` while it is written: ``.NAME.HASH-PID.partial``.

    The process id lets a later run tell a leftover of a killed run (process gone) from an output
    another process is still writing.

    Example:
        >>> temporary_name("iso.tif")  # doctest: +SKIP
        '.iso.tif.3f2a9c01-41817.partial'
    """
    return f".{name}.{uuid.uuid4().hex[:8]}-{os.getpid()}.partial"


def _leftover_pattern(name):
    return re.compile(rf"^\.{re.escape(name)}\.[0-9a-f]{{8}}(?:-(?P<pid>\d+))?\.partial(?:\.old)?$")


def _alive(pid):
    if pid is None:
        return False
    pid = int(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process
    return True


def leftovers(names, name):
    """Which of ``names`` (entries of a folder or HDF5 group) are temporary outputs of ``name``
    left by runs whose process is gone: ``(stale, in_use)`` lists.

    Example:
        >>> leftovers([".iso.tif.3f2a9c01-999999999.partial", "iso.tif"], "iso.tif")
        (['.iso.tif.3f2a9c01-999999999.partial'], [])
    """
    pattern = _leftover_pattern(name)
    stale, in_use = [], []
    for entry in names:
        match = pattern.match(entry)
        if match:
            (in_use if _alive(match.group("pid")) else stale).append(entry)
    return stale, in_use


def report_leftovers(removed, in_use, where):
    """One line on stderr about the temporary outputs of earlier runs removed (or left in use)."""
    if removed:
        print(f"emzoo: removed {len(removed)} unfinished output(s) of an earlier run of {where}: "
              f"{', '.join(removed)}", file=sys.stderr)
    if in_use:
        print(f"emzoo: left {', '.join(in_use)} in place: another process is writing {where} now "
              "(or it could not be removed)", file=sys.stderr)


class VolumeWriter:
    """Writes a volume slice by slice to a temporary name, renamed into place on :meth:`close`.

    The base class of every format's writer (``TiffVolumeWriter``, ``Hdf5VolumeWriter``, ...; each
    format module's ``Writer``), not itself a writer of any format: make one with
    :func:`~emzoo.data.volumes.create_volume`, which picks the subclass of the format ``path``
    names. This class holds what all formats share (argument checks, the temporary name, ordering,
    the rename, clean-up on errors), so a patch of ``VolumeWriter.write`` reaches every format.
    A format's subclass implements ``_create()`` (make the temporary output at ``self.temp_path``),
    ``_store(z, data)`` (write one checked slice), ``_finish()`` (complete it before the rename)
    and ``_release()`` (close handles on abort); it may override ``_file_of(path)`` (the file an
    address names) and declare ``OPTIONS`` (its own keyword options and their defaults; an option
    given as ``None`` means its default and every format accepts it).

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
        >>> out = create_volume("iso.tif", (97, 520, 520), "uint8", (10, 10, 10))  # doctest: +SKIP
        >>> type(out).__name__, isinstance(out, VolumeWriter)                 # doctest: +SKIP
        ('TiffVolumeWriter', True)
        >>> with out:                                                          # doctest: +SKIP
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
        self.overwrite = bool(overwrite)
        self.target = os.path.abspath(self._file_of(self.path))
        for source in open_inputs():
            check_not_input(source, self.path)
        parent = check_writable(self.path)
        if self._exists() and not overwrite:
            raise VolumeError(describe("The output already exists.", "a new path, or overwrite=True "
                                       "(--overwrite)", path=self.path))
        base = os.path.basename(self.target.rstrip(os.sep))
        self._remove_leftovers(parent, base)
        self.temp_path = os.path.join(parent, temporary_name(base))
        self._written = np.zeros(self.shape[0], bool)
        self._next = 0
        try:
            self._create()
        except OSError as error:
            self._remove_temp()
            if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            raise VolumeError(describe(f"Cannot write in the output folder {parent} "
                                       f"({os.strerror(error.errno).lower()}).", "a folder you may "
                                       "write in", output=self.path)) from error
        except BaseException:
            self._remove_temp()
            raise
        self._closed = False

    # A format's writer implements these (and may override _file_of, _exists and _remove_leftovers).
    def _file_of(self, path):
        return path

    def _exists(self):
        """Whether the output exists already (HDF5: its dataset, not merely the file)."""
        return os.path.exists(self.target)

    def _remove_leftovers(self, parent, base):
        """Removes the temporary outputs killed runs left for this output (see :func:`leftovers`)."""
        try:
            stale, in_use = leftovers(os.listdir(parent), base)
        except OSError:
            return
        removed = []
        for name in stale:
            path = os.path.join(parent, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed.append(path)
            except OSError:
                in_use.append(name)
        report_leftovers(removed, [os.path.join(parent, name) for name in in_use], self.path)

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
