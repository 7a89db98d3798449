"""napari's reader and writer contributions: volumes read by emzoo, with their voxel size as ``scale``.

The reader takes HDF5 (``file.h5``, ``file.h5:/volumes/raw``), N5 (``volume.n5[:/s0]``), TIFF
(``stack.tif``: ImageJ, OME or plain) and Zarr / OME-Zarr (``volume.ome.zarr``, ``volume.zarr``)
addresses, any that :func:`emzoo.data.volumes.open_volume` reads, and gives one image layer whose
``scale`` is the file's voxel size (z, y, x in nm). napari's own TIFF reader drops an ImageJ
stack's voxel size, so the layer would have nothing for "make it isotropic" to use; HDF5 and N5 it
cannot open at all. The writer saves an image layer to ``.h5`` with its ``scale`` as the voxel size.

This module imports no Qt and no napari: the reader and writer are plain functions.

Example:
    >>> read_layers("stack.tif")[0][1]                       # doctest: +SKIP
    {'name': 'stack.tif', 'scale': (50.0, 4.0, 4.0)}
"""

import os

from emzoo.data.volumes import (format_of, hdf5, n5, ome_zarr, read_volume, split_container_path,
                                tiff, write_volume, zarr_array)
from emzoo.errors import EmzooError, describe

# The formats this reader opens (a folder of slices is left to napari: it may be anything).
READ_FORMATS = (hdf5, n5, tiff, zarr_array, ome_zarr)
# The system libraries Qt's xcb platform needs beyond napari's wheels on Debian / Ubuntu.
QT_SYSTEM_LIBRARIES = ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-image0",
                       "libxcb-render-util0", "libxkbcommon-x11-0", "libgl1")


def qt_missing_hint(missing=QT_SYSTEM_LIBRARIES):
    """What to install when Qt cannot start napari's window (one line).

    Example:
        >>> qt_missing_hint().startswith("sudo apt-get install")
        True
    """
    return (f"sudo apt-get install {' '.join(missing)} (Debian / Ubuntu: Qt's xcb platform needs "
            "them), or QT_QPA_PLATFORM=offscreen without a display")


def missing_qt_libraries():
    """The :data:`QT_SYSTEM_LIBRARIES` of Qt's xcb platform this Linux machine lacks (checked through
    the dynamic loader's cache), or ``[]`` (elsewhere, or when they cannot be looked up).

    Qt aborts the process without a word napari could catch when they are missing, so
    ``python -m emzoo.napari`` asks first.

    Example:
        >>> missing_qt_libraries()  # doctest: +SKIP
        ['libxcb-cursor0']
    """
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM", "xcb") != "xcb":
        return []
    sonames = {"libxcb-cursor0": "xcb-cursor", "libxcb-icccm4": "xcb-icccm",
               "libxcb-keysyms1": "xcb-keysyms", "libxcb-image0": "xcb-image",
               "libxcb-render-util0": "xcb-render-util", "libxkbcommon-x11-0": "xkbcommon-x11",
               "libgl1": "GL"}
    try:
        return [package for package, name in sonames.items() if ctypes.util.find_library(name) is None]
    except (OSError, RuntimeError):
        return []


def _address(path):
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    return path if format_of(path) in READ_FORMATS else None


def get_reader(path):
    """napari's reader hook: a function reading ``path``, or ``None`` when it is not ours."""
    address = _address(path)
    if address is None or not os.path.exists(split_container_path(address)[0]):
        return None
    if format_of(address) is tiff and not _is_grey_stack(address):
        return None  # a colour picture or a hyperstack: napari's own TIFF reader shows it
    return read_layers


def _is_grey_stack(address):
    from emzoo.data.volumes import open_volume

    try:
        with open_volume(address):
            return True
    except (EmzooError, OSError):
        return False


def read_layers(path):
    """``[(array, {"name", "scale"}, "image")]`` for the volume at ``path`` (a list of one path too).

    An unreadable address raises :class:`~emzoo.errors.EmzooError` with emzoo's one-line message,
    which napari shows as a notification.
    """
    address = _address(path) or os.fspath(path[0] if isinstance(path, (list, tuple)) else path)
    array, voxel_size = read_volume(address)
    meta = {"name": os.path.basename(split_container_path(address)[0].rstrip("/")) or address}
    if voxel_size is not None:
        meta["scale"] = tuple(float(v) for v in voxel_size)
    return [(array, meta, "image")]


def write_image(path, data, meta):
    """napari's single-layer writer: ``data`` to ``path`` (``.h5``), ``meta["scale"]`` as voxel size."""
    scale = meta.get("scale")
    voxel = None if scale is None or len(scale) != 3 else tuple(float(v) for v in scale)
    if getattr(data, "ndim", 0) != 3:
        raise EmzooError(describe("Only volumes can be saved by emzoo.", "a 3-D image layer (z, y, x)",
                                  shape=getattr(data, "shape", None)))
    return [write_volume(path, data, voxel_size=voxel, overwrite=True)]
