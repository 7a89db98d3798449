"""HDF5 volumes: one 3-D dataset of an HDF5 file; reader and writer.

Addresses: ``sample.h5:/volumes/raw`` (also ``.hdf5``, ``.hdf``, ``.he5``). A bare ``sample.h5``
means its ``/volumes/raw`` dataset (what the writer writes by default) or, without one, the file's
only 3-D dataset; any other file needs the ``:/dataset`` part. Datasets are read slice by slice
through h5py. Voxel sizes are read from a ``resolution`` (nm, CREMI style), ``voxel_size`` (nm) or
``element_size_um`` attribute and written as ``resolution``; the writer's dataset is chunked one
slice deep.

Labs keep raw, aligned and derived data as datasets of one file, so writing a dataset never touches
the rest of the file: into an existing HDF5 file the writer adds the dataset under a hidden
temporary name in the same group (``.NAME.HASH-PID.partial``) and renames it when complete
(replacing an existing dataset of that name only with ``overwrite``); only a new file is written
whole under a temporary file name. A path that names a group is refused. Reading and writing the
same file in one process share one h5py handle (HDF5 refuses to open a file for writing while it
is open read-only), so ``file.h5:/volumes/raw`` can be upscaled into ``file.h5:/volumes/up``.

This module imports NumPy and h5py (on use).
"""

import os
import re

import numpy as np

from emzoo.data.volumes.base import Volume, check_dtype, round_size, split_container_path
from emzoo.data.volumes.writer import VolumeWriter, leftovers, report_leftovers, temporary_name
from emzoo.errors import VolumeError, describe

MAGIC = (b"\x89HDF\r\n\x1a\n",)
DEFAULT_DATASET = "/volumes/raw"
_PATTERN = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|hdf|he5))(?::(?P<dataset>.*))?$", re.IGNORECASE)


def split_hdf5_path(path):
    """Splits ``file.h5:/group/dataset`` into ``(file, dataset)``; ``(path, None)`` for other paths.

    The split of :func:`~emzoo.data.volumes.base.split_container_path` (which addresses of any
    format should use), under its HDF5 name: this module's readers and writers call it, and it
    stays public in :mod:`emzoo.data.volumes` for code written against that name.

    Example:
        >>> split_hdf5_path("sample_A.hdf:/volumes/raw")
        ('sample_A.hdf', '/volumes/raw')
        >>> split_hdf5_path("stack.tif")
        ('stack.tif', None)
    """
    return split_container_path(path)


def names(path):
    """Whether ``path`` is an HDF5 address (``file.h5`` with or without ``:/dataset``)."""
    return _PATTERN.match(os.fspath(path)) is not None


class _SharedFile:
    """One h5py handle of a file, shared by the readers and writers of this process."""

    def __init__(self, key, handle):
        self.key, self.handle, self.users, self.generation = key, handle, 0, 0


_SHARED = {}  # real path -> _SharedFile


def _open_shared(file, writable):
    """The shared handle of ``file``, opened (or reopened) for writing when ``writable``.

    Reopening a read-only handle for writing bumps its ``generation``, so readers fetch their
    dataset again. Raises ``OSError`` as h5py does.
    """
    import h5py

    key = os.path.realpath(file)
    entry = _SHARED.get(key)
    if entry is None:
        entry = _SharedFile(key, h5py.File(file, "a" if writable else "r"))
        _SHARED[key] = entry
    elif writable and entry.handle.mode == "r":
        entry.handle.close()
        try:
            entry.handle = h5py.File(file, "a")
        except OSError:
            entry.handle = h5py.File(file, "r")  # the readers keep reading
            raise
        entry.generation += 1
    entry.users += 1
    return entry


def _release(entry):
    entry.users -= 1
    if entry.users <= 0:
        _SHARED.pop(entry.key, None)
        try:
            entry.handle.close()
        except Exception:  # already closed
            pass


def _is_hdf5(file):
    try:
        with open(file, "rb") as handle:
            return handle.read(8) == MAGIC[0]
    except OSError:
        return False


def open_address(path, dataset=None):
    """Opens the dataset ``path`` names (``dataset``, when given, wins over the address's)."""
    return Hdf5Volume(path, dataset)


class Hdf5Volume(Volume):
    """An HDF5 dataset (``file.h5:/volumes/raw``), read slice by slice through h5py."""

    def __init__(self, path, dataset=None):
        import h5py

        file, address_dataset = split_hdf5_path(path)
        dataset = dataset or address_dataset
        if not os.path.exists(file):
            raise FileNotFoundError(f"No such file. Expected an existing HDF5 file. Received: path={file!r}")
        try:
            self._shared = _open_shared(file, writable=False)
        except OSError as error:
            raise VolumeError(describe("Cannot open the HDF5 file (corrupt or not HDF5).",
                                       "a readable HDF5 file", path=file, error=str(error))) from error
        available = _datasets(self._file)
        if not dataset:
            dataset = _default_dataset(self._file, available)
        if not dataset:
            self.close()
            raise VolumeError(describe(
                "The HDF5 path names no dataset, and the file has no /volumes/raw and not exactly one "
                "3-D dataset to use instead.",
                f"an address naming one dataset, like {file}:{available[0] if available else DEFAULT_DATASET}"
                f" (datasets in the file: {', '.join(available) or 'none'})", path=path))
        node = self._file.get(dataset)
        if isinstance(node, h5py.Group):
            self.close()
            raise VolumeError(describe(f"{dataset!r} is a group of the HDF5 file, not a dataset.",
                                       f"a dataset: one of {', '.join(available) or 'no datasets in the file'}",
                                       path=path))
        if node is None or not isinstance(node, h5py.Dataset):
            self.close()
            raise VolumeError(describe(f"Dataset {dataset!r} not found in the HDF5 file.",
                                       f"one of: {', '.join(available) or 'no datasets in the file'}",
                                       path=path))
        shape = node.shape
        if len(shape) == 4 and shape[-1] == 1:
            self._squeeze = True
            shape = shape[:3]
        else:
            self._squeeze = False
        if len(shape) == 2:
            self.close()
            raise VolumeError(describe("A 2-D image was given where a stack of slices is needed.",
                                       "a 3-D (z, y, x) dataset", shape=node.shape, path=path))
        if len(shape) != 3:
            self.close()
            raise VolumeError(describe("Unsupported volume layout (colour or multi-channel stack).",
                                       "a grey-level (z, y, x) dataset", shape=node.shape, path=path))
        try:
            dtype = check_dtype(node.dtype, name="dtype")
        except VolumeError:
            self.close()
            raise
        self._name, self._node, self._generation = dataset, node, self._shared.generation
        super().__init__(f"{file}:{dataset}", shape, dtype, _voxel_size(node))

    @property
    def _file(self):
        return self._shared.handle

    @property
    def _dataset(self):
        if self._generation != self._shared.generation:  # the handle was reopened for writing
            self._node, self._generation = self._shared.handle[self._name], self._shared.generation
        return self._node

    def _read_raw(self, z):
        data = self._dataset[z]
        return data[..., 0] if self._squeeze else data

    def _read_raw_range(self, z0, z1):
        data = self._dataset[z0:z1]
        return data[..., 0] if self._squeeze else data

    def _read_raw_crop(self, z, y, x, height, width):
        data = self._dataset[z, y:y + height, x:x + width]
        return data[..., 0] if self._squeeze else data

    def close(self):
        shared, self._shared = getattr(self, "_shared", None), None
        if shared is not None:
            _release(shared)


def _voxel_size(node):
    """(z, y, x) nm from the dataset's first usable voxel-size attribute, or None."""
    for key in ("resolution", "element_size_um", "voxel_size"):
        if key in node.attrs:
            try:
                values = [float(v) for v in np.ravel(node.attrs[key])]
            except (TypeError, ValueError):
                continue
            if len(values) == 3 and all(v > 0 for v in values):
                scale = 1e3 if key == "element_size_um" else 1.0
                return tuple(round_size(v * scale) for v in values)
    return None


def _datasets(h5file):
    import h5py

    found = []
    h5file.visititems(lambda name, obj: found.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
    return found


def _default_dataset(h5file, available):
    """The dataset a bare ``file.h5`` means: ``/volumes/raw`` (what the writer writes) when present,
    else the file's only 3-D dataset; ``None`` when neither rule picks exactly one."""
    import h5py

    if isinstance(h5file.get(DEFAULT_DATASET), h5py.Dataset):
        return DEFAULT_DATASET
    volumes = [name for name in available if h5file[name].ndim == 3]
    return volumes[0] if len(volumes) == 1 else None


class Hdf5VolumeWriter(VolumeWriter):
    """Writes ``out.h5[:/dataset]`` (default ``/volumes/raw``) with a ``resolution`` attribute in nm.

    Into an existing HDF5 file only the dataset is written (under a temporary name in its group,
    renamed when complete); the file's other datasets and groups are left as they are.
    """

    _entry = None
    _temp_dataset = None

    def _file_of(self, path):
        file, dataset = split_hdf5_path(path)
        self.dataset = "/" + (dataset or DEFAULT_DATASET).strip("/")
        if self.dataset == "/":
            raise VolumeError(describe("An HDF5 output needs a dataset path inside the file.",
                                       f"an address like {file}:{DEFAULT_DATASET}", path=path))
        return file

    def _in_file(self):
        """Whether the output goes into an existing HDF5 file (else a new file is written whole)."""
        return os.path.isfile(self.target) and _is_hdf5(self.target)

    def _exists(self):
        import h5py

        if not self._in_file():
            return os.path.exists(self.target)  # a file in the way that is not HDF5
        try:
            entry = _open_shared(self.target, writable=False)
        except OSError as error:
            raise VolumeError(describe("Cannot open the HDF5 output file (corrupt?).",
                                       "a readable HDF5 file, or a new path", path=self.path,
                                       error=str(error))) from error
        try:
            node = entry.handle.get(self.dataset)
            if isinstance(node, h5py.Group):
                raise VolumeError(describe(
                    f"{self.dataset!r} is a group of {self.target}; writing there would delete what "
                    "it holds.", "a dataset path (new, or an existing dataset with overwrite)",
                    path=self.path))
            return node is not None
        finally:
            _release(entry)

    def _remove_leftovers(self, parent, base):
        super()._remove_leftovers(parent, base)
        if not self._in_file():
            return
        import h5py

        group_path, _, name = self.dataset.rpartition("/")
        try:
            entry = _open_shared(self.target, writable=False)
        except OSError:
            return
        try:
            group = entry.handle.get(group_path or "/")
            names = list(group.keys()) if isinstance(group, h5py.Group) else []
        finally:
            _release(entry)
        stale, in_use = leftovers(names, name)
        if stale:
            entry = _open_shared(self.target, writable=True)
            try:
                for leftover in stale:
                    del entry.handle[f"{group_path}/{leftover}"]
            finally:
                _release(entry)
        report_leftovers([f"{self.target}:{group_path}/{n}" for n in stale],
                         [f"{self.target}:{group_path}/{n}" for n in in_use], self.path)

    def _create(self):
        import h5py

        chunks = (1, min(self.shape[1], 512), min(self.shape[2], 512))
        if self._in_file():
            try:
                self._entry = _open_shared(self.target, writable=True)
            except OSError as error:
                raise VolumeError(describe("Cannot open the HDF5 output file for writing.",
                                           "a writable HDF5 file", path=self.path,
                                           error=str(error))) from error
            group_path, _, name = self.dataset.rpartition("/")
            self._temp_dataset = f"{group_path}/{temporary_name(name)}"
            self._sink = self._entry.handle.create_dataset(self._temp_dataset, shape=self.shape,
                                                           dtype=self.dtype, chunks=chunks)
        else:
            self._h5 = h5py.File(self.temp_path, "w")
            self._sink = self._h5.create_dataset(self.dataset, shape=self.shape, dtype=self.dtype,
                                                 chunks=chunks)
        if self.voxel_size:
            self._sink.attrs["resolution"] = np.asarray(self.voxel_size, np.float64)

    def _store(self, z, data):
        self._sink[z] = data

    def _finish(self):
        if self._entry is None:
            self._h5.close()
            return
        handle = self._entry.handle
        if self.dataset in handle:  # replaced only with overwrite (checked when the writer was made)
            del handle[self.dataset]
        handle.move(self._temp_dataset, self.dataset)
        self._temp_dataset = None
        handle.flush()
        self._drop_entry()

    def _replace_target(self):
        if self._entry is None and self._temp_dataset is None:
            if os.path.exists(self.temp_path):
                super()._replace_target()

    def _drop_entry(self):
        entry, self._entry = self._entry, None
        if entry is not None:
            _release(entry)

    def _remove_temp(self):
        if self._temp_dataset is not None and self._entry is not None:
            try:
                del self._entry.handle[self._temp_dataset]
            except Exception:  # never created, or the file is gone
                pass
            self._temp_dataset = None
        self._drop_entry()
        super()._remove_temp()

    def _release(self):
        if getattr(self, "_h5", None) is not None:
            self._h5.close()


Writer = Hdf5VolumeWriter
