"""napari's reader and writer contributions for the volumes napari cannot open itself (HDF5, N5).

The reader takes ``file.h5``, ``file.h5:/volumes/raw`` or ``volume.n5[:/s0]`` (any address
:func:`emzoo.data.volumes.open_volume` reads) and gives one image layer whose ``scale`` is the
file's voxel size (z, y, x in nm). The writer saves an image layer to ``.h5`` with its ``scale``
as the voxel size.
"""

import os

from emzoo.data.volumes import hdf5, n5, read_volume, split_hdf5_path, write_volume
from emzoo.errors import EmzooError, describe


def _address(path):
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = os.fspath(path)
    return path if hdf5.names(path) or n5.names(path) else None


def get_reader(path):
    """napari's reader hook: a function reading ``path``, or ``None`` when it is not ours."""
    address = _address(path)
    if address is None or not os.path.exists(split_hdf5_path(address)[0]):
        return None
    return read_layers


def read_layers(path):
    """``[(array, {"name", "scale"}, "image")]`` for the volume at ``path`` (a list of one path too).

    An unreadable address raises :class:`~emzoo.errors.EmzooError` with emzoo's one-line message,
    which napari shows as a notification.
    """
    address = _address(path) or os.fspath(path[0] if isinstance(path, (list, tuple)) else path)
    array, voxel_size = read_volume(address)
    meta = {"name": os.path.basename(split_hdf5_path(address)[0].rstrip("/")) or address}
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
