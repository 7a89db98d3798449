"""What the chunked formats (Zarr, OME-Zarr, N5) share: a lazy chunked reader, a chunk-aligned
writer, the choice of a container's default array, voxel-size attributes and units, the
optional-library check, how their addresses are recognised and their paths inside joined.

:class:`ChunkedVolume` reads slices, slice ranges and crops through the array's own slicing and
keeps the z-chunk holding the last slice read (when it is small), so a slice-by-slice pass reads
each chunk once. :class:`ChunkedVolumeWriter` buffers the slices of one z-chunk (in any order) and
writes the whole chunk row when its last slice arrives, so every write is chunk-aligned and at most
a few z-chunks of slices are held in memory. Each format's module opens its arrays and writes its
metadata.

Completeness: every output emzoo writes carries an ``"emzoo"`` attribute (:data:`MARKER`) on its
array(s), ``{"complete": false}`` while it is written and ``{"complete": true}`` once the last
slice is in, so a store left behind by a killed job is never taken for a finished volume
(:func:`~emzoo.data.volumes.open_volume` refuses it without ``allow_incomplete=True``). The blockwise
engine creates its output empty and in place (:meth:`ChunkedVolumeWriter.publish_incomplete`),
then many processes write it region by region (:class:`ChunkedRegions`, ``open_regions(path)`` of
each format's module); its marker also holds the job's plan, so ``--resume`` can check it.

This module imports NumPy only.
"""

import importlib

import numpy as np

from emzoo.data.volumes.base import Volume, check_dtype, round_size, split_container_path
from emzoo.data.volumes.writer import VolumeWriter
from emzoo.errors import VolumeError, describe

MARKER = "emzoo"  # the attribute saying whether an output emzoo writes is complete
DEFAULT_TILE = 256  # y and x of a default chunk
DEFAULT_DEPTH = 8  # z of a default chunk, fewer when a chunk row of slices would pass _BUFFER_BYTES
_BUFFER_BYTES = 256 * 2**20
_CACHE_BYTES = 64 * 2**20  # the reader keeps a z-chunk of full slices up to this size

# Length units to nanometres: OME-NGFF unit names, N5 / ImageJ abbreviations.
UNIT_TO_NM = {
    "angstrom": 0.1, "å": 0.1, "picometer": 1e-3, "pm": 1e-3, "nanometer": 1.0, "nanometre": 1.0, "nm": 1.0,
    "micrometer": 1e3, "micrometre": 1e3, "micron": 1e3, "um": 1e3, "µm": 1e3, "μm": 1e3,
    "millimeter": 1e6, "millimetre": 1e6, "mm": 1e6, "centimeter": 1e7, "cm": 1e7, "decimeter": 1e8,
    "meter": 1e9, "metre": 1e9, "m": 1e9,
}


def require(module, extra, what):
    """Imports an optional library, or raises :class:`VolumeError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise VolumeError(describe(f"{what} needs the `{module}` package, which is not installed.",
                                   f"pip install 'emzoo[{extra}]'", missing=module)) from error


def suffix_names(suffixes):
    """The ``names(address)`` of a format whose stores are folders named by their suffix: whether
    the store part of an address (before any ``:/path/inside``) ends in one of ``suffixes``.

    Example:
        >>> names = suffix_names((".n5",))
        >>> names("volume.N5:/setup0/timepoint0/s0"), names("volume.zarr")
        (True, False)
    """
    def names(path):
        """Whether ``path`` names a store of this format (with or without ``:/path/inside``)."""
        return split_container_path(path)[0].lower().rstrip("/").endswith(suffixes)

    return names


def join_path(*parts):
    """The path inside a store made of ``parts`` (``None`` and empty parts left out), without
    leading or trailing slashes.

    Example:
        >>> join_path("/volumes/", None, "raw")
        'volumes/raw'
    """
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def to_nm(values, unit, path):
    """``values`` in ``unit`` as nanometres (rounded), or ``None`` when the unit is unknown or missing."""
    factor = UNIT_TO_NM.get(str(unit).strip().lower()) if unit is not None else None
    if factor is None:
        return None
    try:
        sizes = tuple(round_size(float(v) * factor) for v in values)
    except (TypeError, ValueError):
        return None
    return sizes if len(sizes) == 3 and all(sizes) else None


def attribute_voxel_size(attrs, order="zyx"):
    """(z, y, x) nm from an array's attributes, or ``None``; ``order="xyz"`` for N5's conventions.

    Example:
        >>> attribute_voxel_size({"resolution": [40, 4, 4]})
        (40.0, 4.0, 4.0)
        >>> attribute_voxel_size({"pixelResolution": {"dimensions": [4, 4, 40], "unit": "nm"}}, "xyz")
        (40.0, 4.0, 4.0)
    """
    attrs = dict(attrs)
    flip = (lambda v: list(v)[::-1]) if order == "xyz" else list
    pixel = attrs.get("pixelResolution")
    if isinstance(pixel, dict) and isinstance(pixel.get("dimensions"), list):
        found = to_nm(pixel["dimensions"][::-1], pixel.get("unit", "nm"), None)  # always (x, y, z)
        if found:
            return found
    for key, unit in (("resolution", "nm"), ("voxel_size", "nm"), ("element_size_um", "um")):
        values = attrs.get(key)
        if isinstance(values, (list, tuple)) and len(values) == 3:
            found = to_nm(flip(values), unit, None)
            if found:
                return found
    return None


def default_array(path, arrays, ndims):
    """The array a container address that names a group means: its only 3-D array, else its only
    3-D array named ``s0`` (level 0 of an N5 / BigDataViewer multiscale); else :class:`VolumeError`
    listing the arrays.

    ``arrays`` are the paths of the arrays under the group, ``ndims`` their numbers of dimensions.
    """
    volumes = [name for name, ndim in zip(arrays, ndims) if ndim == 3]
    if len(volumes) == 1:
        return volumes[0]
    levels = [name for name in volumes if name.rstrip("/").rsplit("/", 1)[-1] == "s0"]
    if len(levels) == 1:
        return levels[0]
    raise VolumeError(describe(
        "The address names a group without one 3-D array to use (nor an OME-Zarr multiscale).",
        f"an address naming one array, like {path}:/{(volumes or arrays or ['raw'])[0].lstrip('/')} "
        f"(arrays here: {', '.join('/' + a.lstrip('/') for a in arrays) or 'none'})", path=path))


def check_layout(shape, path, keep=None):
    """The stored axes that hold (z, y, x), or :class:`VolumeError` for arrays that are not 3-D.

    A 3-D array keeps all its axes; an array with more keeps ``keep`` (the z, y, x axes its metadata
    name, like OME-Zarr's ``axes``), else its last three (its first three when only a trailing
    channel axis of 1 follows them), provided every other axis has size 1.
    """
    shape = tuple(int(s) for s in shape)
    if keep is None:
        if len(shape) == 4 and shape[-1] == 1:
            keep = (0, 1, 2)
        else:
            keep = tuple(range(len(shape) - 3, len(shape))) if len(shape) >= 3 else ()
    keep = tuple(keep)
    if len(keep) == 3 and all(s == 1 for axis, s in enumerate(shape) if axis not in keep):
        return keep
    raise VolumeError(describe(f"The array is {len(shape)}-D, not a grey-level 3-D volume.",
                               "a (z, y, x) array (any other axes, like OME-Zarr's t and c, of size 1)",
                               shape=shape, path=path))


def is_incomplete(marker):
    """Whether an array's :data:`MARKER` attribute says it is an output still being written.

    Example:
        >>> is_incomplete({"complete": False}), is_incomplete(None)
        (True, False)
    """
    return isinstance(marker, dict) and marker.get("complete") is False


class ChunkedVolume(Volume):
    """A lazily read 3-D view of a chunked array (``(z, y, x)`` axes among the stored ones).

    Subclasses implement ``_fetch(z0, z1, y0, y1, x0, x1)`` returning the raw ``(z, y, x)`` block,
    and pass the array's :data:`MARKER` attribute (``None`` when it has none) as ``marker``.
    ``complete`` is False for an emzoo output whose job has not finished.
    """

    def __init__(self, path, shape, dtype, voxel_size, chunk_depth, marker=None):
        super().__init__(path, shape, check_dtype(dtype, name="dtype"), voxel_size)
        self.marker = marker if isinstance(marker, dict) else None
        self.complete = not is_incomplete(self.marker)
        slice_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        self._depth = int(chunk_depth) if 1 < int(chunk_depth) and chunk_depth * slice_bytes <= _CACHE_BYTES else 1
        self._cached = None  # (z0, block of full slices)

    def _fetch(self, z0, z1, y0, y1, x0, x1):
        raise NotImplementedError

    def _read_raw(self, z):
        if self._depth == 1:
            return self._fetch(z, z + 1, 0, self.shape[1], 0, self.shape[2])[0]
        z0 = z - z % self._depth
        if self._cached is None or self._cached[0] != z0:
            self._cached = (z0, self._fetch(z0, min(z0 + self._depth, self.shape[0]), 0, self.shape[1], 0,
                                            self.shape[2]))
        return self._cached[1][z - z0]

    def _read_raw_range(self, z0, z1):
        return self._fetch(z0, z1, 0, self.shape[1], 0, self.shape[2])

    def _read_raw_crop(self, z, y, x, height, width):
        y0, x0 = max(0, y), max(0, x)
        return self._fetch(z, z + 1, y0, min(y + height, self.shape[1]), x0, min(x + width, self.shape[2]))[0]

    def close(self):
        self._cached = None


def default_chunks(shape, dtype, chunks=None, path=None, buffered=True):
    """The ``(z, y, x)`` chunk shape of an output: ``chunks`` checked and clipped to ``shape``, or by
    default up to ``DEFAULT_DEPTH`` slices deep and ``DEFAULT_TILE`` wide. A ``buffered`` writer
    (one that gathers a chunk row of whole slices) gets fewer slices per chunk for large slices;
    the blockwise engine, which writes chunk by chunk, keeps the full depth (a block one slice
    deep would recompute the midpoints its neighbours need too)."""
    if chunks is not None:
        try:
            chunks = tuple(int(c) for c in chunks)
        except (TypeError, ValueError) as error:
            raise VolumeError(describe("Invalid value for option `chunks`.", "three positive integers (z, y, x)",
                                       chunks=chunks, path=path)) from error
        if len(chunks) != 3 or min(chunks) < 1:
            raise VolumeError(describe("Invalid value for option `chunks`.", "three positive integers (z, y, x)",
                                       chunks=chunks, path=path))
        return tuple(min(c, s) for c, s in zip(chunks, shape))
    slice_bytes = shape[1] * shape[2] * np.dtype(dtype).itemsize
    limit = _BUFFER_BYTES // max(1, slice_bytes) if buffered else DEFAULT_DEPTH
    depth = max(1, min(DEFAULT_DEPTH, shape[0], limit))
    return depth, min(shape[1], DEFAULT_TILE), min(shape[2], DEFAULT_TILE)


class ChunkedVolumeWriter(VolumeWriter):
    """A writer whose slices are gathered per z-chunk and written a whole chunk row at a time.

    Options: ``chunks`` ``(z, y, x)`` (default :func:`default_chunks`). Subclasses implement
    ``_open()`` (create the temporary store at ``self.temp_path`` with chunks ``self.chunks``),
    ``_write_block(z0, block)`` (a ``(depth, Y, X)`` block starting at slice ``z0``, aligned to
    ``self.chunks[0]``, or one slice rewritten after its chunk was written), ``_write_marker(value)``
    (set the :data:`MARKER` attribute of the array(s)) and ``_close()``. The marker says
    ``{"complete": false}`` from creation and ``{"complete": true}`` just before the rename.
    """

    OPTIONS = {"chunks": None}

    def _create(self):
        self.chunks = default_chunks(self.shape, self.dtype, self.options["chunks"], self.path)
        self._blocks = {}  # z-chunk index -> (block, slices filled)
        self._flushed = set()
        self._open()
        self._write_marker({"complete": False})

    def _open(self):
        raise NotImplementedError

    def _write_block(self, z0, block):
        raise NotImplementedError

    def _write_marker(self, value):
        raise NotImplementedError

    def publish_incomplete(self, marker):
        """Puts the store in place under its name, empty and marked incomplete, for writing region
        by region (:class:`ChunkedRegions`); this writer is done afterwards.

        ``marker`` (a JSON-ready dict, e.g. the job's plan) is stored with ``"complete": false``;
        whoever finishes the job sets ``"complete": true`` (:meth:`ChunkedRegions.set_marker`).
        An existing output is replaced only if the writer was made with ``overwrite=True``.

        Example:
            >>> create_volume("out.zarr", (9, 64, 96), "uint8").publish_incomplete({"plan": {}})  # doctest: +SKIP
        """
        if self._closed or self._written.any():
            raise VolumeError(describe("Only a new, empty output can be published incomplete.",
                                       "a writer that has written nothing", path=self.path))
        def finish():
            self._write_marker({**marker, "complete": False})
            self._close()
        self._publish(finish)

    def _close(self):
        pass

    def _store(self, z, data):
        depth = self.chunks[0]
        index = z // depth
        if index in self._flushed:  # a slice written again: write it through
            self._write_block(z, data[None])
            return
        z0 = index * depth
        if index not in self._blocks:
            rows = min(depth, self.shape[0] - z0)
            self._blocks[index] = (np.empty((rows,) + self.shape[1:], self.dtype), np.zeros(rows, bool))
        block, filled = self._blocks[index]
        block[z - z0] = data
        filled[z - z0] = True
        if filled.all():
            del self._blocks[index]
            self._write_block(z0, block)
            self._flushed.add(index)

    def _finish(self):
        self._write_marker({"complete": True})
        self._close()

    def _release(self):
        self._blocks = {}
        self._close()


class ChunkedRegions:
    """An existing chunked output written in place, a region of whole chunks at a time.

    The blockwise engine's tasks each write their own regions, in any order and from many
    processes at once; since a region is a whole number of chunks (only the last chunk along an
    axis may be cut by the array's edge), no two tasks ever write the same chunk. Each format's
    ``open_regions(path)`` returns one; subclasses implement ``_write(z0, y0, x0, block)``,
    ``_read_marker()`` and ``_write_marker(value)``.

    Attributes:
        path, shape, dtype, chunks: the output's address, ``(Z, Y, X)``, dtype and chunk shape.

    Example:
        >>> regions = open_regions("out.zarr")                          # doctest: +SKIP
        >>> regions.write(0, 0, 256, block)  # (8, 256, 256) with chunks (8, 256, 256)  # doctest: +SKIP
    """

    def __init__(self, path, shape, dtype, chunks):
        self.path, self.shape = path, tuple(int(s) for s in shape)
        self.dtype, self.chunks = np.dtype(dtype), tuple(int(c) for c in chunks)

    def write(self, z0, y0, x0, block):
        """Writes the raw ``(z, y, x)`` ``block`` at ``(z0, y0, x0)``; refuses one that cuts a chunk."""
        block = np.asarray(block)
        start = (int(z0), int(y0), int(x0))
        if block.ndim != 3 or block.dtype != self.dtype:
            raise VolumeError(describe("The region does not match the output.",
                                       f"a (z, y, x) block of {self.dtype}", shape=block.shape,
                                       dtype=str(block.dtype), path=self.path))
        for first, size, chunk, length in zip(start, block.shape, self.chunks, self.shape):
            end = first + size
            if size < 1 or first % chunk or end > length or (end % chunk and end != length):
                raise VolumeError(describe(
                    "A region written in place must be whole chunks of the output.",
                    f"starts and ends on multiples of the chunk shape {self.chunks} (or the array's end)",
                    start=start, shape=block.shape, path=self.path))
        self._write(*start, block)

    @property
    def marker(self):
        """The output's :data:`MARKER` attribute (a dict), or ``None``."""
        found = self._read_marker()
        return dict(found) if isinstance(found, dict) else None

    def set_marker(self, value):
        """Replaces the :data:`MARKER` attribute of the output's array(s) with the dict ``value``."""
        self._write_marker(dict(value))

    def _write(self, z0, y0, x0, block):
        raise NotImplementedError

    def _read_marker(self):
        raise NotImplementedError

    def _write_marker(self, value):
        raise NotImplementedError
