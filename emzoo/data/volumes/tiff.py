"""TIFF volumes: multi-page, BigTIFF, OME-TIFF and ImageJ stacks; reader and writer.

Addresses: ``stack.tif`` (also ``.tiff``, ``.btf``, ``.tf8``). Reading is memory-mapped when the
pages are uncompressed and contiguous (whole slices are then fetched with positional reads, so
streaming through a stack does not keep it resident), otherwise page by page. Voxel sizes come from
OME ``PhysicalSize*`` or ImageJ ``spacing`` + resolution tags, converted to nm. The axes come from
the file's metadata (tifffile's reading of it); ``axes="ZYX"`` overrides them for files whose
metadata call the z axis something else (a 3-D array saved with ``imagej=True`` but no axes is
stored as channels). A file that ends before the pages it announces is reported as truncated.

Writing produces an ImageJ hyperstack TIFF (voxel size in micrometres, ImageJ's convention), or an
OME BigTIFF past 4 GB: ``tifffile`` lays out the header, metadata and page directories around an
empty data block and each slice is then written to its place with an ordinary file write, so memory
use stays at about one slice whatever the size and the order of the writes.

This module imports NumPy and tifffile (on use).
"""

import contextlib
import logging
import os
import struct
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


def open_address(path, dataset=None, axes=None):
    """Opens a TIFF stack (``dataset`` is for container formats; a TIFF holds one volume).

    ``axes`` (e.g. ``"ZYX"``) replaces the axes the file's metadata give, one letter per
    dimension of the stored array, ending in ``YX``.
    """
    return TiffVolume(path, axes=axes)


@contextlib.contextmanager
def _tifffile_quiet():
    """Keeps tifffile's own log lines (about damaged files) off stderr; the errors raised say it."""
    logger = logging.getLogger("tifffile")
    handler, propagate = logging.NullHandler(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class TiffVolume(Volume):
    """Multi-page / BigTIFF / OME-TIFF / ImageJ TIFF, memory-mapped when possible.

    ``axes`` (e.g. ``"ZYX"``) overrides the axes read from the file's metadata.
    """

    def __init__(self, path, axes=None):
        import tifffile

        path = os.fspath(path)
        self._tif = None
        try:
            with _tifffile_quiet():
                self._open(tifffile, path, axes)
        except BaseException:
            if self._tif is not None:
                self._tif.close()
            raise

    def _open(self, tifffile, path, axes):
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            shape, file_axes = tuple(series.shape), series.axes
        except (OSError, ValueError, IndexError, KeyError, tifffile.TiffFileError) as error:
            if isinstance(error, FileNotFoundError):
                raise
            raise VolumeError(describe("Cannot read the TIFF file (corrupt or not a TIFF).",
                                       "a readable multi-page TIFF", path=path, error=str(error))) from error
        mismatch = _metadata_mismatch(self._tif, series)
        if mismatch:
            raise VolumeError(describe(
                f"The TIFF's ImageJ metadata do not match its pages: {mismatch} (tifffile writes a "
                "stack of slices 1 pixel wide this way; the file is complete, not truncated).",
                "a stack whose pages are its slices: slices at least 2 pixels wide, or the volume "
                "saved as HDF5 or a folder of slices", path=path, shape=tuple(series.shape)))
        truncated = _truncation(self._tif, series)
        if truncated:
            raise VolumeError(describe(
                f"The TIFF file ends early (truncated, or still being written): {truncated}.",
                "a complete file (copy or save it again)", path=path,
                file_bytes=int(self._tif.filehandle.size)))
        dtype = np.dtype(series.dtype)
        if axes is not None:
            zyx = _given_zyx(shape, axes, path)
        else:
            zyx = _tiff_zyx(shape, file_axes, path, _layout_note(self._tif, shape, file_axes))
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


# How tifffile's axis letters read in a message (Q, I: unknown / image sequence).
_AXIS_NAMES = {"T": "time points", "Z": "slices", "C": "channels", "Q": "planes", "I": "images",
               "P": "positions", "R": "tiles", "E": "lambdas", "H": "phases", "A": "angles"}

_OVERRIDE = ("open it with open_volume(path, axes='ZYX'), or save it again with "
             "tifffile.imwrite(path, data, imagej=True, metadata={'axes': 'ZYX'})")


def _tiff_zyx(shape, axes, path, note=None):
    """Maps a tifffile series shape/axes to (Z, Y, X), refusing colour and 2-D images.

    ``note`` says how the file's axes were decided when that is likely a wrong guess.
    """
    if len(shape) == 2:
        raise VolumeError(describe("A 2-D image was given where a stack of slices is needed.",
                                   "a 3-D (z, y, x) volume: a multi-page TIFF, an HDF5 dataset or a folder "
                                   "of slices", shape=shape, axes=axes, path=path))
    sizes = dict(zip(axes, shape))
    for axis in "CS":
        if sizes.get(axis, 1) > 1:
            if note:
                raise VolumeError(describe(
                    f"The TIFF reads as one multi-channel image, not a z-stack: {note}.",
                    f"a grey-level z-stack: if the {sizes[axis]} planes along {axis} are z slices, "
                    f"{_OVERRIDE}", shape=shape, axes=axes, path=path))
            raise VolumeError(describe(
                f"Unsupported volume layout (colour or multi-channel stack, axes {axes}).",
                f"a grey-level (z, y, x) volume; convert colour stacks to grey first (if the axes "
                f"are wrong and {axis} holds z slices, {_OVERRIDE})", shape=shape, axes=axes, path=path))
    stacked = [(axis, size) for axis, size in zip(axes, shape[:-2]) if size > 1]
    if len(stacked) > 1:
        named = " x ".join(f"{size} {_AXIS_NAMES.get(axis, axis)}" for axis, size in stacked)
        raise VolumeError(describe(
            f"The TIFF holds more than one z-stack (axes {axes}: {named}); emzoo reads one z-stack "
            "at a time and would not glue them into one.",
            "one z-stack per file: pick one and save it, e.g. tifffile.imwrite('one.tif', "
            f"tifffile.imread(path)[0], imagej=True, metadata={{'axes': 'ZYX'}}) keeps index 0 of "
            f"axis {stacked[0][0]}", shape=shape, axes=axes, path=path))
    if "Y" not in sizes or "X" not in sizes or not axes.replace("S", "").replace("C", "").endswith("YX"):
        if len(shape) >= 3 and int(np.prod(shape[:-2])) >= 1:
            return (int(np.prod(shape[:-2])), shape[-2], shape[-1])
        raise VolumeError(describe("Unsupported TIFF layout.", "pages of (y, x) slices",
                                   shape=shape, axes=axes, path=path))
    y, x = sizes["Y"], sizes["X"]
    depth = int(np.prod(shape)) // (y * x)
    return (depth, y, x)


def _given_zyx(shape, axes, path):
    """(Z, Y, X) of a series whose axes the caller gave (one letter per dimension, ending in YX)."""
    text = str(axes).upper()
    if (not isinstance(axes, str) or len(text) != len(shape) or not text.endswith("YX")
            or len(set(text)) != len(text) or not text.isalpha() or len(shape) < 3):
        raise VolumeError(describe("Invalid value for argument `axes`.",
                                   f"one letter per dimension of the stored array {tuple(shape)}, "
                                   "ending in YX, e.g. 'ZYX'", axes=axes, path=path))
    return _tiff_zyx(shape, text, path)


def _layout_note(tif, shape, axes):
    """Why the file's axes are probably a guess (ImageJ channels or tifffile's RGB), or ``None``."""
    sizes = dict(zip(axes, shape))
    if sizes.get("C", 1) > 1 and not any(sizes.get(axis, 1) > 1 for axis in "ZTQI"):
        kind = "ImageJ" if tif.is_imagej else "OME" if tif.is_ome else "tifffile"
        writer = "imagej=True" if tif.is_imagej else "ome=True" if tif.is_ome else "..."
        return (f"its {kind} metadata give axes {axes} ({sizes['C']} channels, no z), which "
                f"tifffile.imwrite(..., {writer}) writes for a 3-D array unless given "
                "metadata={'axes': 'ZYX'}")
    if sizes.get("S", 1) in (3, 4) and len(shape) == 3 and axes.startswith("S"):
        return (f"tifffile took the first axis ({sizes['S']} planes) for the colour samples of one "
                f"RGB image (axes {axes}), as it does for a 3-D array of 3 or 4 slices saved "
                "without axes")
    return None


def _truncation(tif, series):
    """How the file ends before the pages it announces (a phrase), or ``None`` when complete.

    Checks the pages the ImageJ / tifffile metadata announce (or the series holds) against the data
    inside the file (the end of a contiguous block, else each page's data), then, for files that
    announce no page count, the last page's link to a next page (0, not past the end of the file).
    """
    size = int(tif.filehandle.size)
    first = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    plane_bytes = max(1, int(np.prod(first.shape)) * np.dtype(first.dtype).itemsize)
    announced = _announced_pages(tif, first)
    if series.dataoffset is not None:  # one contiguous block: its end must lie inside the file
        total = max(announced or 0, int(series.nbytes) // plane_bytes)
        found = min(total, max(0, size - int(series.dataoffset)) // plane_bytes)
    else:
        pages = [page for page in tif.pages if page is not None]
        total = max(announced or 0, len(pages))
        found = sum(1 for page in pages if _data_end(page) <= size)
    if announced is None and _links_past_end(tif, size):
        return (f"found {found} complete page(s), and the last page links to a next one past the "
                "end of the file")
    if found < total:
        return f"expected {total} pages, found {found}"
    return None


def _metadata_mismatch(tif, series):
    """How an ImageJ file's announced images disagree with a complete set of pages, or ``None``.

    A file whose one contiguous data block ends inside the file, holding fewer pages than the
    metadata announce but as many pixels, is complete; its metadata describe another layout.
    """
    if not tif.is_imagej or series.dataoffset is None:
        return None
    first = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    announced = _announced_pages(tif, first)
    pages = len(tif.pages)
    complete = int(series.dataoffset) + int(series.nbytes) <= int(tif.filehandle.size)
    if announced and announced > pages and complete and int(np.prod(first.shape)) % announced == 0:
        return (f"they announce {announced} images, and the file holds {pages} page(s) of "
                f"{' x '.join(str(n) for n in first.shape)} pixels")
    return None


def _links_past_end(tif, size):
    """Whether the last page directory tifffile found links to a next one beyond the file's end."""
    try:
        tif.filehandle.seek(tif.pages.next_page_offset)
        raw = tif.filehandle.read(tif.tiff.offsetsize)
        if len(raw) < tif.tiff.offsetsize:
            return True
        following = struct.unpack(tif.tiff.offsetformat, raw)[0]
    except (AttributeError, TypeError, OSError, struct.error):
        return False  # a tifffile without next_page_offset: no way to ask
    return bool(following) and following >= size


def _announced_pages(tif, first):
    """The number of pages the file's ImageJ or tifffile metadata announce, or ``None``."""
    try:
        if tif.is_imagej and tif.imagej_metadata and tif.imagej_metadata.get("images"):
            return int(tif.imagej_metadata["images"])
        if tif.is_shaped and tif.shaped_metadata and len(tif.shaped_metadata) == 1:
            shape = tif.shaped_metadata[0].get("shape")
            if shape:
                return max(1, int(np.prod(shape)) // max(1, int(np.prod(first.shape))))
    except (TypeError, ValueError, AttributeError):
        return None
    return None


def _data_end(page):
    ends = [int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts)]
    return max(ends) if ends else 0


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
        if self.shape[2] == 1:
            raise VolumeError(describe(
                "A TIFF cannot hold slices 1 pixel wide (tifffile stores a last axis of 1 as "
                "colour samples, so the pages would not be the slices).", "an HDF5 (.h5), Zarr or "
                "folder output, or slices at least 2 pixels wide", path=self.path, shape=self.shape))
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
