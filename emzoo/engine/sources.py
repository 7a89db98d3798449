"""The checks a volume job makes before any work: its input volume, voxel size and output path.

Inputs are paths (TIFF, HDF5, slice folder), NumPy arrays (Z, Y, X) or Volume-like objects
(``shape``, ``dtype``, ``voxel_size``, ``read``, ``slice``; see :mod:`emzoo.data.volumes`). Voxel
sizes are (z, y, x) in nm. Every check raises one :class:`~emzoo.errors.EmzooError` (usually a
:class:`~emzoo.errors.VolumeError`) saying what is wrong and what is expected.
"""

import os

import numpy as np

from emzoo.data.volumes import (SUPPORTED_DTYPES, ArrayVolume, check_voxel_size, open_volume,
                                split_hdf5_path)
from emzoo.errors import EmzooError, VolumeError, describe


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


def open_source(volume):
    """A Volume-like object (``shape``, ``dtype``, ``voxel_size``, ``read``, ``slice``)."""
    if isinstance(volume, np.ndarray):
        return ArrayVolume(volume)
    if isinstance(volume, (str, os.PathLike)):
        path = os.fspath(volume)
        try:
            return open_volume(path)
        except (EmzooError, FileNotFoundError):
            raise
        except Exception as error:  # noqa: BLE001 - any reader failure is a bad input file
            message = " ".join(str(error).split()) or type(error).__name__
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


def check_output(output, overwrite):
    """``output`` as a path that may be written (``None``: the result is returned as an array)."""
    if output is None:
        return None
    path = os.fspath(output)
    file, _ = split_hdf5_path(path)
    if os.path.exists(file) and not overwrite:
        raise VolumeError(describe(f"The output {file} already exists.",
                                   "a new path, or overwrite=True (--overwrite)", output=path))
    parent = os.path.dirname(os.path.abspath(file))
    if not os.path.isdir(parent):
        raise VolumeError(describe(f"The output folder {parent} does not exist.",
                                   "an existing folder", output=path))
    return path
