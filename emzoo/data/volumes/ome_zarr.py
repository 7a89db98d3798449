"""OME-Zarr (OME-NGFF 0.4 on Zarr v2, 0.5 on Zarr v3): the reader of every Zarr store; the writer.

Addresses: ``volume.ome.zarr`` (level 0 of the store's multiscale), ``volume.ome.zarr:/1`` (the
level stored at ``1``), or ``open_address(path, level=1)``. Any Zarr store may hold a multiscale,
so the reader here, :class:`ZarrVolume`, reads every Zarr address, the ``.zarr`` ones of
:mod:`~emzoo.data.volumes.zarr_array` too: a group holding a multiscale (:func:`multiscales`) means
a level of it (:func:`find_level`; level 0 by default), any other group its only 3-D array (else its
only 3-D array named ``s0``). A level's voxel size is its ``scale`` in ``coordinateTransformations``
(times the multiscale's own, if any), in each space axis' ``unit`` converted to nm; the ``z``,
``y``, ``x`` axes are taken from ``axes``, and any other axis (``t``, ``c``) must have size 1. An
array outside a multiscale takes its voxel size from its attributes
(:func:`~emzoo.data.volumes.chunked.attribute_voxel_size`). Reads are lazy (a slice, a range of
slices, or a crop reads only the chunks it touches).

The writer writes a new store with one multiscale of ``levels`` levels (default 1; more adds a
pyramid halved in y and x per level by block means, z kept, so each level is written with the same
z-chunks as level 0), axes ``z, y, x`` in nanometres and each level's scale (and the translation of
its block centres). NGFF 0.4 (Zarr v2, ``/`` chunk keys) is the default, for the widest set of
readers (Fiji / MoBIE, napari, neuroglancer, ``ome-zarr``); ``ome_version="0.5"`` writes Zarr v3.
The metadata is written by this module with zarr-python (no ``ome-zarr`` dependency) and checked in
the tests with the ``ome-zarr`` package's reader. Its arrays are created as
:mod:`~emzoo.data.volumes.zarr_store` creates every Zarr array emzoo writes.

This module imports NumPy, and zarr (on use).
"""

import os

import numpy as np

from emzoo.data.volumes.base import round_size, split_container_path
from emzoo.data.volumes.chunked import (MARKER, UNIT_TO_NM, ChunkedVolume, ChunkedVolumeWriter,
                                        attribute_voxel_size, check_layout, default_array,
                                        join_path, require, suffix_names)
from emzoo.data.volumes.zarr_store import ZarrRegions, create_array
from emzoo.errors import VolumeError, describe

MAGIC = ()  # a store is a folder
SUFFIXES = (".ome.zarr",)
NGFF_VERSIONS = ("0.4", "0.5")
_MAX_LEVELS = 12

names = suffix_names(SUFFIXES)


def open_address(path, dataset=None, level=None):
    """Opens a level of an OME-Zarr multiscale (``level``: an index or a level's path; default 0).

    Example:
        >>> open_address("lab.ome.zarr", level=1).voxel_size           # doctest: +SKIP
        (100.0, 8.0, 8.0)
    """
    return ZarrVolume(path, dataset, level=level)


# --------------------------------------------------------------------------------------------------
# Reading: NGFF multiscale metadata, and the reader of every Zarr store


def multiscales(attrs):
    """The ``multiscales`` list of a group's attributes (NGFF 0.4 or 0.5), or ``None``.

    Example:
        >>> multiscales({"ome": {"version": "0.5", "multiscales": [{"datasets": []}]}})
        [{'datasets': []}]
        >>> multiscales({"resolution": [40, 4, 4]}) is None
        True
    """
    attrs = dict(attrs)
    ome = attrs.get("ome")
    found = ome.get("multiscales") if isinstance(ome, dict) else attrs.get("multiscales")
    return found if isinstance(found, list) and found and isinstance(found[0], dict) else None


def find_level(attrs, where, level=None, array_path=None):
    """The level of the group's first multiscale: ``level`` (index or path; default 0), or the one
    stored at ``array_path``. Returns ``(path, zyx_axes, voxel_size)``, or ``None`` when the group
    holds no multiscale (or ``array_path`` is none of its levels).

    Example:
        >>> axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
        >>> scale = [{"type": "scale", "scale": [40, 8, 8]}]
        >>> level = {"path": "s1", "coordinateTransformations": scale}
        >>> find_level({"multiscales": [{"axes": axes, "datasets": [level]}]}, "lab.zarr")
        ('s1', (0, 1, 2), (40.0, 8.0, 8.0))
    """
    found = multiscales(attrs)
    if found is None:
        return None
    multiscale = found[0]
    datasets = [d for d in multiscale.get("datasets", []) if isinstance(d, dict) and "path" in d]
    paths = [str(d["path"]).strip("/") for d in datasets]
    if not paths:
        raise VolumeError(describe("The OME-Zarr multiscale lists no levels.",
                                   "a multiscale with datasets", path=where))
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
            raise VolumeError(describe(
                "No such level in the OME-Zarr multiscale.",
                f"an index below {len(paths)} or one of the paths {', '.join(paths)}",
                level=level, path=where))
    keep = _space_axes(multiscale.get("axes"))
    return paths[index], keep, _voxel_size(multiscale, datasets[index], keep, where)


def _axis_names(axes):
    if not isinstance(axes, list):
        return None
    return [str(a.get("name") if isinstance(a, dict) else a).lower() for a in axes]


def _space_axes(axes):
    """The indices of the ``z``, ``y``, ``x`` axes, or ``None`` (no axes: the array's last
    three)."""
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
                                "NGFF 0.4 / 0.5 multiscale metadata (axes with a name, type and "
                                "unit; numeric scales), or the store written again", **found,
                                path=where))


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
        raise _invalid(f"the scale has {len(scale)} values for {len(axes)} axes", where,
                       scale=scale, axes=_axis_names(axes))
    if outer is not None and len(outer) == len(scale):
        scale = [a * b for a, b in zip(scale, outer)]
    sizes = []
    for axis in keep:
        unit = axes[axis].get("unit") if isinstance(axes[axis], dict) else None
        if unit is None:
            return None  # NGFF allows axes without units: the voxel size is unknown
        factor = UNIT_TO_NM.get(str(unit).strip().lower())
        if factor is None:
            raise _invalid(f"the unit of space axis {_axis_names(axes)[axis]!r} is not a length",
                           where, unit=unit)
        sizes.append(round_size(scale[axis] * factor))
    return tuple(sizes)


class ZarrVolume(ChunkedVolume):
    """A 3-D array of a Zarr store (v2 or v3; an OME-Zarr level), read lazily through zarr-python.

    ``path`` is any Zarr address (``.zarr`` or ``.ome.zarr``; ``dataset``, when given, wins over
    its path inside); ``level`` picks a level of the multiscale the address's group holds.

    Example:
        >>> ZarrVolume("lab.zarr:/volumes/raw").voxel_size                # doctest: +SKIP
        (40.0, 4.0, 4.0)
    """

    def __init__(self, path, dataset=None, level=None):
        zarr = require("zarr", "zarr", "Reading Zarr")
        store, inner = split_container_path(path)
        inner = join_path(dataset or inner or "")
        if not os.path.isdir(store):
            raise FileNotFoundError(f"No such folder. Expected an existing Zarr store. "
                                    f"Received: path={store!r}")
        try:
            root = zarr.open(store=store, mode="r")
        except Exception as error:  # noqa: BLE001 - zarr raises many kinds for a folder not Zarr
            raise VolumeError(describe("Cannot open the Zarr store (no Zarr metadata, or corrupt).",
                                       "a Zarr v2 or v3 store", path=store,
                                       error=str(error))) from None
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
                    raise VolumeError(describe(
                        f"The OME-Zarr multiscale lists level {pick!r}, which the store lacks.",
                        "a complete OME-Zarr store", path=where))
            else:
                if level is not None:
                    raise VolumeError(describe(
                        "`level` applies to OME-Zarr multiscales only.",
                        "a group with OME-Zarr multiscale metadata, or no level", level=level,
                        path=where))
                members = sorted((name, member.ndim)
                                 for name, member in node.members(max_depth=None)
                                 if isinstance(member, zarr.Array))
                pick = default_array(where, [m[0] for m in members], [m[1] for m in members])
                array = node[pick]
            inner = join_path(inner, pick)
        else:
            array = node
            if level is not None:
                raise VolumeError(describe(
                    "`level` applies to OME-Zarr multiscales only; the address names an array.",
                    "an address naming the multiscale's group", level=level, path=where))
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
        super().__init__(f"{store}:/{inner}" if inner else store, [array.shape[a] for a in keep],
                         array.dtype, voxel_size, array.chunks[keep[0]],
                         marker=array.attrs.get(MARKER))

    def _fetch(self, z0, z1, y0, y1, x0, x1):
        index = [0] * self._array.ndim
        for axis, part in zip(self._keep, (slice(z0, z1), slice(y0, y1), slice(x0, x1))):
            index[axis] = part
        return np.asarray(self._array[tuple(index)])


def _listing(root):
    import zarr

    if not isinstance(root, zarr.Group):
        return "the store holds one array, at its root (address it without a path)"
    found = sorted("/" + name for name, member in root.members(max_depth=None)
                   if isinstance(member, zarr.Array))
    return ", ".join(found) or "no arrays in the store"


def open_arrays(path, levels=False):
    """The ``(z, y, x)`` Zarr array(s) an output address names, opened for writing in place: the
    array, or with ``levels`` every level of the multiscale it belongs to. Returns ``(address,
    arrays)``.

    Example:
        >>> address, arrays = open_arrays("out.ome.zarr", levels=True)  # doctest: +SKIP
    """
    zarr = require("zarr", "zarr", "Writing Zarr")
    volume = ZarrVolume(path)  # resolves the address as a reader does (a group's default array)
    store, inner = split_container_path(volume.path)
    inner = join_path(inner or "")
    root = zarr.open(store=store, mode="r+")
    paths = [inner]
    if levels and inner:
        parent, _, name = inner.rpartition("/")
        found = multiscales((root.get(parent) if parent else root).attrs)
        if found is not None:
            stored = [str(d["path"]).strip("/") for d in found[0].get("datasets", [])
                      if isinstance(d, dict)]
            if name in stored:
                paths = [join_path(parent, n) for n in stored[stored.index(name):]]
    arrays = [root.get(p) if p else root for p in paths]
    if not all(isinstance(a, zarr.Array) and a.ndim == 3 for a in arrays):
        raise VolumeError(describe("Only a 3-D (z, y, x) array can be written in place.",
                                   "an output emzoo created", path=volume.path))
    return volume.path, arrays


# --------------------------------------------------------------------------------------------------
# Writing


def multiscale_attributes(version, name, voxel_size, shapes):
    """The group attributes of a ``z, y, x`` multiscale whose level ``i`` is stored at ``str(i)``,
    halved ``i`` times in y and x (``shapes``: each level's shape).

    Example:
        >>> attrs = multiscale_attributes("0.4", "em", (40.0, 4.0, 4.0), [(9, 64, 64), (9, 32, 32)])
        >>> find_level(attrs, "em.ome.zarr", level=1)
        ('1', (0, 1, 2), (40.0, 8.0, 8.0))
    """
    base = voxel_size or (1.0, 1.0, 1.0)
    axes = [{"name": axis, "type": "space", **({"unit": "nanometer"} if voxel_size else {})}
            for axis in "zyx"]
    datasets = []
    for index in range(len(shapes)):
        factor = 2 ** index
        transforms = [{"type": "scale", "scale": [base[0], base[1] * factor, base[2] * factor]}]
        if index:
            shift = [0.0, base[1] * (factor - 1) / 2, base[2] * (factor - 1) / 2]
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(index), "coordinateTransformations": transforms})
    multiscale = {"name": name, "axes": axes, "datasets": datasets}
    if len(shapes) > 1:
        multiscale["type"] = "local_mean"
    if version == "0.4":
        return {"multiscales": [{"version": "0.4", **multiscale}]}
    return {"ome": {"version": version, "multiscales": [multiscale]}}


def halve(block):
    """``block`` (z, y, x) halved in y and x by 2x2 means (edges repeated for odd sizes), same
    dtype.

    Example:
        >>> halve(np.array([[[0, 2, 4], [2, 4, 6]]], np.uint8))
        array([[[2, 5]]], dtype=uint8)
    """
    if block.shape[1] % 2 or block.shape[2] % 2:
        pad = ((0, 0), (0, block.shape[1] % 2), (0, block.shape[2] % 2))
        block = np.pad(block, pad, mode="edge")
    z, y, x = block.shape
    mean = block.reshape(z, y // 2, 2, x // 2, 2).astype(np.float32).mean(axis=(2, 4))
    if block.dtype.kind == "f":
        return mean.astype(block.dtype)
    return np.rint(mean).astype(block.dtype)


class OmeZarrVolumeWriter(ChunkedVolumeWriter):
    """Writes ``out.ome.zarr``: a multiscale of ``levels`` levels at ``0``, ``1``, ...

    Options: ``chunks`` (z, y, x), ``ome_version`` (``"0.4"``, default, or ``"0.5"``), ``levels``
    (default 1).
    """

    OPTIONS = {"chunks": None, "ome_version": "0.4", "levels": 1}

    def _file_of(self, path):
        file, inner = split_container_path(path)
        if inner and inner.strip("/"):
            raise VolumeError(describe(
                "An OME-Zarr output is a whole store; its levels are named by emzoo.",
                "an address without a path inside, like out.ome.zarr", path=path))
        return file

    def _open(self):
        zarr = require("zarr", "zarr", "Writing OME-Zarr")
        version = str(self.options["ome_version"])
        if version not in NGFF_VERSIONS:
            raise VolumeError(describe("Unsupported OME-Zarr version.",
                                       f"one of {', '.join(NGFF_VERSIONS)}", ome_version=version))
        try:
            levels = int(self.options["levels"])
        except (TypeError, ValueError):
            levels = 0
        if not 1 <= levels <= _MAX_LEVELS:
            raise VolumeError(describe("Invalid value for option `levels`.",
                                       f"an integer in [1, {_MAX_LEVELS}]",
                                       levels=self.options["levels"]))
        zarr_format = 2 if version == "0.4" else 3
        shapes = [(self.shape[0], -(-self.shape[1] // 2 ** i), -(-self.shape[2] // 2 ** i))
                  for i in range(levels)]
        group = zarr.open_group(self.temp_path, mode="w", zarr_format=zarr_format)
        self._arrays = [create_array(group, str(i), shape, (self.chunks[0],) + tuple(
            min(c, s) for c, s in zip(self.chunks[1:], shape[1:])), self.dtype, zarr_format,
            slash_keys=True) for i, shape in enumerate(shapes)]
        name = os.path.basename(self.target.rstrip(os.sep))
        group.attrs.update(multiscale_attributes(version, name[:-len(".ome.zarr")] or name,
                                                 self.voxel_size, shapes))

    def _write_block(self, z0, block):
        for index, array in enumerate(self._arrays):
            if index:
                block = halve(block)
            array[z0:z0 + block.shape[0]] = block

    def _write_marker(self, value):
        for array in self._arrays:
            array.attrs[MARKER] = value


Writer = OmeZarrVolumeWriter


class OmeZarrRegions(ZarrRegions):
    """An OME-Zarr output written in place: each region into level 0, halved into the levels
    below (a region's y and x start on a multiple of ``2 ** (levels - 1)`` chunks for them to
    stay whole chunks there)."""

    def _write(self, z0, y0, x0, block):
        for index, array in enumerate(self._arrays):
            if index:
                block, y0, x0 = halve(block), y0 // 2, x0 // 2
            depth, height, width = block.shape
            array[z0:z0 + depth, y0:y0 + height, x0:x0 + width] = block


def open_regions(path):
    """Level 0 of the OME-Zarr output ``path`` and the levels below it, reopened for writing in
    place.

    Example:
        >>> open_regions("out.ome.zarr").write(0, 0, 0, block)         # doctest: +SKIP
    """
    return OmeZarrRegions(*open_arrays(path, levels=True))
