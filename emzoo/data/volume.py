"""Reading and writing z-stacks: TIFF (multi-page, BigTIFF, OME, ImageJ), HDF5 and slice folders.

Conventions, stated once:

* A volume is grey-level and indexed ``(z, y, x)``; ``Volume.shape`` is ``(Z, Y, X)``.
  Stacks with a colour / sample axis of size > 1 are refused with a clear message (convert them to
  grey first); singleton channel axes are dropped.
* Voxel sizes are ``(z, y, x)`` in **nanometres**, or ``None`` when the file does not say.
* Values are normalised **by the dtype's range**, never per slice: ``uint8 / 255``,
  ``uint16 / 65535``; ``float32`` data is taken as already in ``[0, 1]`` and passed through.
  Percentile normalisation is an explicit option (:func:`normalise` ``percentiles=(lo, hi)``,
  ``open_volume(..., percentiles=(lo, hi))``), computed once per volume, not per slice, so
  intensities stay comparable along z.
* Reading is lazy: TIFFs are memory-mapped when they are uncompressed and contiguous (whole slices
  are then fetched with positional reads, so streaming through a stack does not keep it resident),
  otherwise read page by page; HDF5 datasets are read slice by slice through h5py; folders open one
  file per slice.
* Writing goes to a temporary name in the destination folder and is renamed into place only when
  every slice has been written and the writer is closed; an exception removes the temporary output,
  so a failed run never leaves a partial volume behind.

Addresses: ``stack.tif``, ``stack.ome.tif``, ``sample.h5:/volumes/raw`` (also ``.hdf5``, ``.hdf``),
``slices_dir/`` (PNG or TIFF slices, natural sort: ``2.png`` before ``10.png``). A bare ``sample.h5``
means its ``/volumes/raw`` dataset (what :class:`VolumeWriter` writes by default) or, without one, the
file's only 3-D dataset; any other file needs the ``:/dataset`` part.

This module imports NumPy, tifffile, h5py and Pillow only (never TensorFlow).

Example:
    >>> vol = open_volume("stack.tif")                     # doctest: +SKIP
    >>> vol.shape, vol.dtype, vol.voxel_size               # doctest: +SKIP
    ((30, 512, 512), dtype('uint8'), (50.0, 4.0, 4.0))
    >>> middle = vol.slice(15)                             # float32 in [0, 1]  # doctest: +SKIP
    >>> with VolumeWriter("out.h5:/volumes/raw", vol.shape, vol.dtype, vol.voxel_size) as out:
    ...     for z in range(len(vol)):
    ...         out.write(vol.read(z))                     # doctest: +SKIP
"""

import json
import os
import re
import uuid
import xml.etree.ElementTree as ElementTree

import numpy as np

from emzoo.errors import VolumeError, describe

SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_SUPPORTED_TEXT = "uint8, uint16 or float32 data"

_HDF5_PATTERN = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|hdf|he5))(?::(?P<dataset>.*))?$", re.IGNORECASE)
_SLICE_SUFFIXES = (".png", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
_DEFAULT_HDF5_DATASET = "/volumes/raw"
# Sidecar written into slice folders so the voxel size survives formats (PNG) that cannot hold it.
FOLDER_METADATA = "emzoo_volume.json"
# Output larger than this is written as BigTIFF (with OME metadata, which BigTIFF readers understand).
_BIGTIFF_BYTES = 2**32 - 2**25

# Length units to nanometres (ImageJ ``unit`` strings, OME ``PhysicalSize*Unit``).
_UNIT_TO_NM = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "µm": 1e3, "μm": 1e3, "\\u00b5m": 1e3, "micron": 1e3, "microns": 1e3, "micrometer": 1e3,
    "micrometre": 1e3, "mm": 1e6, "millimeter": 1e6, "cm": 1e7, "m": 1e9, "a": 0.1, "å": 0.1,
    "angstrom": 0.1, "pm": 1e-3,
}


# --------------------------------------------------------------------------------------------------
# Normalisation


def check_dtype(dtype, name="dtype"):
    """Returns ``np.dtype(dtype)`` if emzoo can read and write it, else raises :class:`VolumeError`.

    Example:
        >>> check_dtype("uint16")
        dtype('uint16')
    """
    try:
        dtype = np.dtype(dtype)
    except TypeError as error:
        raise VolumeError(describe("Unsupported data type.", _SUPPORTED_TEXT, **{name: dtype})) from error
    if dtype not in SUPPORTED_DTYPES:
        raise VolumeError(describe("Unsupported data type.", _SUPPORTED_TEXT, **{name: str(dtype)}))
    return dtype


def normalise(array, dtype=None, percentiles=None):
    """Maps raw values to float32 ``[0, 1]`` by the range of their dtype.

    ``uint8`` is divided by 255 and ``uint16`` by 65535; ``float32`` (and ``float64``) values are
    assumed to be in ``[0, 1]`` already and returned as float32 unchanged. ``dtype`` overrides the
    array's own dtype (useful when a slice was already cast). With ``percentiles=(lo, hi)`` the
    values at those percentiles of ``array`` (or explicit ``limits=(vmin, vmax)`` via
    :func:`normalise_between`) become 0 and 1 and the result is clipped: use this for stacks whose
    intensities fill a small part of the dtype's range.

    Example:
        >>> normalise(np.array([0, 255], np.uint8)).tolist()
        [0.0, 1.0]
    """
    array = np.asarray(array)
    if percentiles is not None:
        lo, hi = _check_percentiles(percentiles)
        vmin, vmax = np.percentile(array, (lo, hi))
        return normalise_between(array, vmin, vmax)
    dtype = np.dtype(dtype) if dtype is not None else array.dtype
    if dtype == np.uint8:
        return array.astype(np.float32) * np.float32(1.0 / 255.0)
    if dtype == np.uint16:
        return array.astype(np.float32) * np.float32(1.0 / 65535.0)
    if dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    raise VolumeError(describe("Unsupported data type.", _SUPPORTED_TEXT, dtype=str(dtype)))


def normalise_between(array, vmin, vmax):
    """Maps ``vmin`` to 0 and ``vmax`` to 1 (float32, clipped): percentile / window normalisation.

    Example:
        >>> normalise_between(np.array([10, 20, 30]), 10, 30).tolist()
        [0.0, 0.5, 1.0]
    """
    scale = np.float32(1.0 / max(float(vmax) - float(vmin), 1e-12))
    out = (np.asarray(array, np.float32) - np.float32(vmin)) * scale
    return np.clip(out, 0.0, 1.0, out=out)


def denormalise(array, dtype):
    """Inverse of :func:`normalise`: clips to ``[0, 1]`` and rounds back to ``dtype``.

    Example:
        >>> denormalise(np.array([0.0, 0.5, 1.2]), np.uint8).tolist()
        [0, 128, 255]
    """
    dtype = check_dtype(dtype)
    array = np.clip(np.asarray(array, np.float32), 0.0, 1.0)
    if dtype == np.float32:
        return array
    top = 255.0 if dtype == np.uint8 else 65535.0
    return np.rint(array * np.float32(top)).astype(dtype)


def _check_percentiles(percentiles):
    try:
        lo, hi = (float(p) for p in percentiles)
    except (TypeError, ValueError) as error:
        raise VolumeError(describe("Invalid value for argument `percentiles`.",
                                   "two numbers (lo, hi) with 0 <= lo < hi <= 100",
                                   percentiles=percentiles)) from error
    if not 0 <= lo < hi <= 100:
        raise VolumeError(describe("Invalid value for argument `percentiles`.",
                                   "two numbers (lo, hi) with 0 <= lo < hi <= 100", percentiles=percentiles))
    return lo, hi


def _check_finite(array, where):
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise VolumeError(describe(f"Float data contains NaN or Inf ({bad} values) in {where}.",
                                   "finite values (float volumes are taken as [0, 1])", path=where))


def _round_size(value):
    """Rounds a voxel size to 6 significant digits (TIFF rationals and unit conversions add noise)."""
    value = float(value)
    return float(f"{value:.6g}") if value > 0 and np.isfinite(value) else None


def _check_voxel_size(voxel_size):
    if voxel_size is None:
        return None
    try:
        sizes = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError) as error:
        raise VolumeError(describe("Invalid value for argument `voxel_size`.",
                                   "three positive numbers (z, y, x) in nm, or None",
                                   voxel_size=voxel_size)) from error
    if len(sizes) != 3 or not all(np.isfinite(s) and s > 0 for s in sizes):
        raise VolumeError(describe("Invalid value for argument `voxel_size`.",
                                   "three positive numbers (z, y, x) in nm, or None", voxel_size=voxel_size))
    return sizes


# --------------------------------------------------------------------------------------------------
# Addresses


def split_hdf5_path(path):
    """Splits ``file.h5:/group/dataset`` into ``(file, dataset)``; ``(path, None)`` for other paths.

    Example:
        >>> split_hdf5_path("sample_A.hdf:/volumes/raw")
        ('sample_A.hdf', '/volumes/raw')
        >>> split_hdf5_path("stack.tif")
        ('stack.tif', None)
    """
    path = os.fspath(path)
    match = _HDF5_PATTERN.match(path)
    if not match:
        return path, None
    dataset = match.group("dataset")
    return match.group("file"), (dataset if dataset else None)


def _natural_key(name):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _kind_of(path):
    """'hdf5', 'tiff', 'folder' or 'image' (a single 2-D picture) for an address."""
    file, dataset = split_hdf5_path(path)
    if _HDF5_PATTERN.match(os.fspath(path)):
        return "hdf5"
    lower = file.lower()
    if lower.endswith(_TIFF_SUFFIXES):
        return "tiff"
    if lower.endswith((".png", ".jpg", ".jpeg", ".bmp")):
        return "image"
    if os.path.isdir(file) or not os.path.splitext(file)[1]:
        return "folder"
    return "unknown"


# --------------------------------------------------------------------------------------------------
# Reading


class Volume:
    """A lazily read grey-level z-stack; subclasses fetch raw slices, this class does the rest.

    Attributes:
        path: the address it was opened from (or ``"<array>"``).
        shape: ``(Z, Y, X)``.
        dtype: the stored NumPy dtype (uint8, uint16 or float32).
        voxel_size: ``(z, y, x)`` in nm, or ``None`` when the file does not record it.

    ``read(z)`` returns the raw slice, ``slice(z)`` the float32 slice in ``[0, 1]`` (dtype range, or
    the volume's percentile window when opened with ``percentiles=``). Indices may be negative
    (Python style). Use as a context manager, or call :meth:`close`.

    Example:
        >>> with open_volume("stack.tif") as vol:          # doctest: +SKIP
        ...     pair = vol.read_range(0, 2)                # raw (2, Y, X)
    """

    def __init__(self, path, shape, dtype, voxel_size=None):
        self.path = os.fspath(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.voxel_size = voxel_size
        self._window = None  # (vmin, vmax) for percentile normalisation

    # Subclasses implement these two.
    def _read_raw(self, z):
        raise NotImplementedError

    def _read_raw_range(self, z0, z1):
        return np.stack([self._read_raw(z) for z in range(z0, z1)]) if z1 > z0 else (
            np.zeros((0,) + self.shape[1:], self.dtype))

    def close(self):
        """Releases file handles; the volume cannot be read afterwards."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return (f"{type(self).__name__}(path={self.path!r}, shape={self.shape}, dtype={self.dtype}, "
                f"voxel_size={self.voxel_size})")

    def _index(self, z):
        depth = self.shape[0]
        try:
            z = int(z)
        except (TypeError, ValueError) as error:
            raise VolumeError(describe("Invalid slice index.", "an integer", z=z)) from error
        if z < 0:
            z += depth
        if not 0 <= z < depth:
            raise VolumeError(describe(f"Slice index out of range for a volume of {depth} slices.",
                                       f"an index in [-{depth}, {depth - 1}]", z=z, path=self.path))
        return z

    def read(self, z):
        """The raw slice ``z`` as a ``(Y, X)`` array of the volume's dtype."""
        z = self._index(z)
        array = np.asarray(self._read_raw(z))
        if array.shape != self.shape[1:]:
            raise VolumeError(describe(f"Slice {z} has a different shape from the stack.",
                                       f"shape {self.shape[1:]}", shape=array.shape, path=self.path))
        _check_finite(array, f"{self.path} slice {z}")
        return array

    def read_range(self, z0, z1):
        """Raw slices ``z0 <= z < z1`` as a ``(z1 - z0, Y, X)`` array (Python slice semantics)."""
        z0, z1, _ = slice(z0, z1).indices(self.shape[0])
        array = np.asarray(self._read_raw_range(z0, max(z0, z1)))
        _check_finite(array, f"{self.path} slices {z0}:{z1}")
        return array

    def read_crop(self, z, y, x, height, width):
        """Raw ``(height, width)`` window of slice ``z`` at ``(y, x)``; reads only that window where the
        format allows (memory-mapped TIFF, HDF5, arrays)."""
        z = self._index(z)
        array = np.asarray(self._read_raw_crop(z, int(y), int(x), int(height), int(width)))
        _check_finite(array, f"{self.path} slice {z}")
        return array

    def _read_raw_crop(self, z, y, x, height, width):
        return self._read_raw(z)[y:y + height, x:x + width]

    def slice(self, z):
        """Slice ``z`` as float32 ``(Y, X)`` in ``[0, 1]`` (see the module's normalisation rules)."""
        return self.normalise_raw(self.read(z))

    def slices(self, z0, z1):
        """Normalised slices ``z0 <= z < z1`` as float32 ``(n, Y, X)`` in ``[0, 1]``."""
        return self.normalise_raw(self.read_range(z0, z1))

    def normalise_raw(self, array):
        """Normalises raw values of this volume to float32 [0, 1] (dtype range or percentile window)."""
        if self._window is not None:
            return normalise_between(array, *self._window)
        return normalise(array, self.dtype)

    def set_percentile_window(self, percentiles, max_slices=16):
        """Normalises by percentiles ``(lo, hi)`` of up to ``max_slices`` evenly spaced slices.

        The window is computed once for the whole volume so every slice uses the same mapping.
        ``None`` goes back to the dtype's range. Returns ``(vmin, vmax)`` or ``None``.

        Example:
            >>> vol.set_percentile_window((0.5, 99.5))   # doctest: +SKIP
            (12.0, 231.0)
        """
        if percentiles is None:
            self._window = None
            return None
        lo, hi = _check_percentiles(percentiles)
        picks = np.unique(np.linspace(0, self.shape[0] - 1, min(max_slices, self.shape[0])).round().astype(int))
        sample = np.stack([self.read(int(z)) for z in picks])
        vmin, vmax = (float(v) for v in np.percentile(sample, (lo, hi)))
        self._window = (vmin, vmax)
        return self._window


class ArrayVolume(Volume):
    """A :class:`Volume` over an in-memory ``(Z, Y, X)`` array (tests, pipelines, results).

    Example:
        >>> vol = ArrayVolume(np.zeros((3, 4, 5), np.uint8), voxel_size=(40, 4, 4))
        >>> vol.shape, vol.slice(0).dtype
        ((3, 4, 5), dtype('float32'))
    """

    def __init__(self, array, voxel_size=None, path="<array>"):
        array = np.asarray(array)
        array = _as_zyx(array, path)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        check_dtype(array.dtype, name="dtype")
        super().__init__(path, array.shape, array.dtype, _check_voxel_size(voxel_size))
        self.array = array

    def _read_raw(self, z):
        return self.array[z]

    def _read_raw_range(self, z0, z1):
        return self.array[z0:z1]

    def _read_raw_crop(self, z, y, x, height, width):
        return self.array[z, y:y + height, x:x + width]


def _as_zyx(array, path, axes=None):
    """Drops singleton axes beyond (Y, X) and checks the result is a (Z, Y, X) grey stack."""
    if array.ndim == 2:
        raise VolumeError(describe("A 2-D image was given where a stack of slices is needed.",
                                   "a 3-D (z, y, x) volume: a multi-page TIFF, an HDF5 dataset or a folder "
                                   "of slices", shape=array.shape, path=os.fspath(path)))
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise VolumeError(describe("Unsupported volume layout (colour or multi-channel stack).",
                                   "a grey-level (z, y, x) volume; convert colour stacks to grey first",
                                   shape=array.shape, path=os.fspath(path)))
    return array


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
        layout, zyx = _tiff_layout(shape, axes, path)
        super().__init__(path, zyx, check_dtype(dtype, name="dtype"), _tiff_voxel_size(self._tif))
        self._layout = layout
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


def _tiff_layout(shape, axes, path):
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
            return "stack", (int(np.prod(shape[:-2])), shape[-2], shape[-1])
        raise VolumeError(describe("Unsupported TIFF layout.", "pages of (y, x) slices",
                                   shape=shape, axes=axes, path=path))
    y, x = sizes["Y"], sizes["X"]
    depth = int(np.prod(shape)) // (y * x)
    return "stack", (depth, y, x)


def _unit_scale(unit):
    if unit is None:
        return None
    unit = str(unit).strip().lower().replace("\\u00b5", "µ")
    return _UNIT_TO_NM.get(unit)


def _tiff_voxel_size(tif):
    """Voxel size (z, y, x) in nm from OME PhysicalSize* or ImageJ spacing + resolution tags."""
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
            sizes = [_round_size(v) for v in [z] + sizes]
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
                sizes.append(_round_size(float(value) * scale))
            return tuple(sizes) if None not in sizes else None
    return None


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
        available = _hdf5_datasets(self._file)
        if not dataset:
            dataset = _default_hdf5_dataset(self._file, available)
        if not dataset:
            self._file.close()
            raise VolumeError(describe(
                "The HDF5 path names no dataset, and the file has no /volumes/raw and not exactly one "
                "3-D dataset to use instead.",
                f"an address naming one dataset, like {file}:{available[0] if available else '/volumes/raw'}"
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
        voxel_size = None
        for key in ("resolution", "element_size_um", "voxel_size"):
            if key in node.attrs:
                try:
                    values = [float(v) for v in np.ravel(node.attrs[key])]
                except (TypeError, ValueError):
                    continue
                if len(values) == 3 and all(v > 0 for v in values):
                    scale = 1e3 if key == "element_size_um" else 1.0
                    voxel_size = tuple(_round_size(v * scale) for v in values)
                    break
        super().__init__(f"{file}:{dataset}", shape, dtype, voxel_size)
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


def _hdf5_datasets(h5file):
    import h5py

    names = []
    h5file.visititems(lambda name, obj: names.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _default_hdf5_dataset(h5file, available):
    """The dataset a bare ``file.h5`` means: ``/volumes/raw`` (what :class:`VolumeWriter` writes) when
    present, else the file's only 3-D dataset; ``None`` when neither rule picks exactly one."""
    import h5py

    if isinstance(h5file.get(_DEFAULT_HDF5_DATASET), h5py.Dataset):
        return _DEFAULT_HDF5_DATASET
    volumes = [name for name in available if h5file[name].ndim == 3]
    return volumes[0] if len(volumes) == 1 else None


class FolderVolume(Volume):
    """A folder of PNG or TIFF slices in natural-sort order (``2.png`` before ``10.png``)."""

    def __init__(self, path):
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"No such folder. Expected a folder of slices. Received: path={path!r}")
        names = sorted((n for n in os.listdir(path) if n.lower().endswith(_SLICE_SUFFIXES)
                        and not n.startswith(".")), key=_natural_key)
        if not names:
            raise VolumeError(describe("The folder holds no slices.", "PNG or TIFF files (one per slice)",
                                       path=path))
        self._files = [os.path.join(path, n) for n in names]
        shapes = {}
        dtype = None
        for file in self._files:
            shape, file_dtype = _image_header(file)
            shapes.setdefault(shape, file)
            dtype = dtype or file_dtype
            if file_dtype != dtype:
                raise VolumeError(describe("The slices in the folder have different data types.",
                                           f"every slice as {dtype}", dtype=str(file_dtype), file=file))
        if len(shapes) > 1:
            (first, first_file), (other, other_file) = list(shapes.items())[:2]
            raise VolumeError(describe("The slices in the folder have different shapes.",
                                       f"every slice of shape {first} (like {os.path.basename(first_file)})",
                                       shape=other, file=other_file))
        shape = next(iter(shapes))
        super().__init__(path, (len(self._files),) + shape, check_dtype(dtype, name="dtype"),
                         _folder_voxel_size(path, self._files[0]))

    def _read_raw(self, z):
        return _read_image(self._files[z], self.shape[1:])


def _image_header(file):
    """(shape (Y, X), dtype) of one slice file without decoding its pixels."""
    if file.lower().endswith((".tif", ".tiff")):
        import tifffile

        try:
            with tifffile.TiffFile(file) as tif:
                page = tif.pages[0]
                shape, dtype = tuple(page.shape), np.dtype(page.dtype)
        except Exception as error:
            raise VolumeError(describe("Cannot read the TIFF slice (corrupt or not a TIFF).", "a readable TIFF",
                                       file=file, error=str(error))) from error
    else:
        from PIL import Image

        try:
            with Image.open(file) as image:
                mode, size = image.mode, image.size
        except Exception as error:
            raise VolumeError(describe("Cannot read the image slice (corrupt?).", "a readable PNG",
                                       file=file, error=str(error))) from error
        dtype = {"L": np.uint8, "P": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I": np.uint16,
                 "F": np.float32, "RGB": np.uint8, "RGBA": np.uint8, "LA": np.uint8}.get(mode)
        if dtype is None:
            raise VolumeError(describe("Unsupported image mode.", "grey PNGs (8 or 16 bit)", mode=mode, file=file))
        shape = (size[1], size[0]) + ((3,) if mode in ("RGB", "RGBA", "LA") else ())
        dtype = np.dtype(dtype)
    if len(shape) == 3 and shape[-1] == 1:
        shape = shape[:2]
    return shape, dtype


def _read_image(file, shape):
    if file.lower().endswith((".tif", ".tiff")):
        import tifffile

        try:
            array = tifffile.imread(file)
        except Exception as error:
            raise VolumeError(describe("Cannot read the TIFF slice (corrupt?).", "a readable TIFF",
                                       file=file, error=str(error))) from error
    else:
        from PIL import Image

        try:
            with Image.open(file) as image:
                if image.mode in ("RGB", "RGBA", "LA"):
                    array = _grey_from_colour(np.asarray(image), file)
                elif image.mode == "I":
                    array = np.asarray(image).astype(np.uint16)
                else:
                    array = np.asarray(image)
        except VolumeError:
            raise
        except Exception as error:
            raise VolumeError(describe("Cannot read the image slice (corrupt?).", "a readable PNG",
                                       file=file, error=str(error))) from error
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def _grey_from_colour(array, file):
    """Accepts colour images whose channels are equal (grey saved as RGB); refuses real colour."""
    channels = array[..., :3] if array.shape[-1] >= 3 else array[..., :1]
    if not (channels == channels[..., :1]).all():
        raise VolumeError(describe("Unsupported colour slice.", "grey-level slices", file=file))
    return np.ascontiguousarray(channels[..., 0])


def _folder_voxel_size(path, first_file):
    sidecar = os.path.join(path, FOLDER_METADATA)
    if os.path.isfile(sidecar):
        try:
            with open(sidecar, encoding="utf-8") as handle:
                sizes = json.load(handle).get("voxel_size_nm")
            return _check_voxel_size(sizes)
        except (OSError, ValueError, VolumeError):
            return None
    if first_file.lower().endswith((".tif", ".tiff")):
        import tifffile

        try:
            with tifffile.TiffFile(first_file) as tif:
                return _tiff_voxel_size(tif)
        except Exception:
            return None
    return None


def open_volume(path, dataset=None, percentiles=None):
    """Opens a z-stack lazily and returns a :class:`Volume`.

    Args:
        path: ``stack.tif`` (multi-page / BigTIFF / OME / ImageJ), ``file.h5:/volumes/raw``, a folder of
            PNG/TIFF slices, an existing :class:`Volume` (returned as is) or a NumPy ``(Z, Y, X)`` array.
        dataset: HDF5 dataset when ``path`` names only the file. Without it (and without ``:/dataset``
            in ``path``) ``/volumes/raw`` is used, or else the file's only 3-D dataset.
        percentiles: optional ``(lo, hi)``: normalise ``slice()`` by these percentiles of the volume
            (computed once on up to 16 slices) instead of the dtype's range.

    Raises:
        VolumeError: unreadable/corrupt files, 2-D images, colour stacks, unsupported dtypes, folders of
            mixed shapes, HDF5 addresses naming a missing dataset, bare HDF5 files with neither
            ``/volumes/raw`` nor exactly one 3-D dataset (the message lists the datasets). NaN/Inf in
            float data is reported when the slice is read.
        FileNotFoundError: the path does not exist.

    Example:
        >>> vol = open_volume("sample_A.hdf:/volumes/raw")   # doctest: +SKIP
        >>> vol.voxel_size                                     # doctest: +SKIP
        (40.0, 4.0, 4.0)
    """
    if isinstance(path, Volume):
        volume = path
    elif isinstance(path, np.ndarray):
        volume = ArrayVolume(path)
    else:
        path = os.fspath(path)
        kind = _kind_of(path)
        file = split_hdf5_path(path)[0]
        if not os.path.exists(file):
            raise FileNotFoundError(f"No such file or folder. Expected an existing volume (TIFF, "
                                    f"file.h5:/dataset or a folder of slices). Received: path={file!r}")
        if kind == "hdf5":
            volume = Hdf5Volume(path, dataset)
        elif kind == "tiff":
            volume = TiffVolume(path)
        elif kind == "folder" and os.path.isdir(path):
            volume = FolderVolume(path)
        elif kind == "image":
            shape, _ = _image_header(path)
            raise VolumeError(describe("A 2-D image was given where a stack of slices is needed.",
                                       "a 3-D volume: a multi-page TIFF, an HDF5 dataset or a folder of slices",
                                       shape=shape, path=path))
        else:
            volume = _sniff(path)
    if percentiles is not None:
        volume.set_percentile_window(percentiles)
    return volume


def _sniff(path):
    """Opens a file with an unusual suffix by its magic bytes (TIFF or HDF5)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise VolumeError(describe("Cannot read the file.", "a readable volume file", path=path,
                                   error=str(error))) from error
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return TiffVolume(path)
    if head == b"\x89HDF\r\n\x1a\n":
        return Hdf5Volume(path)
    raise VolumeError(describe("Unknown volume format.",
                               "a TIFF (.tif), an HDF5 address (file.h5:/dataset) or a folder of PNG/TIFF slices",
                               path=path))


def read_volume(path, dataset=None):
    """Reads a whole volume into memory: returns ``(raw array (Z, Y, X), voxel_size or None)``.

    Example:
        >>> array, voxel_size = read_volume("stack.tif")   # doctest: +SKIP
    """
    with open_volume(path, dataset) as volume:
        return np.array(volume.read_range(0, len(volume))), volume.voxel_size


# --------------------------------------------------------------------------------------------------
# Writing


class VolumeWriter:
    """Writes a volume slice by slice to a temporary name, renamed into place on :meth:`close`.

    Args:
        path: ``out.tif`` (ImageJ hyperstack TIFF; OME BigTIFF past 4 GB), ``out.h5[:/dataset]``
            (default dataset ``/volumes/raw`` with a ``resolution`` attribute in nm, CREMI style) or a
            folder (one PNG per slice for uint8/uint16, TIFF for float32, plus ``emzoo_volume.json``
            holding the voxel size).
        shape: ``(Z, Y, X)`` of the whole output.
        dtype: uint8, uint16 or float32.
        voxel_size: ``(z, y, x)`` nm written into the file's metadata, or ``None``.
        overwrite: replace an existing output (default: refuse with :class:`VolumeError`).
        bigtiff: force (True) or forbid (False) BigTIFF; default by size.

    ``write(raw)`` stores the next slice; ``write(z, raw)`` stores slice ``z``. Any order works for
    every format: the TIFF layout (ImageJ or OME metadata, page directories) is written first by
    ``tifffile.TiffWriter`` around an empty data block and each slice is then written to its place
    with an ordinary file write (no memory map), so memory use stays at about one slice however
    large the output and whatever the order; HDF5 writes go to a chunked dataset and folders get one
    file per slice. ``write_normalised`` takes float ``[0, 1]``.
    Closing with slices missing, or leaving the ``with`` block through an exception, deletes the
    temporary output and leaves any existing file untouched.

    Example:
        >>> with VolumeWriter("iso.tif", (97, 520, 520), "uint8", (10, 10, 10)) as out:  # doctest: +SKIP
        ...     for z in range(97):
        ...         out.write(slices[z])
    """

    def __init__(self, path, shape, dtype, voxel_size=None, overwrite=False, bigtiff=None):
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
        self.voxel_size = _check_voxel_size(voxel_size)
        self.kind = _kind_of(self.path)
        if self.kind not in ("hdf5", "tiff", "folder"):
            raise VolumeError(describe("Unknown output format.",
                                       "a path ending in .tif/.tiff, .h5/.hdf5 (optionally :/dataset) or a folder",
                                       path=self.path))
        file, dataset = split_hdf5_path(self.path)
        self.target = os.path.abspath(file)
        self.dataset = (dataset or _DEFAULT_HDF5_DATASET) if self.kind == "hdf5" else None
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
        self._closed = False
        self._sink = None
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._bigtiff = (nbytes > _BIGTIFF_BYTES) if bigtiff is None else bool(bigtiff)
        try:
            self._open()
        except BaseException:
            self._remove_temp()
            raise

    def _open(self):
        if self.kind == "tiff":
            import tifffile

            kwargs = {}
            if self._bigtiff:
                metadata = {"axes": "ZYX"}
                if self.voxel_size:
                    for axis, size in zip("ZYX", self.voxel_size):
                        metadata[f"PhysicalSize{axis}"] = size
                        metadata[f"PhysicalSize{axis}Unit"] = "nm"
                kwargs.update(bigtiff=True, ome=True, metadata=metadata)
            else:
                metadata = {"axes": "ZYX"}
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
        elif self.kind == "hdf5":
            import h5py

            self._h5 = h5py.File(self.temp_path, "w")
            chunks = (1, min(self.shape[1], 512), min(self.shape[2], 512))
            self._sink = self._h5.create_dataset(self.dataset, shape=self.shape, dtype=self.dtype, chunks=chunks)
            if self.voxel_size:
                self._sink.attrs["resolution"] = np.asarray(self.voxel_size, np.float64)
        else:
            os.mkdir(self.temp_path)
            self._sink = "folder"
            self._digits = max(5, len(str(self.shape[0] - 1)))

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
        _check_finite(data, f"slice {z} written to {self.path}")
        if self.kind == "folder":
            _write_slice_file(self._slice_file(z), data)
        elif self.kind == "tiff":
            self._sink.seek(self._data_offset + z * self._slice_bytes)
            little_endian = np.ascontiguousarray(data, self.dtype.newbyteorder("<"))
            self._sink.write(memoryview(little_endian).cast("B"))
        else:
            self._sink[z] = data
        self._written[z] = True
        self._next = z + 1

    def write_normalised(self, *args):
        """Like :meth:`write` for float ``[0, 1]`` data: clips, rounds to the output dtype, writes."""
        if len(args) == 1:
            return self.write(denormalise(args[0], self.dtype))
        z, data = args
        return self.write(z, denormalise(data, self.dtype))

    def _slice_file(self, z):
        suffix = ".tif" if self.dtype == np.float32 else ".png"
        return os.path.join(self.temp_path, f"slice_{z:0{self._digits}d}{suffix}")

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
        try:
            self._finish_sink()
            self._closed = True
            self._replace_target()
        except BaseException:
            self._closed = True
            self._remove_temp()
            raise

    def _finish_sink(self):
        if self.kind == "tiff":
            sink, self._sink = self._sink, None
            sink.close()
        elif self.kind == "hdf5":
            self._h5.close()
        else:
            with open(os.path.join(self.temp_path, FOLDER_METADATA), "w", encoding="utf-8") as handle:
                json.dump({"shape": list(self.shape), "dtype": str(self.dtype),
                           "voxel_size_nm": list(self.voxel_size) if self.voxel_size else None}, handle)

    def _replace_target(self):
        if os.path.isdir(self.target) and not os.path.islink(self.target):
            import shutil

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
            if self.kind == "hdf5" and getattr(self, "_h5", None) is not None:
                self._h5.close()
            elif self.kind == "tiff" and self._sink is not None:
                self._sink.close()
        except Exception:
            pass
        self._sink = None
        self._remove_temp()

    def _remove_temp(self):
        import shutil

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


def _write_slice_file(file, data):
    if data.dtype == np.float32:
        import tifffile

        tifffile.imwrite(file, data)
        return
    from PIL import Image

    if data.dtype == np.uint8:
        Image.fromarray(np.ascontiguousarray(data)).save(file)
    else:  # 16-bit grey PNG; frombytes avoids Pillow's dtype guessing differences between versions
        Image.frombytes("I;16", (data.shape[1], data.shape[0]), data.astype("<u2").tobytes()).save(file)


def write_volume(path, array, voxel_size=None, overwrite=False):
    """Writes a whole ``(Z, Y, X)`` array atomically (see :class:`VolumeWriter`); returns the path.

    Example:
        >>> write_volume("out.h5:/volumes/raw", np.zeros((4, 8, 8), np.uint8), (40, 4, 4))  # doctest: +SKIP
    """
    array = _as_zyx(np.asarray(array), path)
    with VolumeWriter(path, array.shape, array.dtype, voxel_size, overwrite=overwrite) as writer:
        for z in range(array.shape[0]):
            writer.write(z, array[z])
    return os.fspath(path)


__all__ = ["ArrayVolume", "FOLDER_METADATA", "Volume", "VolumeWriter", "check_dtype", "denormalise",
           "normalise", "normalise_between", "open_volume", "read_volume", "split_hdf5_path", "write_volume"]
