"""What the two Zarr formats (plain Zarr arrays, OME-Zarr) share when they write: the arrays emzoo
creates (Blosc/zstd chunks, fill value 0, ``z, y, x`` dimension names in Zarr v3) and the arrays
of an output written in place, region by region.

It sits below both: :mod:`~emzoo.data.volumes.ome_zarr` (which also holds the reader of every
Zarr store, since any may hold an OME-Zarr multiscale) builds on it, and
:mod:`~emzoo.data.volumes.zarr_array` builds on both.

This module imports zarr and numcodecs on use only.
"""

from emzoo.data.volumes.chunked import MARKER, ChunkedRegions


def compressor(zarr_format):
    """Blosc (zstd, byte shuffle): read by every Zarr implementation (Java, JavaScript, C++).

    Example:
        >>> compressor(2)                                   # doctest: +SKIP
        Blosc(cname='zstd', clevel=5, shuffle=SHUFFLE, blocksize=0)
    """
    if zarr_format == 2:
        import numcodecs

        return numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def create_array(group, name, shape, chunks, dtype, zarr_format, slash_keys=False):
    """A new ``(z, y, x)`` array in ``group`` (Blosc-compressed, fill value 0); ``slash_keys``
    writes Zarr v2 chunk keys with ``/`` (as NGFF 0.4 requires).

    Example:
        >>> group = zarr.open_group("out.zarr", mode="w", zarr_format=2)          # doctest: +SKIP
        >>> create_array(group, "raw", (9, 64, 64), (8, 64, 64), "uint8", 2)  # doctest: +SKIP
    """
    options = {"dimension_names": ["z", "y", "x"]} if zarr_format == 3 else {}
    if zarr_format == 2 and slash_keys:
        options["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0,
                              compressors=[compressor(zarr_format)], **options)


class ZarrRegions(ChunkedRegions):
    """Zarr arrays of one output written in place: ``arrays[0]`` is the volume; a subclass may keep
    more (the levels of an OME-Zarr multiscale) and write them from the same regions.

    Example:
        >>> ZarrRegions("out.zarr", [array]).write(0, 0, 0, block)      # doctest: +SKIP
    """

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
