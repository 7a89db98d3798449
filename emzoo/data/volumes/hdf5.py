"""HDF5 volumes: one 3-D dataset of an HDF5 file; reader and writer.

Addresses: ``sample.h5:/volumes/raw`` (also ``.hdf5``, ``.hdf``, ``.he5``). A bare ``sample.h5``
means its ``/volumes/raw`` dataset (what the writer writes by default) or, without one, the file's
only 3-D dataset; any other file needs the ``:/dataset`` part. Datasets are read slice by slice
through h5py. Voxel sizes are read from a ``resolution`` (nm, CREMI style), ``voxel_size`` (nm) or
``element_size_um`` attribute and written as ``resolution``; the writer's dataset is chunked one
slice deep.

This module imports NumPy and h5py (on use).
"""

import os
import re

import numpy as np

from emzoo.data.volumes.base import Volume, check_dtype, round_size, split_container_path
from emzoo.data.volumes.writer import VolumeWriter
from emzoo.errors import VolumeError, describe

MAGIC = (b"\x89HDF\r\n\x1a\n",)
DEFAULT_DATASET = "/volumes/raw"
_PATTERN = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|hdf|he5))(?::(?P<dataset>.*))?$", re.IGNORECASE)


def split_hdf5_path(path):
    """Splits ``file.h5:/group/dataset`` into ``(file, dataset)``; ``(path, None)`` for other paths.

    Example:
        >>> split_hdf5_path("sample_A.hdf:/volumes/raw")
        ('sample_A.hdf', '/volumes/raw')
        >>> split_hdf5_path("stack.tif")
        ('stack.tif', None)
    """
    return split_container_path(path)  # also splits Zarr / N5 addresses, for callers of any container


def names(path):
    """Whether ``path`` is an HDF5 address (``file.h5`` with or without ``:/dataset``)."""
    return _PATTERN.match(os.fspath(path)) is not None


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
            self._file = h5py.File(file, "r")
        except OSError as error:
            raise VolumeError(describe("Cannot open the HDF5 file (corrupt or not HDF5).",
                                       "a readable HDF5 file", path=file, error=str(error))) from error
        available = _datasets(self._file)
        if not dataset:
            dataset = _default_dataset(self._file, available)
        if not dataset:
            self._file.close()
            raise VolumeError(describe(
                "The HDF5 path names no dataset, and the file has no /volumes/raw and not exactly one "
                "3-D dataset to use instead.",
                f"an address naming one dataset, like {file}:{available[0] if available else DEFAULT_DATASET}"
                f" (datasets in the file: {', '.join(available) or 'none'})", path=path))
        node = self._file.get(dataset)
        if node is None or not isinstance(node, h5py.Dataset):
            self._file.close()
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
            self._file.close()
            raise VolumeError(describe("A 2-D image was given where a stack of slices is needed.",
                                       "a 3-D (z, y, x) dataset", shape=node.shape, path=path))
        if len(shape) != 3:
            self._file.close()
            raise VolumeError(describe("Unsupported volume layout (colour or multi-channel stack).",
                                       "a grey-level (z, y, x) dataset", shape=node.shape, path=path))
        try:
            dtype = check_dtype(node.dtype, name="dtype")
        except VolumeError:
            self._file.close()
            raise
        super().__init__(f"{file}:{dataset}", shape, dtype, _voxel_size(node))
        self._dataset = node

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
        try:
            self._file.close()
        except Exception:  # already closed
            pass


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
    """Writes ``out.h5[:/dataset]`` (default ``/volumes/raw``) with a ``resolution`` attribute in nm."""

    def _file_of(self, path):
        file, dataset = split_hdf5_path(path)
        self.dataset = dataset or DEFAULT_DATASET
        return file

    def _create(self):
        import h5py

        self._h5 = h5py.File(self.temp_path, "w")
        chunks = (1, min(self.shape[1], 512), min(self.shape[2], 512))
        self._sink = self._h5.create_dataset(self.dataset, shape=self.shape, dtype=self.dtype, chunks=chunks)
        if self.voxel_size:
            self._sink.attrs["resolution"] = np.asarray(self.voxel_size, np.float64)

    def _store(self, z, data):
        self._sink[z] = data

    def _finish(self):
        self._h5.close()

    def _release(self):
        if getattr(self, "_h5", None) is not None:
            self._h5.close()


Writer = Hdf5VolumeWriter
