"""TIFF volumes: multi-page, BigTIFF, OME-TIFF and ImageJ stacks; reader and writer.

Addresses: ``stack.tif`` (also ``.tiff``, ``.btf``, ``.tf8``). Reading is memory-mapped when the
pages are uncompressed and contiguous (whole slices are then fetched with positional reads, so
streaming through a stack does not keep it resident), otherwise page by page. Voxel sizes come from
OME ``PhysicalSize*`` or ImageJ ``spacing`` + resolution tags, converted to nm.

Writing produces an ImageJ hyperstack TIFF (voxel size in micrometres, ImageJ's convention), or an
OME BigTIFF past 4 GB: ``tifffile`` lays out the header, metadata and page directories around an
empty data block and each slice is then written to its place with an ordinary file write, so memory
use stays at about one slice whatever the size and the order of the writes.

This module imports NumPy and tifffile (on use).
"""

import os
import xml.etree.ElementTree as ElementTree

import numpy as np

from emzoo.data.volumes.base import Volume, check_dtype, round_size
from emzoo.data.volumes.writer import VolumeWriter
from emzoo.errors import VolumeError, describe

SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
# Output larger than this is written as BigTIFF (with OME metadata, which BigTIFF readers understand).
_BIGTIFF_BYTES = 2**32 - 2**25

# Length units to nanometres (ImageJ ``unit`` strings, OME ``PhysicalSize*Unit``).
_UNIT_TO_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "\\u00b5m": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3,
    "micrometre": 1e3, "mm": 1e6, "millimeter": 1e6, "cm": 1e7, "m": 1e9, "a": 0.1, "å": 0.1,
    "angstrom": 0.1, "pm": 1e-3,
}


def names(path):
    """Whether ``path`` names a TIFF volume (by its suffix)."""
    return os.fspath(path).lower().endswith(SUFFIXES)


def open_address(path, dataset=None):
    """Opens a TIFF stack (``dataset`` is for container formats; a TIFF holds one volume)."""
    return TiffVolume(path)


class TiffVolume(Volume):
    """Multi-page / BigTIFF / OME-TIFF / ImageJ TIFF, memory-mapped when possible."""

    def __init__(self, path):
        import tifffile

        path = os.fspath(path)
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            shape, axes = tuple(series.shape), series.axes
        except (OSError, ValueError, IndexError, KeyError, tifffile.TiffFileError) as error:
            if isinstance(error, FileNotFoundError):
                raise
            raise VolumeError(describe("Cannot read the TIFF file (corrupt or not a TIFF).",
                                       "a readable multi-page TIFF", path=path, error=str(error))) from error
        dtype = np.dtype(series.dtype)
        zyx = _tiff_zyx(shape, axes, path)
        super().__init__(path, zyx, check_dtype(dtype, name="dtype"), tiff_voxel_size(self._tif))
        self._series = series
        self._memmap = None
        self._reader = None
        try:
            self._memmap = tifffile.memmap(path, mode="r", series=0).reshape(zyx)
            if hasattr(os, "pread") and series.dataoffset is not None:
                # Whole slices are read with positional reads rather than through the map: pages
                # touched through a map stay in the process's resident set, so streaming through a
                # long stack would grow RSS with the stack. Crops and ranges still use the map.
                self._reader = open(path, "rb", buffering=0)
                self._data_offset = int(series.dataoffset)
        except (ValueError, OSError, tifffile.TiffFileError):
            self._pages = series.pages  # compressed or tiled: read page by page
            if len(self._pages) != zyx[0]:
                raise VolumeError(describe("The TIFF pages cannot be read one by one.",
                                           "one page per slice or an uncompressed contiguous stack",
                                           pages=len(self._pages), slices=zyx[0], path=path))

    def _read_raw(self, z):
        if self._reader is not None:
            dtype = self._memmap.dtype  # the file's byte order
            nbytes = self.shape[1] * self.shape[2] * dtype.itemsize
            data = os.pread(self._reader.fileno(), nbytes, self._data_offset + z * nbytes)
            if len(data) == nbytes:  # read-only, like the map's slices
                return np.frombuffer(data, dtype).reshape(self.shape[1:])
        if self._memmap is not None:
            return self._memmap[z]
        try:
            page = self._pages[z]
            array = page.asarray() if page is not None else np.zeros(self.shape[1:], self.dtype)
        except Exception as error:  # tifffile raises many types on damaged data
            raise VolumeError(describe(f"Cannot decode TIFF page {z} (corrupt file?).", "a readable page",
                                       path=self.path, error=str(error))) from error
        return array.reshape(self.shape[1:])

    def _read_raw_range(self, z0, z1):
        if self._memmap is not None:
            return self._memmap[z0:z1]
        return super()._read_raw_range(z0, z1)

    def _read_raw_crop(self, z, y, x, height, width):
        if self._memmap is not None:
            return self._memmap[z, y:y + height, x:x + width]
        return super()._read_raw_crop(z, y, x, height, width)

    def close(self):
        self._memmap = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        self._tif.close()


def _tiff_zyx(shape, axes, path):
    """Maps a tifffile series shape/axes to (Z, Y, X), refusing colour and 2-D images."""
    if len(shape) == 2:
        raise VolumeError(describe("A 2-D image was given where a stack of slices is needed.",
                                   "a 3-D (z, y, x) volume: a multi-page TIFF, an HDF5 dataset or a folder "
                                   "of slices", shape=shape, axes=axes, path=path))
    sizes = dict(zip(axes, shape))
    for axis in "CS":
        if sizes.get(axis, 1) > 1:
            raise VolumeError(describe("Unsupported volume layout (colour or multi-channel stack).",
                                       "a grey-level (z, y, x) volume; convert colour stacks to grey first",
                                       shape=shape, axes=axes, path=path))
    if "Y" not in sizes or "X" not in sizes or not axes.replace("S", "").replace("C", "").endswith("YX"):
        if len(shape) >= 3 and int(np.prod(shape[:-2])) >= 1:
            return (int(np.prod(shape[:-2])), shape[-2], shape[-1])
        raise VolumeError(describe("Unsupported TIFF layout.", "pages of (y, x) slices",
                                   shape=shape, axes=axes, path=path))
    y, x = sizes["Y"], sizes["X"]
    depth = int(np.prod(shape)) // (y * x)
    return (depth, y, x)


def _unit_scale(unit):
    if unit is None:
        return None
    unit = str(unit).strip().lower().replace("\\u00b5", "µ")
    return _UNIT_TO_NM.get(unit)


def tiff_voxel_size(tif):
    """Voxel size (z, y, x) in nm of an open ``tifffile.TiffFile`` from OME PhysicalSize* or ImageJ
    spacing + resolution tags; ``None`` when the file does not record it."""
    try:
        if tif.is_ome and tif.ome_metadata:
            return _ome_voxel_size(tif.ome_metadata)
        if tif.is_imagej and tif.imagej_metadata:
            meta = tif.imagej_metadata
            scale = _unit_scale(meta.get("unit"))
            if scale is None:
                return None
            page = tif.pages[0]
            sizes = []
            for tag in ("YResolution", "XResolution"):
                value = page.tags.get(tag)
                if value is None:
                    return None
                num, den = value.value
                if not num:
                    return None
                sizes.append(den / num * scale)
            # ImageJ's default voxel depth is one unit when no spacing is written.
            z = float(meta.get("spacing", 1.0)) * scale
            sizes = [round_size(v) for v in [z] + sizes]
            return tuple(sizes) if None not in sizes else None
    except (ValueError, TypeError, KeyError, ZeroDivisionError):
        return None
    return None


def _ome_voxel_size(xml_text):
    try:
        root = ElementTree.fromstring(xml_text)
    except ElementTree.ParseError:
        return None
    for element in root.iter():
        if element.tag.endswith("Pixels"):
            sizes = []
            for axis in "ZYX":
                value = element.get(f"PhysicalSize{axis}")
                scale = _unit_scale(element.get(f"PhysicalSize{axis}Unit", "µm"))
                if value is None or scale is None:
                    return None
                sizes.append(round_size(float(value) * scale))
            return tuple(sizes) if None not in sizes else None
    return None


class TiffVolumeWriter(VolumeWriter):
    """Writes an ImageJ TIFF (OME BigTIFF past 4 GB); ``bigtiff=True/False`` forces or forbids BigTIFF."""

    OPTIONS = {"bigtiff": None}

    def _create(self):
        import tifffile

        bigtiff = self.options["bigtiff"]
        if bigtiff is None:
            bigtiff = int(np.prod(self.shape)) * self.dtype.itemsize > _BIGTIFF_BYTES
        metadata = {"axes": "ZYX"}
        kwargs = {}
        if bigtiff:
            if self.voxel_size:
                for axis, size in zip("ZYX", self.voxel_size):
                    metadata[f"PhysicalSize{axis}"] = size
                    metadata[f"PhysicalSize{axis}Unit"] = "nm"
            kwargs.update(bigtiff=True, ome=True, metadata=metadata)
        else:
            if self.voxel_size:
                z, y, x = (s / 1000.0 for s in self.voxel_size)  # ImageJ convention: micrometres
                metadata.update(spacing=z, unit="um")
                kwargs["resolution"] = (1.0 / x, 1.0 / y)
            kwargs.update(imagej=True, metadata=metadata)
        # TiffWriter lays out header, metadata and page directories around an empty (sparse) data
        # region; slices are then written into that region with plain file writes. A memory map
        # would keep every written page resident (RSS growing with the output); file writes go
        # through the page cache, which the kernel flushes and reclaims, so the process holds one
        # slice at a time whatever the order of the writes.
        layout = tifffile.imwrite(self.temp_path, data=None, shape=self.shape, dtype=self.dtype,
                                  byteorder="<", returnoffset=True, **kwargs)
        # (offset, bytes of one page) when all pages are stored back to back from that offset.
        slice_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        if layout is None or layout[1] != slice_bytes:
            raise VolumeError(describe("Cannot lay out the TIFF output as one contiguous block.",
                                       "an uncompressed stack tifffile stores contiguously",
                                       path=self.path, layout=layout))
        self._data_offset, self._slice_bytes = int(layout[0]), slice_bytes
        self._sink = open(self.temp_path, "r+b")

    def _store(self, z, data):
        self._sink.seek(self._data_offset + z * self._slice_bytes)
        little_endian = np.ascontiguousarray(data, self.dtype.newbyteorder("<"))
        self._sink.write(memoryview(little_endian).cast("B"))

    def _finish(self):
        sink, self._sink = self._sink, None
        sink.close()

    def _release(self):
        if self._sink is not None:
            self._sink.close()
            self._sink = None


Writer = TiffVolumeWriter
