"""Folders of slices: one PNG or TIFF file per z; reader and writer.

Addresses: ``slices_dir/`` (an existing folder, or a new path without a suffix). Slices are taken
in natural-sort order (``2.png`` before ``10.png``), one file opened per slice read. Grey PNGs are
8 or 16 bit; colour PNGs are accepted only when their channels are equal. The writer writes one PNG
per slice for uint8/uint16 and one TIFF for float32, plus a sidecar ``emzoo_volume.json`` holding
the voxel size, which PNG cannot hold; readers take the voxel size from that sidecar, else from the
first slice when it is an ImageJ/OME TIFF.

This module imports NumPy, Pillow and tifffile (on use).
"""

import json
import os
import re

import numpy as np

from emzoo.data.volumes.base import Volume, check_dtype, check_voxel_size
from emzoo.data.volumes.tiff import tiff_voxel_size
from emzoo.data.volumes.writer import VolumeWriter
from emzoo.errors import VolumeError, describe

MAGIC = ()  # a folder has no leading bytes to sniff
# Sidecar written into slice folders so the voxel size survives formats (PNG) that cannot hold it.
FOLDER_METADATA = "emzoo_volume.json"
_SLICE_SUFFIXES = (".png", ".tif", ".tiff")


def names(path):
    """Whether ``path`` names a folder of slices: an existing folder, or a new path without a suffix."""
    path = os.fspath(path)
    if os.path.exists(path):
        return os.path.isdir(path)
    return not os.path.splitext(path)[1]


def open_address(path, dataset=None):
    """Opens a folder of slices (``dataset`` is for container formats; a folder holds one volume)."""
    return FolderVolume(path)


def _natural_key(name):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class FolderVolume(Volume):
    """A folder of PNG or TIFF slices in natural-sort order (``2.png`` before ``10.png``)."""

    def __init__(self, path):
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"No such folder. Expected a folder of slices. Received: path={path!r}")
        found = sorted((n for n in os.listdir(path) if n.lower().endswith(_SLICE_SUFFIXES)
                        and not n.startswith(".")), key=_natural_key)
        if not found:
            raise VolumeError(describe("The folder holds no slices.", "PNG or TIFF files (one per slice)",
                                       path=path))
        self._files = [os.path.join(path, n) for n in found]
        shapes = {}
        dtype = None
        for file in self._files:
            shape, file_dtype = image_header(file)
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
        return _read_image(self._files[z])


def image_header(file):
    """(shape (Y, X), dtype) of one image file (a slice, or a lone picture) without decoding its pixels."""
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


def _read_image(file):
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
            return check_voxel_size(sizes)
        except (OSError, ValueError, VolumeError):
            return None
    if first_file.lower().endswith((".tif", ".tiff")):
        import tifffile

        try:
            with tifffile.TiffFile(first_file) as tif:
                return tiff_voxel_size(tif)
        except Exception:
            return None
    return None


class FolderVolumeWriter(VolumeWriter):
    """Writes one PNG per slice (uint8/uint16) or TIFF (float32) and the ``emzoo_volume.json`` sidecar."""

    def _create(self):
        os.mkdir(self.temp_path)
        self._digits = max(5, len(str(self.shape[0] - 1)))

    def _store(self, z, data):
        suffix = ".tif" if self.dtype == np.float32 else ".png"
        _write_slice_file(os.path.join(self.temp_path, f"slice_{z:0{self._digits}d}{suffix}"), data)

    def _finish(self):
        with open(os.path.join(self.temp_path, FOLDER_METADATA), "w", encoding="utf-8") as handle:
            json.dump({"shape": list(self.shape), "dtype": str(self.dtype),
                       "voxel_size_nm": list(self.voxel_size) if self.voxel_size else None}, handle)


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


Writer = FolderVolumeWriter
