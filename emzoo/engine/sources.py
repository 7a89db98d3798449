"""The checks a volume job makes before any work: its input volume, voxel size, output path and size.

Inputs are paths (TIFF, HDF5, slice folder), NumPy arrays (Z, Y, X) or Volume-like objects
(``shape``, ``dtype``, ``voxel_size``, ``read``, ``slice``; see :mod:`emzoo.data.volumes`). Voxel
sizes are (z, y, x) in nm. Every check raises one :class:`~emzoo.errors.EmzooError` (usually a
:class:`~emzoo.errors.VolumeError`) saying what is wrong and what is expected.

An output may be at most :data:`MAX_OUTPUT_BYTES` (1 TiB; the environment variable
``EMZOO_MAX_OUTPUT_BYTES`` sets another limit, in bytes), and no larger than the free space of its
folder (or, for an array result, than the machine's memory).
"""

import os
import shutil

import numpy as np

from emzoo.data.volumes import (SUPPORTED_DTYPES, ArrayVolume, check_not_input, check_voxel_size,
                                check_writable, open_volume, output_exists, split_container_path)
from emzoo.errors import EmzooError, VolumeError, describe, one_line

MAX_OUTPUT_BYTES = 2**40  # the largest output written without EMZOO_MAX_OUTPUT_BYTES saying more
MAX_OUTPUT_ENV = "EMZOO_MAX_OUTPUT_BYTES"


def parse_voxel_size(text):
    """``"z,y,x"`` (nm) as a tuple of three positive floats; a single number means isotropic.

    Example:
        >>> parse_voxel_size("40,4,4")
        (40.0, 4.0, 4.0)
    """
    values = str(text).replace("x", ",").split(",")
    if len(values) == 1:
        values = values * 3
    try:
        return check_voxel_size(values)
    except EmzooError:  # the flag's own wording, with the text as typed
        raise EmzooError(describe("Invalid value for argument `voxel_size`.",
                                  "three positive numbers z,y,x in nm, e.g. 40,4,4",
                                  voxel_size=text)) from None


def open_source(volume, allow_incomplete=False):
    """A Volume-like object (``shape``, ``dtype``, ``voxel_size``, ``read``, ``slice``).

    A path is opened with :func:`~emzoo.data.volumes.open_volume`, which refuses the output of an
    emzoo job that has not finished unless ``allow_incomplete``.
    """
    if isinstance(volume, np.ndarray):
        return ArrayVolume(volume)
    if isinstance(volume, (str, os.PathLike)):
        path = os.fspath(volume)
        try:
            return open_volume(path, allow_incomplete=allow_incomplete)
        except (EmzooError, FileNotFoundError):
            raise
        except Exception as error:  # noqa: BLE001 - any reader failure is a bad input file
            message = one_line(error)
            raise VolumeError(describe(f"Cannot read the input volume {path}: {message}.",
                                       "a readable TIFF, HDF5 or slice folder", volume=path)) from None
    if all(hasattr(volume, name) for name in ("shape", "dtype", "read", "slice")):
        return volume
    raise EmzooError(describe("Invalid value for argument `volume`.",
                              "a path, a NumPy array (Z, Y, X) or a Volume from emzoo.data.volumes",
                              volume=type(volume).__name__))


def check_volume(source, minimum_slices=2):
    """The (Z, Y, X) shape of ``source``: a grey stack of >= ``minimum_slices`` writable slices."""
    shape = tuple(source.shape)
    if len(shape) != 3:
        raise VolumeError(describe("The volume must be a grey-level stack of 2-D slices.",
                                   "a shape (Z, Y, X)", shape=shape))
    if shape[0] < minimum_slices:
        raise VolumeError(describe(
            f"The volume has {shape[0]} slice(s); interpolating along z needs at least "
            f"{minimum_slices}.", f"a stack of >= {minimum_slices} slices", shape=shape))
    dtype = np.dtype(source.dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise VolumeError(describe("Unsupported volume dtype.", "uint8, uint16 or float32",
                                   dtype=str(dtype)))
    return shape


def source_voxel_size(source, voxel_size):
    """The voxel size (z, y, x) in nm: the explicit one, else the file's, else None."""
    return check_voxel_size(voxel_size if voxel_size is not None
                            else getattr(source, "voxel_size", None))


def check_output(output, overwrite, volume=None):
    """``output`` as a path that may be written (``None``: the result is returned as an array).

    Checked before any work: it is not the input ``volume`` (when that is a path; never replaced,
    even with ``overwrite``), it does not exist unless ``overwrite`` (an HDF5 output exists when
    its dataset does: a new dataset goes into an existing file), and its folder exists and can be
    written.
    """
    if output is None:
        return None
    path = os.fspath(output)
    if isinstance(volume, (str, os.PathLike)):
        check_not_input(volume, path)
    file, _ = split_container_path(path)
    if output_exists(path) and not overwrite:
        raise VolumeError(describe(f"The output {path} already exists.",
                                   "a new path, or overwrite=True to replace it", output=path))
    parent = os.path.dirname(os.path.abspath(file))
    if not os.path.isdir(parent):
        raise VolumeError(describe(f"The output folder {parent} does not exist.",
                                   "an existing folder", output=path))
    check_writable(path)
    return path


def human_bytes(count):
    """``count`` bytes in binary units, e.g. ``"1.5 GiB"``.

    Example:
        >>> human_bytes(3 * 2**40)
        '3 TiB'
    """
    value = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            break
        value /= 1024
    if unit == "PiB" and value >= 1024:
        return f"{value:.3g} PiB"
    if unit == "bytes":
        return f"{int(value)} bytes"
    return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"


def max_output_bytes():
    """The output size limit: ``$EMZOO_MAX_OUTPUT_BYTES`` (bytes) when set, else :data:`MAX_OUTPUT_BYTES`."""
    text = os.environ.get(MAX_OUTPUT_ENV, "").strip()
    if not text:
        return MAX_OUTPUT_BYTES
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise EmzooError(describe(f"Invalid value for the environment variable {MAX_OUTPUT_ENV}.",
                                  "a positive number of bytes, e.g. 2e12",
                                  **{MAX_OUTPUT_ENV: text}))
    return int(value)


def check_output_size(shape, dtype, output, remedy="a smaller factor"):
    """Refuses an output of ``shape`` (Z, Y, X) and ``dtype`` that is too large to make.

    Too large means over :func:`max_output_bytes`, or over the free space of the output's folder
    (``output`` a path), or over the machine's memory (``output=None``: the result is an array).
    Only arithmetic: nothing is allocated or written. ``remedy`` starts the "Expected" part of
    the message. Returns the size in bytes.

    Example:
        >>> check_output_size((9, 64, 64), "uint8", None)
        36864
    """
    shape = tuple(int(s) for s in shape)
    size = np.dtype(dtype).itemsize
    for extent in shape:
        size *= extent  # Python ints: no overflow however large the factor
    what = f"{' x '.join(str(s) for s in shape)} {np.dtype(dtype).name}"
    limit = max_output_bytes()
    if size > limit:
        raise VolumeError(describe(
            f"The output would be {human_bytes(size)} ({what}), more than the limit of "
            f"{human_bytes(limit)} ({MAX_OUTPUT_ENV}).",
            f"{remedy}, or {MAX_OUTPUT_ENV} set to a larger number of bytes", output_shape=shape))
    if output is None:
        room = _memory_bytes()
        if room is not None and size > room:
            raise VolumeError(describe(
                f"The output would be {human_bytes(size)} ({what}), more than this machine's memory "
                f"({human_bytes(room)}).", f"{remedy}, or an output path to write to",
                output_shape=shape))
        return size
    folder = os.path.dirname(os.path.abspath(split_container_path(os.fspath(output))[0]))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return size
    if size > free:
        raise VolumeError(describe(
            f"The output would be {human_bytes(size)} ({what}), more than the free space in "
            f"{folder} ({human_bytes(free)}).", f"{remedy}, or an output folder with more free "
            "space", output=os.fspath(output)))
    return size


def _memory_bytes():
    """The machine's physical memory in bytes, or ``None`` where it cannot be asked."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
