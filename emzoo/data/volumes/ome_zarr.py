"""OME-Zarr (OME-NGFF 0.4 on Zarr v2, 0.5 on Zarr v3): addresses and the writer.

Addresses: ``volume.ome.zarr`` (level 0 of the store's multiscale), ``volume.ome.zarr:/1`` (the
level stored at ``1``), or ``open_address(path, level=1)``. Any ``.zarr`` whose group holds a
multiscale is read the same way: the reader, and the reading of NGFF metadata, is
:class:`~emzoo.data.volumes.zarr_array.ZarrVolume`, since any Zarr store may hold a multiscale. The
voxel size is the level's ``scale`` in ``coordinateTransformations`` (times the multiscale's
own, if any), in each space axis' ``unit`` converted to nm; the ``z``, ``y``, ``x`` axes are taken
from ``axes``, and any other axis (``t``, ``c``) must have size 1.

The writer writes a new store with one multiscale of ``levels`` levels (default 1; more adds a
pyramid halved in y and x per level by block means, z kept, so each level is written with the same
z-chunks as level 0), axes ``z, y, x`` in nanometres and each level's scale (and the translation of
its block centres). NGFF 0.4 (Zarr v2, ``/`` chunk keys) is the default, for the widest set of
readers (Fiji / MoBIE, napari, neuroglancer, ``ome-zarr``); ``ome_version="0.5"`` writes Zarr v3.
The metadata is written by this module with zarr-python (no ``ome-zarr`` dependency) and checked in
the tests with the ``ome-zarr`` package's reader.

This module imports NumPy, and zarr (on use, through :mod:`~emzoo.data.volumes.zarr_array`).
"""

import os

import numpy as np

from emzoo.data.volumes.base import split_container_path
from emzoo.data.volumes.zarr_array import ZarrRegions, ZarrVolume, create_array, open_arrays
from emzoo.data.volumes.zarr_chunked import MARKER, ChunkedVolumeWriter, require
from emzoo.errors import VolumeError, describe

MAGIC = ()  # a store is a folder
SUFFIXES = (".ome.zarr",)
NGFF_VERSIONS = ("0.4", "0.5")
_MAX_LEVELS = 12


def names(path):
    """Whether ``path`` names an OME-Zarr store (``.ome.zarr``, with or without ``:/level``)."""
    return split_container_path(path)[0].lower().rstrip("/").endswith(SUFFIXES)


def open_address(path, dataset=None, level=None):
    """Opens a level of an OME-Zarr multiscale (``level``: an index or a level's path; default 0)."""
    return ZarrVolume(path, dataset, level=level)


def multiscale_attributes(version, name, voxel_size, shapes):
    """The group attributes of a ``z, y, x`` multiscale whose level ``i`` is stored at ``str(i)``,
    halved ``i`` times in y and x (``shapes``: each level's shape)."""
    base = voxel_size or (1.0, 1.0, 1.0)
    axes = [{"name": axis, "type": "space", **({"unit": "nanometer"} if voxel_size else {})} for axis in "zyx"]
    datasets = []
    for index in range(len(shapes)):
        factor = 2 ** index
        transforms = [{"type": "scale", "scale": [base[0], base[1] * factor, base[2] * factor]}]
        if index:
            transforms.append({"type": "translation",
                               "translation": [0.0, base[1] * (factor - 1) / 2, base[2] * (factor - 1) / 2]})
        datasets.append({"path": str(index), "coordinateTransformations": transforms})
    multiscale = {"name": name, "axes": axes, "datasets": datasets}
    if len(shapes) > 1:
        multiscale["type"] = "local_mean"
    if version == "0.4":
        return {"multiscales": [{"version": "0.4", **multiscale}]}
    return {"ome": {"version": version, "multiscales": [multiscale]}}


def halve(block):
    """``block`` (z, y, x) halved in y and x by 2x2 means (edges repeated for odd sizes), same dtype."""
    if block.shape[1] % 2 or block.shape[2] % 2:
        block = np.pad(block, ((0, 0), (0, block.shape[1] % 2), (0, block.shape[2] % 2)), mode="edge")
    z, y, x = block.shape
    mean = block.reshape(z, y // 2, 2, x // 2, 2).astype(np.float32).mean(axis=(2, 4))
    return mean.astype(block.dtype) if block.dtype.kind == "f" else np.rint(mean).astype(block.dtype)


class OmeZarrVolumeWriter(ChunkedVolumeWriter):
    """Writes ``out.ome.zarr``: a multiscale of ``levels`` levels at ``0``, ``1``, ...

    Options: ``chunks`` (z, y, x), ``ome_version`` (``"0.4"``, default, or ``"0.5"``), ``levels``
    (default 1).
    """

    OPTIONS = {"chunks": None, "ome_version": "0.4", "levels": 1}

    def _file_of(self, path):
        file, inner = split_container_path(path)
        if inner and inner.strip("/"):
            raise VolumeError(describe("An OME-Zarr output is a whole store; its levels are named by emzoo.",
                                       "an address without a path inside, like out.ome.zarr", path=path))
        return file

    def _open(self):
        zarr = require("zarr", "zarr", "Writing OME-Zarr")
        version = str(self.options["ome_version"])
        if version not in NGFF_VERSIONS:
            raise VolumeError(describe("Unsupported OME-Zarr version.", f"one of {', '.join(NGFF_VERSIONS)}",
                                       ome_version=version))
        try:
            levels = int(self.options["levels"])
        except (TypeError, ValueError):
            levels = 0
        if not 1 <= levels <= _MAX_LEVELS:
            raise VolumeError(describe("Invalid value for option `levels`.", f"an integer in [1, {_MAX_LEVELS}]",
                                       levels=self.options["levels"]))
        zarr_format = 2 if version == "0.4" else 3
        shapes = [(self.shape[0], -(-self.shape[1] // 2 ** i), -(-self.shape[2] // 2 ** i)) for i in range(levels)]
        group = zarr.open_group(self.temp_path, mode="w", zarr_format=zarr_format)
        self._arrays = [create_array(group, str(i), shape, (self.chunks[0],) + tuple(
            min(c, s) for c, s in zip(self.chunks[1:], shape[1:])), self.dtype, zarr_format, slash_keys=True)
            for i, shape in enumerate(shapes)]
        name = os.path.basename(self.target.rstrip(os.sep))
        group.attrs.update(multiscale_attributes(version, name[:-len(".ome.zarr")] or name, self.voxel_size,
                                                 shapes))

    def _write_block(self, z0, block):
        for index, array in enumerate(self._arrays):
            if index:
                block = halve(block)
            array[z0:z0 + block.shape[0]] = block

    def _write_marker(self, value):
        for array in self._arrays:
            array.attrs[MARKER] = value


Writer = OmeZarrVolumeWriter


class OmeZarrRegions(ZarrRegions):
    """An OME-Zarr output written in place: each region into level 0, halved into the levels
    below (a region's y and x start on a multiple of ``2 ** (levels - 1)`` chunks for them to
    stay whole chunks there)."""

    def _write(self, z0, y0, x0, block):
        for index, array in enumerate(self._arrays):
            if index:
                block, y0, x0 = halve(block), y0 // 2, x0 // 2
            depth, height, width = block.shape
            array[z0:z0 + depth, y0:y0 + height, x0:x0 + width] = block


def open_regions(path):
    """Level 0 of the OME-Zarr output ``path`` and the levels below it, reopened for writing in place.

    Example:
        >>> open_regions("out.ome.zarr").write(0, 0, 0, block)         # doctest: +SKIP
    """
    return OmeZarrRegions(*open_arrays(path, levels=True))
