"""The volume contract every format's reader follows (:class:`Volume`), normalisation and shared checks.

Conventions, stated once for the whole of :mod:`emzoo.data.volumes`:

* A volume is grey-level and indexed ``(z, y, x)``; ``Volume.shape`` is ``(Z, Y, X)``.
  Stacks with a colour / sample axis of size > 1 are refused with a clear message (convert them to
  grey first); singleton channel axes are dropped.
* Voxel sizes are ``(z, y, x)`` in **nanometres**, or ``None`` when the file does not say;
  :func:`check_voxel_size` is the one check of a voxel size given by a caller.
* Values are normalised **by the dtype's range**, never per slice: ``uint8 / 255``,
  ``uint16 / 65535``. ``float32`` data inside ``[0, 1]`` is passed through unchanged; a float
  volume with any value outside ``[0, 1]`` is normalised by **its own range**: its minimum and
  maximum, computed once per volume (slice chunk by slice chunk, so a memory-mapped file is never
  loaded whole) when it is first normalised, map to 0 and 1. Results are mapped back the same way
  (:meth:`Volume.denormalise_raw`), so new slices lie in the input's range and copied slices stay
  bit-identical. NaN and Inf are refused with a message naming the slices that hold them.
  Percentile normalisation is an explicit option (:func:`normalise` ``percentiles=(lo, hi)``,
  ``open_volume(..., percentiles=(lo, hi))``), computed once per volume, not per slice, so
  intensities stay comparable along z.
* Writing goes to a temporary name in the destination folder and is renamed into place only when
  every slice has been written and the writer is closed; an exception removes the temporary output,
  so a failed run never leaves a partial volume behind (:class:`~emzoo.data.volumes.writer.VolumeWriter`
  does this for every format; a format's writer only creates, fills and finishes the temporary output).

This module imports NumPy only.
"""

import functools
import os
import re
import weakref

import numpy as np

from emzoo.errors import VolumeError, describe

SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_SUPPORTED_TEXT = "uint8, uint16 or float32 data"
_PERCENTILES_TEXT = "two numbers (lo, hi) with 0 <= lo < hi <= 100"
_VOXEL_SIZE_TEXT = "three positive numbers (z, y, x) in nm, or None"
_RANGE_CHUNK_BYTES = 64 * 2**20  # slices read at a time when a float volume's range is computed
# The volumes of this process that are open for reading from a file, so that no writer replaces one
# (see open_inputs and VolumeWriter); a volume leaves it when closed or garbage-collected.
_OPEN_INPUTS = weakref.WeakSet()


# --------------------------------------------------------------------------------------------------
# Checks and normalisation


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


def check_voxel_size(voxel_size):
    """Returns ``voxel_size`` as three floats ``(z, y, x)`` in nm (``None`` stays ``None``).

    Raises :class:`VolumeError` unless it is three finite positive numbers.

    Example:
        >>> check_voxel_size([40, 4, 4])
        (40.0, 4.0, 4.0)
    """
    if voxel_size is None:
        return None
    try:
        sizes = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError) as error:
        raise VolumeError(describe("Invalid value for argument `voxel_size`.", _VOXEL_SIZE_TEXT,
                                   voxel_size=voxel_size)) from error
    if len(sizes) != 3 or not all(np.isfinite(s) and s > 0 for s in sizes):
        raise VolumeError(describe("Invalid value for argument `voxel_size`.", _VOXEL_SIZE_TEXT,
                                   voxel_size=voxel_size))
    return sizes


def round_size(value):
    """Rounds a voxel size to 6 significant digits (TIFF rationals and unit conversions add noise)."""
    value = float(value)
    return float(f"{value:.6g}") if value > 0 and np.isfinite(value) else None


# A container file or folder (HDF5, Zarr, N5), optionally followed by ``:`` and the path inside it.
_CONTAINER = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|hdf|he5|zarr|n5))/?(?::(?P<inner>.*))?$", re.IGNORECASE)


def split_container_path(path):
    """Splits ``file.h5:/group/dataset``, ``volume.zarr:/path/to/array`` or ``volume.n5:/s0`` into
    ``(file or folder, path inside or None)``; other paths give ``(path, None)``.

    The first container suffix followed by ``:`` (or the end) ends the file part.

    Example:
        >>> split_container_path("volume.ome.zarr:/0")
        ('volume.ome.zarr', '/0')
        >>> split_container_path("stack.tif")
        ('stack.tif', None)
    """
    path = os.fspath(path)
    match = _CONTAINER.match(path)
    if not match:
        return path, None
    return match.group("file"), (match.group("inner") or None)


def normalise(array, dtype=None, percentiles=None):
    """Maps raw values to float32 ``[0, 1]`` by the range of their dtype.

    ``uint8`` is divided by 255 and ``uint16`` by 65535; ``float32`` (and ``float64``) values are
    returned as float32 unchanged (a :class:`Volume` maps float data outside ``[0, 1]`` by its own
    range first: :meth:`Volume.normalise_raw`). ``dtype`` overrides the
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

    (A volume's own inverse, which also undoes a percentile window or a float range, is
    :meth:`Volume.denormalise_raw`.)

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
        raise VolumeError(describe("Invalid value for argument `percentiles`.", _PERCENTILES_TEXT,
                                   percentiles=percentiles)) from error
    if not 0 <= lo < hi <= 100:
        raise VolumeError(describe("Invalid value for argument `percentiles`.", _PERCENTILES_TEXT,
                                   percentiles=percentiles))
    return lo, hi


def check_finite(array, where):
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise VolumeError(describe(f"Float data contains NaN or Inf ({bad} values) in {where}.",
                                   "finite values", path=where))


def as_zyx(array, path):
    """Drops a singleton channel axis and checks the result is a (Z, Y, X) grey stack."""
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


# --------------------------------------------------------------------------------------------------
# Reading


def open_inputs():
    """The addresses of the volumes this process has open for reading from files (not arrays).

    A writer refuses to replace any of them (an output must never be the input it is made from).

    Example:
        >>> open_inputs()  # doctest: +SKIP
        ['/data/stack.tif']
    """
    return [volume.path for volume in list(_OPEN_INPUTS)]


class Volume:
    """A lazily read grey-level z-stack; a format's subclass fetches raw slices, this class does the rest.

    Attributes:
        path: the address it was opened from (or ``"<array>"``).
        shape: ``(Z, Y, X)``.
        dtype: the stored NumPy dtype (uint8, uint16 or float32).
        voxel_size: ``(z, y, x)`` in nm, or ``None`` when the file does not record it.

    ``read(z)`` returns the raw slice, ``slice(z)`` the float32 slice in ``[0, 1]`` (dtype range, a
    float volume's own range when its data leaves ``[0, 1]``, or the volume's percentile window when
    opened with ``percentiles=``); :meth:`denormalise_raw` maps such values back. Indices may be negative
    (Python style). Use as a context manager, or call :meth:`close`.

    Subclasses implement ``_read_raw(z)`` and, where the format can do better than slice by slice,
    ``_read_raw_range(z0, z1)`` and ``_read_raw_crop(z, y, x, height, width)``; plus :meth:`close`.

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
        self._range = None  # (min, max) of a float volume's data, once computed
        if not self.path.startswith("<"):  # "<array>": nothing on disk to protect
            _OPEN_INPUTS.add(self)

    def __init_subclass__(cls, **kwargs):
        """Every format's ``close`` also takes the volume off the list of open inputs."""
        super().__init_subclass__(**kwargs)
        close = cls.__dict__.get("close")
        if close is not None and not getattr(close, "_leaves_open_inputs", False):
            @functools.wraps(close)
            def closing(self):
                _OPEN_INPUTS.discard(self)
                return close(self)
            closing._leaves_open_inputs = True
            cls.close = closing

    def _read_raw(self, z):
        raise NotImplementedError

    def _read_raw_range(self, z0, z1):
        return np.stack([self._read_raw(z) for z in range(z0, z1)]) if z1 > z0 else (
            np.zeros((0,) + self.shape[1:], self.dtype))

    def _read_raw_crop(self, z, y, x, height, width):
        return self._read_raw(z)[y:y + height, x:x + width]

    def close(self):
        """Releases file handles; the volume cannot be read afterwards."""
        _OPEN_INPUTS.discard(self)

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
        check_finite(array, f"{self.path} slice {z}")
        return array

    def read_range(self, z0, z1):
        """Raw slices ``z0 <= z < z1`` as a ``(z1 - z0, Y, X)`` array (Python slice semantics)."""
        z0, z1, _ = slice(z0, z1).indices(self.shape[0])
        array = np.asarray(self._read_raw_range(z0, max(z0, z1)))
        check_finite(array, f"{self.path} slices {z0}:{z1}")
        return array

    def read_crop(self, z, y, x, height, width):
        """Raw ``(height, width)`` window of slice ``z`` at ``(y, x)``; reads only that window where the
        format allows (memory-mapped TIFF, HDF5, arrays)."""
        z = self._index(z)
        array = np.asarray(self._read_raw_crop(z, int(y), int(x), int(height), int(width)))
        check_finite(array, f"{self.path} slice {z}")
        return array

    def slice(self, z):
        """Slice ``z`` as float32 ``(Y, X)`` in ``[0, 1]`` (see the normalisation rules above)."""
        return self.normalise_raw(self.read(z))

    def slices(self, z0, z1):
        """Normalised slices ``z0 <= z < z1`` as float32 ``(n, Y, X)`` in ``[0, 1]``."""
        return self.normalise_raw(self.read_range(z0, z1))

    def normalise_raw(self, array):
        """Normalises raw values of this volume to float32 [0, 1].

        By the percentile window when one is set, else by the volume's own range for float data
        outside ``[0, 1]`` (see :meth:`value_range`), else by the dtype's range (float data inside
        ``[0, 1]`` is passed through unchanged).
        """
        window = self._mapping()
        if window is not None:
            return normalise_between(array, *window)
        return normalise(array, self.dtype)

    def denormalise_raw(self, unit):
        """Inverse of :meth:`normalise_raw`: float ``[0, 1]`` values back to this volume's raw values.

        Values are clipped to ``[0, 1]`` first, so results stay inside the range the volume was
        normalised by; integer dtypes are rounded.

        Example:
            >>> vol = ArrayVolume(np.array([[[-0.5]], [[1.5]]], np.float32))
            >>> vol.denormalise_raw(np.array([0.0, 0.5, 1.0])).tolist()
            [-0.5, 0.5, 1.5]
        """
        window = self._mapping()
        if window is None:
            return denormalise(unit, self.dtype)
        lo, hi = window
        unit = np.clip(np.asarray(unit, np.float64), 0.0, 1.0)
        values = lo + unit * (hi - lo)
        if self.dtype.kind == "f":
            return np.clip(values, lo, hi).astype(self.dtype)
        info = np.iinfo(self.dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(self.dtype)

    def value_range(self):
        """``(min, max)`` of the data as floats: for float volumes, computed once and cached.

        Float volumes are read chunk by chunk (a bounded number of slices at a time, so a
        memory-mapped file is never loaded whole); NaN or Inf raises :class:`VolumeError`. Integer
        volumes give their dtype's range without reading anything.

        Example:
            >>> ArrayVolume(np.array([[[-0.25]], [[1.5]]], np.float32)).value_range()
            (-0.25, 1.5)
        """
        if self.dtype.kind != "f":
            return 0.0, float(np.iinfo(self.dtype).max)
        if getattr(self, "_range", None) is None:
            slice_bytes = max(1, self.shape[1] * self.shape[2] * self.dtype.itemsize)
            step = max(1, _RANGE_CHUNK_BYTES // slice_bytes)
            lo, hi = np.inf, -np.inf
            for z0 in range(0, self.shape[0], step):
                chunk = self.read_range(z0, z0 + step)  # refuses NaN / Inf
                if chunk.size:
                    lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
            self._range = (lo, hi)
        return self._range

    def set_value_range(self, lo, hi):
        """Uses ``(lo, hi)``, as :meth:`value_range` computed it elsewhere (e.g. by the client of a
        blockwise job), instead of reading the whole volume again.

        Example:
            >>> volume = ArrayVolume(np.array([[[-0.25]], [[1.5]]], np.float32))
            >>> volume.set_value_range(-0.25, 1.5); volume.value_range()
            (-0.25, 1.5)
        """
        self._range = (float(lo), float(hi))

    def _mapping(self):
        """``(vmin, vmax)`` mapped to 0 and 1, or ``None`` when the dtype's range applies."""
        if self._window is not None:
            return self._window
        if self.dtype.kind != "f":
            return None
        lo, hi = self.value_range()
        return None if lo >= 0.0 and hi <= 1.0 else (lo, hi)

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
        array = as_zyx(np.asarray(array), path)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        check_dtype(array.dtype, name="dtype")
        super().__init__(path, array.shape, array.dtype, check_voxel_size(voxel_size))
        self.array = array

    def _read_raw(self, z):
        return self.array[z]

    def _read_raw_range(self, z0, z1):
        return self.array[z0:z1]

    def _read_raw_crop(self, z, y, x, height, width):
        return self.array[z, y:y + height, x:x + width]
