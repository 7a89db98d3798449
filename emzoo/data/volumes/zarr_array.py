"""Zarr arrays (Zarr v2 and v3): one 3-D array of a Zarr store; reader and writer.

Addresses: ``volume.zarr:/path/to/array``. A bare ``volume.zarr``, or an address naming a group,
means level 0 of the group's OME-Zarr multiscale (read here, :func:`find_level`; the conventions
and the OME-Zarr writer are in :mod:`~emzoo.data.volumes.ome_zarr`), else
its only 3-D array, else its only 3-D array named ``s0``; otherwise the message lists the arrays.
Voxel sizes come from the OME-Zarr multiscale an array belongs to, else from a ``resolution`` or
``voxel_size`` attribute ((z, y, x) nm, as emzoo and CREMI write them), ``element_size_um``, or a
``pixelResolution`` (``{"dimensions": (x, y, z), "unit"}``). Reads are lazy (a slice, a range of
slices, or a crop reads only the chunks it touches).

The writer writes a new store: the array at the store's root (``out.zarr``) or at the path given
(``out.zarr:/volumes/raw``), with a ``resolution`` attribute ((z, y, x) nm), Blosc/zstd chunks
(``chunks`` option; by default up to 8 slices deep and 256 x 256 wide) written a whole z-chunk row at
a time, in Zarr v2 by default (read by every Zarr tool, Fiji's included) or v3 with
``zarr_format=3``. The array's ``"emzoo"`` attribute says whether the output is complete (see
:mod:`~emzoo.data.volumes.zarr_chunked`); :func:`open_regions` reopens an existing array for
writing in place, region by region (the blockwise engine).

zarr-python (3.x) is the library: the reference implementation, reading and writing both Zarr
versions, and what napari, ``ome-zarr`` and Dask read Zarr with (``pip install 'emzoo[zarr]'``).

This module imports NumPy, and zarr (on use).
"""

import os

import numpy as np

from emzoo.data.volumes.base import round_size, split_container_path
from emzoo.data.volumes.zarr_chunked import (MARKER, UNIT_TO_NM, ChunkedRegions, ChunkedVolume, ChunkedVolumeWriter,
                                             attribute_voxel_size, check_layout, default_array, require)
from emzoo.errors import VolumeError, describe

MAGIC = ()  # a store is a folder
SUFFIXES = (".zarr",)


def names(path):
    """Whether ``path`` names a Zarr store (``.zarr``, with or without ``:/path/to/array``)."""
    return split_container_path(path)[0].lower().rstrip("/").endswith(SUFFIXES)


def open_address(path, dataset=None, level=None):
    """Opens the array ``path`` names (``dataset``, when given, wins over the address's path)."""
    return ZarrVolume(path, dataset, level=level)


# --------------------------------------------------------------------------------------------------
# OME-Zarr (NGFF 0.4 / 0.5) multiscales, read here since any .zarr may hold one


def multiscales(attrs):
    """The ``multiscales`` list of a group's attributes (NGFF 0.4 or 0.5), or ``None``."""
    attrs = dict(attrs)
    ome = attrs.get("ome")
    found = ome.get("multiscales") if isinstance(ome, dict) else attrs.get("multiscales")
    return found if isinstance(found, list) and found and isinstance(found[0], dict) else None


def find_level(attrs, where, level=None, array_path=None):
    """The level of the group's first multiscale: ``level`` (index or path; default 0), or the one
    stored at ``array_path``. Returns ``(path, zyx_axes, voxel_size)``, or ``None`` when the group
    holds no multiscale (or ``array_path`` is none of its levels)."""
    found = multiscales(attrs)
    if found is None:
        return None
    multiscale = found[0]
    datasets = [d for d in multiscale.get("datasets", []) if isinstance(d, dict) and "path" in d]
    paths = [str(d["path"]).strip("/") for d in datasets]
    if not paths:
        raise VolumeError(describe("The OME-Zarr multiscale lists no levels.", "a multiscale with datasets",
                                   path=where))
    if array_path is not None:
        if array_path.strip("/") not in paths:
            return None
        index = paths.index(array_path.strip("/"))
    elif level is None:
        index = 0
    elif str(level).strip("/") in paths:
        index = paths.index(str(level).strip("/"))
    else:
        try:
            index = int(level)
        except (TypeError, ValueError):
            index = -1
        if not 0 <= index < len(paths):
            raise VolumeError(describe("No such level in the OME-Zarr multiscale.",
                                       f"an index below {len(paths)} or one of the paths {', '.join(paths)}",
                                       level=level, path=where))
    keep = _space_axes(multiscale.get("axes"))
    return paths[index], keep, _voxel_size(multiscale, datasets[index], keep, where)


def _axis_names(axes):
    if not isinstance(axes, list):
        return None
    return [str(a.get("name") if isinstance(a, dict) else a).lower() for a in axes]


def _space_axes(axes):
    """The indices of the ``z``, ``y``, ``x`` axes, or ``None`` (no axes: the array's last three)."""
    axis_names = _axis_names(axes)
    if axis_names is None or not all(n in axis_names for n in "zyx"):
        return None
    return tuple(axis_names.index(n) for n in "zyx")


def _scale(transformations, where):
    """The ``scale`` of a list of coordinate transformations, or ``None`` when it has none;
    :class:`VolumeError` when it is not a list of positive numbers (NGFF requires numbers)."""
    if transformations is None:
        return None
    if not isinstance(transformations, list):
        raise _invalid("coordinateTransformations must be a list", where,
                       coordinateTransformations=transformations)
    for item in transformations:
        if isinstance(item, dict) and item.get("type") == "scale":
            scale = item.get("scale")
            if (not isinstance(scale, list) or not scale
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                               for v in scale)):
                raise _invalid("a scale must be a list of positive numbers, one per axis", where,
                               scale=scale)
            return [float(v) for v in scale]
    return None


def _invalid(rule, where, **found):
    """The error for OME-Zarr metadata that breaks the NGFF rules (saying what was found)."""
    return VolumeError(describe(f"The OME-Zarr metadata of {where} is invalid: {rule}.",
                                "NGFF 0.4 / 0.5 multiscale metadata (axes with a name, type and unit; "
                                "numeric scales), or the store written again", **found, path=where))


def _voxel_size(multiscale, dataset, keep, where="the store"):
    """(z, y, x) nm from the level's scale and the axes' units; ``None`` without a scale or units.

    Metadata that break the NGFF rules (a scale that is not numbers, or of another length than
    the axes; a space axis whose unit is not a length) are refused, saying what was found.
    """
    scale = _scale(dataset.get("coordinateTransformations"), where)
    outer = _scale(multiscale.get("coordinateTransformations"), where)
    axes = multiscale.get("axes")
    if scale is None or keep is None or not isinstance(axes, list):
        return None
    if len(scale) != len(axes):
        raise _invalid(f"the scale has {len(scale)} values for {len(axes)} axes", where, scale=scale,
                       axes=_axis_names(axes))
    if outer is not None and len(outer) == len(scale):
        scale = [a * b for a, b in zip(scale, outer)]
    sizes = []
    for axis in keep:
        unit = axes[axis].get("unit") if isinstance(axes[axis], dict) else None
        if unit is None:
            return None  # NGFF allows axes without units: the voxel size is unknown
        factor = UNIT_TO_NM.get(str(unit).strip().lower())
        if factor is None:
            raise _invalid(f"the unit of space axis {_axis_names(axes)[axis]!r} is not a length", where,
                           unit=unit)
        sizes.append(round_size(scale[axis] * factor))
    return tuple(sizes)


def compressor(zarr_format):
    """Blosc (zstd, byte shuffle): read by every Zarr implementation (Java, JavaScript, C++)."""
    if zarr_format == 2:
        import numcodecs

        return numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def create_array(group, name, shape, chunks, dtype, zarr_format, slash_keys=False):
    """A new ``(z, y, x)`` array in ``group`` (Blosc-compressed, fill value 0)."""
    options = {"dimension_names": ["z", "y", "x"]} if zarr_format == 3 else {}
    if zarr_format == 2 and slash_keys:
        options["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                              compressors=[compressor(zarr_format)], **options)


def _join(*parts):
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class ZarrVolume(ChunkedVolume):
    """A 3-D array of a Zarr store (v2 or v3; an OME-Zarr level), read lazily through zarr-python."""

    def __init__(self, path, dataset=None, level=None):
        zarr = require("zarr", "zarr", "Reading Zarr")
        store, inner = split_container_path(path)
        inner = _join(dataset or inner or "")
        if not os.path.isdir(store):
            raise FileNotFoundError(f"No such folder. Expected an existing Zarr store. Received: path={store!r}")
        try:
            root = zarr.open(store=store, mode="r")
        except Exception as error:  # noqa: BLE001 - zarr raises many kinds for a folder that is not Zarr
            raise VolumeError(describe("Cannot open the Zarr store (no Zarr metadata, or corrupt).",
                                       "a Zarr v2 or v3 store", path=store, error=str(error))) from None
        node = root
        if inner:
            node = root.get(inner) if isinstance(root, zarr.Group) else None
            if node is None:
                raise VolumeError(describe(f"Array {'/' + inner!r} not found in the Zarr store.",
                                           f"one of: {_listing(root)}", path=path))
        where = f"{store}:/{inner}" if inner else store
        keep = voxel_size = None
        multiscale = False
        if isinstance(node, zarr.Group):
            found = find_level(node.attrs, where, level)
            if found is not None:
                pick, keep, voxel_size = found
                multiscale = True
                array = node.get(pick)
                if not isinstance(array, zarr.Array):
                    raise VolumeError(describe(f"The OME-Zarr multiscale lists level {pick!r}, which the store "
                                               "lacks.", "a complete OME-Zarr store", path=where))
            else:
                if level is not None:
                    raise VolumeError(describe("`level` applies to OME-Zarr multiscales only.",
                                               "a group with OME-Zarr multiscale metadata, or no level",
                                               level=level, path=where))
                members = sorted((name, member.ndim) for name, member in node.members(max_depth=None)
                                 if isinstance(member, zarr.Array))
                pick = default_array(where, [m[0] for m in members], [m[1] for m in members])
                array = node[pick]
            inner = _join(inner, pick)
        else:
            array = node
            if level is not None:
                raise VolumeError(describe("`level` applies to OME-Zarr multiscales only; the address "
                                           "names an array.", "an address naming the multiscale's group",
                                           level=level, path=where))
            if inner:
                parent, _, name = inner.rpartition("/")
                group = root.get(parent) if parent else root
                found = find_level(group.attrs, where, array_path=name)
                if found is not None:
                    _, keep, voxel_size = found
                    multiscale = True
        if not multiscale:
            voxel_size = attribute_voxel_size(array.attrs)
        keep = check_layout(array.shape, f"{store}:/{inner}" if inner else store, keep)
        self._array = array
        self._keep = keep
        super().__init__(f"{store}:/{inner}" if inner else store, [array.shape[a] for a in keep], array.dtype,
                         voxel_size, array.chunks[keep[0]], marker=array.attrs.get(MARKER))

    def _fetch(self, z0, z1, y0, y1, x0, x1):
        index = [0] * self._array.ndim
        for axis, part in zip(self._keep, (slice(z0, z1), slice(y0, y1), slice(x0, x1))):
            index[axis] = part
        return np.asarray(self._array[tuple(index)])


def _listing(root):
    import zarr

    if not isinstance(root, zarr.Group):
        return "the store holds one array, at its root (address it without a path)"
    found = sorted("/" + name for name, member in root.members(max_depth=None) if isinstance(member, zarr.Array))
    return ", ".join(found) or "no arrays in the store"


class ZarrVolumeWriter(ChunkedVolumeWriter):
    """Writes ``out.zarr`` (array at the root) or ``out.zarr:/path/to/array``, with ``resolution`` in nm.

    Options: ``chunks`` (z, y, x), ``zarr_format`` (2, default, or 3).
    """

    OPTIONS = {"chunks": None, "zarr_format": 2}

    def _file_of(self, path):
        file, inner = split_container_path(path)
        self.array_path = _join(inner or "")
        return file

    def _open(self):
        zarr = require("zarr", "zarr", "Writing Zarr")
        zarr_format = self.options["zarr_format"]
        if zarr_format not in (2, 3):
            raise VolumeError(describe("Unsupported Zarr format.", "2 or 3", zarr_format=zarr_format))
        parent, _, name = self.array_path.rpartition("/")
        if name:
            group = zarr.open_group(self.temp_path, mode="w", zarr_format=zarr_format)
            for depth in range(1, len(parent.split("/")) + 1 if parent else 0):
                group.require_group("/".join(parent.split("/")[:depth]))
            self._array = create_array(group, self.array_path, self.shape, self.chunks, self.dtype,
                                                zarr_format)
        else:
            self._array = zarr.create_array(
                store=self.temp_path, shape=self.shape, chunks=self.chunks, dtype=self.dtype, fill_value=0,
                zarr_format=zarr_format, compressors=[compressor(zarr_format)],
                **({"dimension_names": ["z", "y", "x"]} if zarr_format == 3 else {}))
        if self.voxel_size:
            self._array.attrs["resolution"] = [round_size(v) for v in self.voxel_size]

    def _write_block(self, z0, block):
        self._array[z0:z0 + block.shape[0]] = block

    def _write_marker(self, value):
        self._array.attrs[MARKER] = value


Writer = ZarrVolumeWriter


class ZarrRegions(ChunkedRegions):
    """Zarr arrays of one output written in place: ``arrays[0]`` is the volume; a subclass may keep
    more (the levels of an OME-Zarr multiscale) and write them from the same regions."""

    def __init__(self, path, arrays):
        self._arrays = list(arrays)
        first = self._arrays[0]
        super().__init__(path, first.shape, first.dtype, first.chunks)

    def _write(self, z0, y0, x0, block):
        depth, height, width = block.shape
        self._arrays[0][z0:z0 + depth, y0:y0 + height, x0:x0 + width] = block

    def _read_marker(self):
        return self._arrays[0].attrs.get(MARKER)

    def _write_marker(self, value):
        for array in self._arrays:
            array.attrs[MARKER] = value


def open_arrays(path, levels=False):
    """The ``(z, y, x)`` Zarr array(s) an output address names, opened for writing in place: the array,
    or with ``levels`` every level of the multiscale it belongs to. Returns ``(address, arrays)``."""
    zarr = require("zarr", "zarr", "Writing Zarr")
    volume = ZarrVolume(path)  # resolves the address as a reader does (a group's default array)
    store, inner = split_container_path(volume.path)
    inner = _join(inner or "")
    root = zarr.open(store=store, mode="r+")
    paths = [inner]
    if levels and inner:
        parent, _, name = inner.rpartition("/")
        found = multiscales((root.get(parent) if parent else root).attrs)
        if found is not None:
            names = [str(d["path"]).strip("/") for d in found[0].get("datasets", []) if isinstance(d, dict)]
            paths = [_join(parent, n) for n in names[names.index(name):]] if name in names else paths
    arrays = [root.get(p) if p else root for p in paths]
    if not all(isinstance(a, zarr.Array) and a.ndim == 3 for a in arrays):
        raise VolumeError(describe("Only a 3-D (z, y, x) array can be written in place.",
                                   "an output emzoo created", path=volume.path))
    return volume.path, arrays


def open_regions(path):
    """The Zarr array ``path`` names, reopened for writing in place (see :class:`ChunkedRegions`).

    Example:
        >>> open_regions("out.zarr").write(0, 0, 0, block)            # doctest: +SKIP
    """
    return ZarrRegions(*open_arrays(path))
