"""Plain Zarr arrays (Zarr v2 and v3): one 3-D array of a Zarr store; addresses and the writer.

Addresses: ``volume.zarr:/path/to/array``. A bare ``volume.zarr``, or an address naming a group,
means level 0 of the group's OME-Zarr multiscale, else its only 3-D array, else its only 3-D array
named ``s0``; otherwise the message lists the arrays. Voxel sizes come from the OME-Zarr multiscale
an array belongs to, else from a ``resolution`` or ``voxel_size`` attribute ((z, y, x) nm, as emzoo
and CREMI write them), ``element_size_um``, or a ``pixelResolution`` (``{"dimensions": (x, y, z),
"unit"}``). Since any Zarr store may hold a multiscale, the reader is
:class:`~emzoo.data.volumes.ome_zarr.ZarrVolume` of the OME-Zarr module, which this module imports
(never the other way round). Reads are lazy (a slice, a range of slices, or a crop reads only the
chunks it touches).

The writer writes a new store: the array at the store's root (``out.zarr``) or at the path given
(``out.zarr:/volumes/raw``), with a ``resolution`` attribute ((z, y, x) nm), Blosc/zstd chunks
(``chunks`` option; by default up to 8 slices deep and 256 x 256 wide) written a whole z-chunk row
at a time, in Zarr v2 by default (read by every Zarr tool, Fiji's included) or v3 with
``zarr_format=3``. The array's ``"emzoo"`` attribute says whether the output is complete (see
:mod:`~emzoo.data.volumes.chunked`); :func:`open_regions` reopens an existing array for writing in
place, region by region (the blockwise engine).

zarr-python (3.x) is the library: the reference implementation, reading and writing both Zarr
versions, and what napari, ``ome-zarr`` and Dask read Zarr with (``pip install 'emzoo[zarr]'``).

This module imports zarr (on use).
"""

from emzoo.data.volumes.base import round_size, split_container_path
from emzoo.data.volumes.chunked import (MARKER, ChunkedVolumeWriter, join_path, require,
                                        suffix_names)
from emzoo.data.volumes.ome_zarr import ZarrVolume, open_arrays
from emzoo.data.volumes.zarr_store import ZarrRegions, compressor, create_array
from emzoo.errors import VolumeError, describe

MAGIC = ()  # a store is a folder
SUFFIXES = (".zarr",)

names = suffix_names(SUFFIXES)


def open_address(path, dataset=None, level=None):
    """Opens the array ``path`` names (``dataset``, when given, wins over the address's path).

    Example:
        >>> open_address("volume.zarr:/volumes/raw").shape            # doctest: +SKIP
        (30, 512, 512)
    """
    return ZarrVolume(path, dataset, level=level)


class ZarrVolumeWriter(ChunkedVolumeWriter):
    """Writes ``out.zarr`` (array at the root) or ``out.zarr:/path/to/array``, with ``resolution``
    in nm.

    Options: ``chunks`` (z, y, x), ``zarr_format`` (2, default, or 3).

    Example:
        >>> out = ZarrVolumeWriter("out.zarr:/raw", (9, 64, 64), "uint8")   # doctest: +SKIP
    """

    OPTIONS = {"chunks": None, "zarr_format": 2}

    def _file_of(self, path):
        file, inner = split_container_path(path)
        self.array_path = join_path(inner or "")
        return file

    def _open(self):
        zarr = require("zarr", "zarr", "Writing Zarr")
        zarr_format = self.options["zarr_format"]
        if zarr_format not in (2, 3):
            raise VolumeError(describe("Unsupported Zarr format.", "2 or 3",
                                       zarr_format=zarr_format))
        parent, _, name = self.array_path.rpartition("/")
        if name:
            group = zarr.open_group(self.temp_path, mode="w", zarr_format=zarr_format)
            for depth in range(1, len(parent.split("/")) + 1 if parent else 0):
                group.require_group("/".join(parent.split("/")[:depth]))
            self._array = create_array(group, self.array_path, self.shape, self.chunks, self.dtype,
                                       zarr_format)
        else:
            self._array = zarr.create_array(
                store=self.temp_path, shape=self.shape, chunks=self.chunks, dtype=self.dtype,
                fill_value=0, zarr_format=zarr_format, compressors=[compressor(zarr_format)],
                **({"dimension_names": ["z", "y", "x"]} if zarr_format == 3 else {}))
        if self.voxel_size:
            self._array.attrs["resolution"] = [round_size(v) for v in self.voxel_size]

    def _write_block(self, z0, block):
        self._array[z0:z0 + block.shape[0]] = block

    def _write_marker(self, value):
        self._array.attrs[MARKER] = value


Writer = ZarrVolumeWriter


def open_regions(path):
    """The Zarr array ``path`` names, reopened for writing in place (see
    :class:`~emzoo.data.volumes.chunked.ChunkedRegions`).

    Example:
        >>> open_regions("out.zarr").write(0, 0, 0, block)            # doctest: +SKIP
    """
    return ZarrRegions(*open_arrays(path))
