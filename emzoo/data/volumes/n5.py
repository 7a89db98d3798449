"""N5 datasets (what BigDataViewer, n5-viewer and Janelia pipelines write); reader and writer.

Addresses: ``volume.n5:/path/to/dataset``. A bare ``volume.n5``, or an address naming a group, means
its only 3-D dataset, else its only 3-D dataset named ``s0`` (level 0 of a BigDataViewer / n5-viewer
multiscale, e.g. ``setup0/timepoint0/s0``). N5 lists dimensions fastest first, ``(x, y, z)``; volumes
here are ``(z, y, x)`` as everywhere in emzoo. Voxel sizes come from the dataset's (else the nearest
parent group's) ``pixelResolution`` (``{"dimensions": (x, y, z), "unit"}``) or ``resolution``
((x, y, z) nm), times the dataset's ``downsamplingFactors`` when the size came from a group. Reads
are lazy (a slice or a crop reads only the blocks it touches).

The writer writes a new container: the dataset ``raw`` (``out.n5``) or the path given
(``out.n5:/setup0/timepoint0/s0``), gzip blocks (``chunks`` option, (z, y, x); by default up to 8
slices deep and 256 x 256 wide) written a whole z-block row at a time, with ``pixelResolution``
and ``resolution`` in nm, and an ``"emzoo"`` attribute saying whether the output is complete (see
:mod:`~emzoo.data.volumes.chunked`); :func:`open_regions` reopens an existing dataset for
writing in place, region by region (the blockwise engine).

TensorStore is the library (``pip install 'emzoo[n5]'``): zarr-python 3 dropped N5, zarr-python 2's
``N5Store`` cannot be installed beside zarr-python 3 (needed for Zarr v3 and OME-Zarr 0.5), and
z5py and pyn5 are not kept on PyPI; TensorStore (Google, released monthly) reads and writes N5 with
its raw, gzip, bzip2, xz, blosc and zstd blocks, as wheels.

This module imports NumPy, and tensorstore (on use).
"""

import json
import os

import numpy as np

from emzoo.data.volumes.base import round_size, split_container_path
from emzoo.data.volumes.chunked import (MARKER, ChunkedRegions, ChunkedVolume, ChunkedVolumeWriter,
                                        attribute_voxel_size, check_layout, default_array,
                                        join_path, require, suffix_names)
from emzoo.errors import VolumeError, describe

MAGIC = ()  # a container is a folder
SUFFIXES = (".n5",)
DEFAULT_DATASET = "raw"
N5_VERSION = "2.0.0"  # the spec version written into the root's attributes.json
_ATTRIBUTES = "attributes.json"

names = suffix_names(SUFFIXES)


def open_address(path, dataset=None):
    """Opens the dataset ``path`` names (``dataset``, when given, wins over the address's path)."""
    return N5Volume(path, dataset)


def _attributes(folder):
    """The folder's ``attributes.json`` as a dict (empty when there is none)."""
    file = os.path.join(folder, _ATTRIBUTES)
    if not os.path.isfile(file):
        return {}
    try:
        with open(file, encoding="utf-8") as handle:
            found = json.load(handle)
    except (OSError, ValueError) as error:
        raise VolumeError(describe("Cannot read the N5 attributes (corrupt JSON).", "a readable attributes.json",
                                   path=file, error=str(error))) from None
    return found if isinstance(found, dict) else {}


def _datasets(folder):
    """``(path relative to folder, number of dimensions)`` of every dataset under ``folder``."""
    found = []
    for where, dirs, _ in os.walk(folder):
        dirs.sort()
        attrs = _attributes(where)
        if isinstance(attrs.get("dimensions"), list):
            relative = os.path.relpath(where, folder)
            found.append(("" if relative == "." else relative.replace(os.sep, "/"), len(attrs["dimensions"])))
            dirs[:] = []  # a dataset's subfolders are its blocks
    return found


class N5Volume(ChunkedVolume):
    """A 3-D dataset of an N5 container, read lazily through TensorStore.

    Attributes (besides :class:`~emzoo.data.volumes.base.Volume`'s):
        folder: the dataset's folder in the container.
        rank: the number of dimensions the dataset stores (3, or more with axes of size 1).
        chunks: the ``(z, y, x)`` block shape.

    Example:
        >>> N5Volume("volume.n5:/setup0/timepoint0/s0").chunks          # doctest: +SKIP
        (8, 256, 256)
    """

    def __init__(self, path, dataset=None):
        ts = require("tensorstore", "n5", "Reading N5")
        store, inner = split_container_path(path)
        inner = join_path(dataset or inner or "")
        if not os.path.isdir(store):
            raise FileNotFoundError(f"No such folder. Expected an existing N5 container. Received: path={store!r}")
        node = os.path.join(store, *inner.split("/")) if inner else store
        if not os.path.isdir(node):
            listing = ", ".join("/" + name for name, _ in _datasets(store)) or "no datasets in the container"
            raise VolumeError(describe(f"Dataset {'/' + inner!r} not found in the N5 container.",
                                       f"one of: {listing}", path=path))
        attrs = _attributes(node)
        if not isinstance(attrs.get("dimensions"), list):  # a group: its default dataset
            found = _datasets(node)
            pick = default_array(f"{store}:/{inner}" if inner else store, [f[0] for f in found],
                                 [f[1] for f in found])
            inner = join_path(inner, pick)
            node = os.path.join(store, *inner.split("/"))
            attrs = _attributes(node)
        where = f"{store}:/{inner}" if inner else store
        shape = tuple(int(d) for d in attrs["dimensions"])[::-1]  # (..., z, y, x)
        keep = check_layout(shape, where)
        try:
            opened = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": os.path.abspath(node)}},
                             read=True).result()
        except Exception as error:  # noqa: BLE001 - TensorStore raises ValueError for any bad metadata
            raise VolumeError(describe("Cannot open the N5 dataset (unsupported or corrupt metadata).",
                                       "an N5 dataset", path=where, error=str(error))) from None
        self._array = opened.T  # N5 lists x first; this view is (..., z, y, x)
        self._keep = keep
        self.folder, self.rank = node, len(shape)
        block = tuple(int(b) for b in attrs.get("blockSize", [1] * len(shape)))[::-1]
        self.chunks = tuple(block[a] for a in keep)
        super().__init__(where, [shape[a] for a in keep], opened.dtype.numpy_dtype,
                         _voxel_size(store, inner, attrs), block[keep[0]], marker=attrs.get(MARKER))

    def _fetch(self, z0, z1, y0, y1, x0, x1):
        index = [0] * self._array.rank
        for axis, part in zip(self._keep, (slice(z0, z1), slice(y0, y1), slice(x0, x1))):
            index[axis] = part
        return np.asarray(self._array[tuple(index)].read().result())


def _voxel_size(store, inner, attrs):
    """The dataset's own voxel size, else the nearest group's times the dataset's downsampling."""
    found = attribute_voxel_size(attrs, "xyz")
    if found is not None:
        return found
    parts = inner.split("/") if inner else []
    for depth in range(len(parts) - 1, -1, -1):
        found = attribute_voxel_size(_attributes(os.path.join(store, *parts[:depth])), "xyz")
        if found is not None:
            factors = attrs.get("downsamplingFactors")
            if isinstance(factors, list) and len(factors) == 3:
                try:
                    found = tuple(round_size(v * float(f)) for v, f in zip(found, factors[::-1]))
                except (TypeError, ValueError):
                    pass
            return found
    return None


class N5VolumeWriter(ChunkedVolumeWriter):
    """Writes ``out.n5`` (dataset ``raw``) or ``out.n5:/path/to/dataset``, gzip blocks, voxel size in nm.

    Options: ``chunks`` (z, y, x).
    """

    def _file_of(self, path):
        file, inner = split_container_path(path)
        self.dataset = join_path(inner or "") or DEFAULT_DATASET
        return file

    def _open(self):
        ts = require("tensorstore", "n5", "Writing N5")
        os.makedirs(self.temp_path)
        with open(os.path.join(self.temp_path, _ATTRIBUTES), "w", encoding="utf-8") as handle:
            json.dump({"n5": N5_VERSION}, handle)
        self._folder = os.path.join(self.temp_path, *self.dataset.split("/"))
        metadata = {"dimensions": list(self.shape[::-1]), "blockSize": list(self.chunks[::-1]),
                    "dataType": self.dtype.name, "compression": {"type": "gzip"}}
        self._array = ts.open({"driver": "n5", "kvstore": {"driver": "file", "path": self._folder},
                               "metadata": metadata}, create=True).result().T
        if self.voxel_size:
            xyz = [round_size(v) for v in self.voxel_size[::-1]]
            _update_attributes(self._folder, {"pixelResolution": {"dimensions": xyz, "unit": "nm"},
                                              "resolution": xyz})

    def _write_block(self, z0, block):
        self._array[z0:z0 + block.shape[0]].write(block).result()

    def _write_marker(self, value):
        _update_attributes(self._folder, {MARKER: value})

    def _close(self):
        self._array = None


Writer = N5VolumeWriter


def _update_attributes(folder, values):
    """Adds ``values`` to the folder's ``attributes.json`` (TensorStore writes it once, on creation)."""
    attrs = _attributes(folder)
    attrs.update(values)
    with open(os.path.join(folder, _ATTRIBUTES), "w", encoding="utf-8") as handle:
        json.dump(attrs, handle)


class N5Regions(ChunkedRegions):
    """An N5 dataset written in place, region by region (see :class:`ChunkedRegions`)."""

    def __init__(self, path, folder, array, shape, dtype, chunks):
        super().__init__(path, shape, dtype, chunks)
        self._folder, self._array = folder, array

    def _write(self, z0, y0, x0, block):
        depth, height, width = block.shape
        self._array[z0:z0 + depth, y0:y0 + height, x0:x0 + width].write(block).result()

    def _read_marker(self):
        return _attributes(self._folder).get(MARKER)

    def _write_marker(self, value):
        _update_attributes(self._folder, {MARKER: value})


def open_regions(path):
    """The N5 dataset ``path`` names, reopened for writing in place (see :class:`ChunkedRegions`).

    Example:
        >>> open_regions("out.n5").write(0, 0, 0, block)              # doctest: +SKIP
    """
    ts = require("tensorstore", "n5", "Writing N5")
    volume = N5Volume(path)  # resolves the address as a reader does
    if volume.rank != 3:
        raise VolumeError(describe("Only a 3-D (z, y, x) dataset can be written in place.",
                                   "an output emzoo created", path=volume.path))
    store = {"driver": "file", "path": os.path.abspath(volume.folder)}
    array = ts.open({"driver": "n5", "kvstore": store}, open=True, read=True, write=True).result().T
    return N5Regions(volume.path, volume.folder, array, volume.shape, volume.dtype, volume.chunks)
