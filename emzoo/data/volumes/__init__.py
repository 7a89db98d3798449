"""Reading and writing z-stacks: one module per format, each with its reader and its writer.

Formats (module: addresses):

* ``hdf5``: ``sample.h5:/volumes/raw`` (also ``.hdf5``, ``.hdf``, ``.he5``; a bare ``sample.h5``
  means ``/volumes/raw`` or the file's only 3-D dataset);
* ``tiff``: ``stack.tif``, ``stack.ome.tif`` (also ``.tiff``, ``.btf``, ``.tf8``), multi-page,
  BigTIFF, OME or ImageJ;
* ``folder``: ``slices_dir/`` (PNG or TIFF slices, natural sort: ``2.png`` before ``10.png``);
* ``ome_zarr``: ``volume.ome.zarr`` (level 0 of its multiscale), ``volume.ome.zarr:/1`` (NGFF 0.4 / 0.5);
* ``zarr_array``: ``volume.zarr:/path/to/array`` (Zarr v2 / v3; a bare ``volume.zarr`` means its
  OME-Zarr level 0 or its only 3-D array);
* ``n5``: ``volume.n5:/setup0/timepoint0/s0`` (a bare ``volume.n5`` means its only 3-D dataset or ``s0``).

:func:`split_container_path` splits any container address (``file.h5:/dataset``,
``volume.zarr:/path/to/array``, ``volume.n5:/s0``) into its file or folder and its path inside;
the chunked formats share :mod:`~emzoo.data.volumes.chunked`, the two Zarr ones also
:mod:`~emzoo.data.volumes.zarr_store`.

:mod:`~emzoo.data.volumes.base` holds the :class:`Volume` contract every reader follows and the
conventions of the whole package (``(z, y, x)`` order, voxel sizes in nm, normalisation by the
dtype's range, atomic writes); :mod:`~emzoo.data.volumes.writer` holds :class:`VolumeWriter`, the
base of every format's writer (temporary name, rename into place, clean-up on errors). This module
is the face: :func:`open_volume` / :func:`read_volume` to read, :func:`create_volume` /
:func:`write_volume` to write.

Which format an address names is decided in one place, :data:`FORMATS` below: the first module
whose ``names(address)`` is true, after refusing single 2-D pictures (``.png``, ``.jpg``); files
with an unusual suffix are recognised by their leading bytes (each module's ``MAGIC``).

Adding a format is one module and one row: write ``volumes/<format>.py`` with
``names(address)``, ``MAGIC`` (a tuple of leading bytes, empty for folders), ``open_address(address,
dataset=None)`` returning a :class:`Volume` subclass, and ``Writer``, a :class:`VolumeWriter`
subclass (``_create``, ``_store``, ``_finish``, ``_release``); then add the module to
:data:`FORMATS`, with a test file in ``tests/data/volumes/``.

This package imports NumPy, tifffile, h5py and Pillow, and zarr or tensorstore when a chunked volume
is opened (never TensorFlow).

Example:
    >>> vol = open_volume("stack.tif")                     # doctest: +SKIP
    >>> vol.shape, vol.dtype, vol.voxel_size               # doctest: +SKIP
    ((30, 512, 512), dtype('uint8'), (50.0, 4.0, 4.0))
    >>> middle = vol.slice(15)                             # float32 in [0, 1]  # doctest: +SKIP
    >>> with create_volume("out.h5:/volumes/raw", vol.shape, vol.dtype, vol.voxel_size) as out:
    ...     for z in range(len(vol)):
    ...         out.write(vol.read(z))                     # doctest: +SKIP
"""

import os

import numpy as np

from emzoo.data.volumes import folder, hdf5, n5, ome_zarr, tiff, zarr_array
from emzoo.data.volumes.base import (SUPPORTED_DTYPES, ArrayVolume, Volume, as_zyx, check_dtype,
                                     check_voxel_size, denormalise, normalise, normalise_between,
                                     split_container_path)
from emzoo.data.volumes.folder import FOLDER_METADATA, FolderVolume, FolderVolumeWriter
from emzoo.data.volumes.hdf5 import Hdf5Volume, Hdf5VolumeWriter, split_hdf5_path
from emzoo.data.volumes.tiff import TiffVolume, TiffVolumeWriter
from emzoo.data.volumes.writer import VolumeWriter, check_writable
from emzoo.data.volumes.writer import check_not_input as _check_not_input
from emzoo.errors import VolumeError, describe
from emzoo.samples import resolve_input

# Address -> format: the first module whose names(address) is true. Order matters: an HDF5 address
# may end in anything after its ':', and the folder row also takes new paths without a suffix.
FORMATS = (ome_zarr, zarr_array, n5, hdf5, tiff, folder)  # the chunked ones first: each is a folder
CHUNKED_FORMATS = (ome_zarr, zarr_array, n5)  # written in place region by region by the blockwise engine
_PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _is_picture(path):
    """A single 2-D picture, which is never a volume (HDF5 addresses are judged by their file part)."""
    return split_container_path(path)[0].lower().endswith(_PICTURE_SUFFIXES)


def format_of(path):
    """The format module (a row of :data:`FORMATS`) ``path`` names, or ``None``.

    Example:
        >>> format_of("sample.h5:/volumes/raw").__name__
        'emzoo.data.volumes.hdf5'
    """
    if _is_picture(path):
        return None
    return next((module for module in FORMATS if module.names(path)), None)


def writer_class(path):
    """The :class:`VolumeWriter` subclass that writes ``path``; :class:`VolumeError` for other names."""
    module = format_of(os.fspath(path))
    if module is None:
        raise VolumeError(describe("Unknown output format.",
                                   "a path ending in .tif/.tiff, .h5/.hdf5, .zarr, .ome.zarr or .n5 (optionally "
                                   ":/dataset) or a folder",
                                   path=os.fspath(path)))
    return module.Writer


def open_volume(path, dataset=None, percentiles=None, axes=None, allow_incomplete=False):
    """Opens a z-stack lazily and returns a :class:`Volume`.

    Args:
        path: ``stack.tif`` (multi-page / BigTIFF / OME / ImageJ), ``file.h5:/volumes/raw``, a folder of
            PNG/TIFF slices, an existing :class:`Volume` (returned as is) or a NumPy ``(Z, Y, X)`` array;
            the word ``sample`` is the bundled sample stack (:mod:`emzoo.samples`) unless a file of
            that name exists.
        dataset: HDF5 dataset when ``path`` names only the file. Without it (and without ``:/dataset``
            in ``path``) ``/volumes/raw`` is used, or else the file's only 3-D dataset.
        percentiles: optional ``(lo, hi)``: normalise ``slice()`` by these percentiles of the volume
            (computed once on up to 16 slices) instead of the dtype's range.
        axes: TIFF only: the axes of the stored array, one letter per dimension ending in ``YX``
            (e.g. ``"ZYX"``), replacing those the file's metadata give (a 3-D array saved with
            ``imagej=True`` and no axes reads as channels ``CYX``).
        allow_incomplete: open a Zarr / OME-Zarr / N5 output of an emzoo job that has not finished
            (killed, or still running); such an output is refused by default, since its unfinished
            parts hold zeros.

    Raises:
        VolumeError: unreadable/corrupt/truncated files, 2-D images, colour stacks (naming the axes
            the file gave and how to override them), unsupported dtypes, folders of
            mixed shapes, HDF5 addresses naming a missing dataset, bare HDF5 files with neither
            ``/volumes/raw`` nor exactly one 3-D dataset (the message lists the datasets), emzoo
            outputs whose job has not finished (without ``allow_incomplete``). NaN/Inf in float data
            is reported when the slice is read.
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
        path = resolve_input(os.fspath(path))  # the word "sample": the bundled sample stack
        file = split_container_path(path)[0]
        if not os.path.exists(file):
            raise FileNotFoundError(f"No such file or folder. Expected an existing volume (TIFF, "
                                    f"file.h5:/dataset, a Zarr / N5 store, a folder of slices, or "
                                    f"the word sample). Received: path={file!r}")
        if _is_picture(path):
            shape, _ = folder.image_header(path)
            raise VolumeError(describe("A 2-D image was given where a stack of slices is needed.",
                                       "a 3-D volume: a multi-page TIFF, an HDF5 dataset or a folder of slices",
                                       shape=shape, path=path))
        module = format_of(path) or _sniff(path)
        if axes is not None and module is not tiff:
            raise VolumeError(describe("`axes` applies to TIFF files only.", "a TIFF file, or no `axes`",
                                       axes=axes, path=path))
        volume = module.open_address(path, dataset, **({} if axes is None else {"axes": axes}))
        if getattr(volume, "complete", True) is False and not allow_incomplete:
            volume.close()
            raise VolumeError(describe(
                f"{volume.path} is the output of an emzoo job that has not finished (its unfinished "
                "blocks hold zeros).", "a complete volume: finish the job with --resume, or read it as "
                "it is with --allow-incomplete (allow_incomplete=True in Python)", path=path))
    if percentiles is not None:
        volume.set_percentile_window(percentiles)
    return volume


def _sniff(path):
    """The format module of a file with an unusual suffix, by its leading bytes (``MAGIC``)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as error:
        raise VolumeError(describe("Cannot read the file.", "a readable volume file", path=path,
                                   error=str(error))) from error
    for module in FORMATS:
        if head.startswith(module.MAGIC):
            return module
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


def create_volume(path, shape, dtype, voxel_size=None, overwrite=False, **options):
    """Returns the writer of the format ``path`` names (see :class:`VolumeWriter` for its methods).

    Args:
        path: ``out.tif`` (ImageJ hyperstack TIFF; OME BigTIFF past 4 GB), ``out.h5[:/dataset]``
            (default dataset ``/volumes/raw`` with a ``resolution`` attribute in nm, CREMI style) or a
            folder (one PNG per slice for uint8/uint16, TIFF for float32, plus ``emzoo_volume.json``
            holding the voxel size).
        shape: ``(Z, Y, X)`` of the whole output.
        dtype: uint8, uint16 or float32.
        voxel_size: ``(z, y, x)`` nm written into the file's metadata, or ``None``.
        overwrite: replace an existing output (default: refuse with :class:`VolumeError`).
        **options: options of the format's writer, e.g. ``bigtiff=True`` (force) or ``False``
            (forbid) for TIFF; default by size. An option left at ``None`` is accepted by every format.

    Example:
        >>> with create_volume("iso.tif", (97, 520, 520), "uint8", (10, 10, 10)) as out:  # doctest: +SKIP
        ...     for z in range(97):
        ...         out.write(slices[z])
    """
    return writer_class(path)(path, shape, dtype, voxel_size, overwrite=overwrite, **options)


def check_not_input(input_address, output_address):
    """Refuses an output that would replace the input volume, even with ``overwrite``.

    See :func:`emzoo.data.volumes.writer.check_not_input`; a bare HDF5 input (``file.h5``) is first
    resolved to the dataset the reader opens (``/volumes/raw``, or the file's only 3-D dataset).
    Call it before any work; every writer also refuses to replace a volume this process has open.

    Example:
        >>> check_not_input("vol.h5:/volumes/raw", "vol.h5:/volumes/up")  # another dataset: fine  # doctest: +SKIP
    """
    input_address = os.fspath(input_address)
    file, inner = split_container_path(input_address)
    if format_of(input_address) is hdf5 and not inner and os.path.isfile(file) and hdf5._is_hdf5(file):
        try:
            entry = hdf5._open_shared(file, writable=False)
        except OSError:
            entry = None
        if entry is not None:
            try:
                found = hdf5._default_dataset(entry.handle, hdf5._datasets(entry.handle))
            finally:
                hdf5._release(entry)
            if found:
                input_address = f"{file}:{found}"
    return _check_not_input(input_address, output_address)


def output_exists(path):
    """Whether writing ``path`` would replace something that exists (``overwrite`` needed).

    For an HDF5 address that is its dataset (or a group of that name), not the file: a new dataset
    goes into an existing file beside the others. For the other formats it is the file or folder.

    Example:
        >>> output_exists("vol.h5:/volumes/up")     # vol.h5 holds only /volumes/raw  # doctest: +SKIP
        False
    """
    path = os.fspath(path)
    file, inner = split_container_path(path)
    if format_of(path) is hdf5 and os.path.isfile(file) and hdf5._is_hdf5(file):
        try:
            entry = hdf5._open_shared(file, writable=False)
        except OSError:
            return True
        try:
            return ("/" + (inner or hdf5.DEFAULT_DATASET).strip("/")) in entry.handle
        finally:
            hdf5._release(entry)
    return os.path.exists(file)


def open_regions(path):
    """An existing Zarr / OME-Zarr / N5 output reopened for writing in place, region by region
    (:class:`~emzoo.data.volumes.chunked.ChunkedRegions`: whole chunks per write; its
    ``marker`` says whether the output is complete). Other formats are refused.

    Example:
        >>> regions = open_regions("out.zarr")                  # doctest: +SKIP
        >>> regions.marker["complete"]                          # doctest: +SKIP
        False
    """
    path = os.fspath(path)
    module = format_of(path)
    if module not in CHUNKED_FORMATS:
        raise VolumeError(describe("Only chunked outputs can be written region by region.",
                                   "a Zarr (.zarr), OME-Zarr (.ome.zarr) or N5 (.n5) address", path=path))
    if not os.path.isdir(split_container_path(path)[0]):
        raise FileNotFoundError(f"No such folder. Expected an existing output. Received: path={path!r}")
    return module.open_regions(path)


def write_volume(path, array, voxel_size=None, overwrite=False):
    """Writes a whole ``(Z, Y, X)`` array atomically (see :func:`create_volume`); returns the path.

    Example:
        >>> write_volume("out.h5:/volumes/raw", np.zeros((4, 8, 8), np.uint8), (40, 4, 4))  # doctest: +SKIP
    """
    array = as_zyx(np.asarray(array), path)
    with create_volume(path, array.shape, array.dtype, voxel_size, overwrite=overwrite) as writer:
        for z in range(array.shape[0]):
            writer.write(z, array[z])
    return os.fspath(path)


__all__ = ["ArrayVolume", "CHUNKED_FORMATS", "FOLDER_METADATA", "FORMATS", "FolderVolume", "FolderVolumeWriter", "Hdf5Volume",
           "Hdf5VolumeWriter", "SUPPORTED_DTYPES", "TiffVolume", "TiffVolumeWriter", "Volume", "VolumeWriter",
           "check_dtype", "check_not_input", "check_writable", "check_voxel_size", "create_volume", "denormalise", "format_of", "normalise",
           "normalise_between", "open_regions", "output_exists", "open_volume", "read_volume",
           "split_container_path", "split_hdf5_path", "write_volume", "writer_class"]
