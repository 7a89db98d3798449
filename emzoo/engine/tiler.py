"""Tiles: large slices are cut into overlapping tiles for the model and blended back.

Slices larger than ``tile`` are cut into ``tile`` x ``tile`` tiles overlapping by ``overlap``
pixels. Tiles are blended with separable weights that are zero within ``overlap // 4``
pixels of an inner tile edge (where a tile lacks context), then rise as a raised cosine to 1;
weights are normalised by their sum, so a pixel seen by one tile takes that tile's value and
overlaps cross-fade smoothly. Slices are (H, W, C) NumPy arrays.

The blockwise engine (:mod:`emzoo.engine.blocks`) computes a region of a slice at a time with the
same global tile grid: :meth:`Tiler.span` is the part of the slice a region's tiles read, and
:meth:`Tiler.window` the view of the grid that splits that part and blends back only the region,
with the global weights, so a region equals the same region of the whole slice's blend.
"""

import copy

import numpy as np


def _ramp(length, overlap):
    """Blend weight along one tile axis: 0 then raised cosine to 1 over ``overlap`` at an edge."""
    margin = overlap // 4
    rise = max(overlap - 2 * margin, 1)
    k = np.arange(length, dtype=np.float64)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.clip((k - margin + 0.5) / rise, 0.0, 1.0))
    return np.where(k < margin, 0.0, ramp)


class Tiler:
    """Cuts (H, W, C) slices into overlapping, padded tiles and blends tile outputs back.

    ``tile=None`` (or a slice no larger than ``tile``) means one tile: the whole slice. Each tile
    is reflect-padded at its bottom/right to a multiple of ``multiple`` and cropped back after.

    Example:
        >>> tiler = Tiler(100, 150, tile=64, overlap=16, multiple=8)
        >>> tiles = tiler.split(np.zeros((100, 150, 1), np.float32))
        >>> tiles.shape
        (6, 64, 64, 1)
        >>> tiler.merge(tiles).shape
        (100, 150, 1)
    """

    def __init__(self, height, width, tile=None, overlap=32, multiple=1):
        self.height, self.width, self.multiple = int(height), int(width), int(multiple)
        self.overlap = int(overlap)
        self.tile = tile
        self.ys, self.tile_h, wy = self._axis(self.height)
        self.xs, self.tile_w, wx = self._axis(self.width)
        self._axis_weights = (wy, wx)
        self.boxes = [(y, x) for y in self.ys for x in self.xs]
        self.weights = [np.outer(a, b)[..., None] for a in wy for b in wx]
        m = self.multiple
        self.padded = (-(-self.tile_h // m) * m, -(-self.tile_w // m) * m)
        self.origin = (0, 0)  # where the images split() takes start, in slice coordinates
        self.region = (0, self.height, 0, self.width)  # (y0, y1, x0, x1) that merge() returns
        self._single = len(self.boxes) == 1  # one tile for the whole slice: no blending at all

    def _axis(self, length):
        if self.tile is None or length <= self.tile:
            return [0], length, [np.ones(length)]
        size, step = int(self.tile), int(self.tile) - self.overlap
        starts = list(range(0, length - size, step)) + [length - size]
        weights = []
        for start in starts:
            weight = np.ones(size)
            if start > 0:
                weight *= _ramp(size, self.overlap)
            if start + size < length:
                weight *= _ramp(size, self.overlap)[::-1]
            weights.append(weight)
        return starts, size, weights

    def __len__(self):
        return len(self.boxes)

    def _axis_tiles(self, axis, low, high):
        """Indices of the tiles along ``axis`` (0: y, 1: x) whose weight is positive somewhere in
        ``[low, high)``: the tiles that contribute to that stretch of the blend."""
        starts, size = (self.ys, self.tile_h) if axis == 0 else (self.xs, self.tile_w)
        picked = []
        for index, (start, weight) in enumerate(zip(starts, self._axis_weights[axis])):
            a, b = max(low - start, 0), min(high - start, size)
            if a < b and np.any(weight[a:b] > 0):
                picked.append(index)
        if not picked:
            raise ValueError(f"no tile covers [{low}, {high}) along axis {axis}")
        return picked

    def span(self, y0, y1, x0, x1):
        """The part of the slice, ``(y0, y1, x0, x1)``, that the tiles blended into the region
        ``y0:y1, x0:x1`` read: the union of every tile with a positive weight in the region.

        Example:
            >>> Tiler(100, 150, tile=64, overlap=16).span(0, 10, 40, 70)
            (0, 64, 0, 112)
        """
        ys, xs = self._axis_tiles(0, y0, y1), self._axis_tiles(1, x0, x1)
        return (self.ys[ys[0]], self.ys[ys[-1]] + self.tile_h,
                self.xs[xs[0]], self.xs[xs[-1]] + self.tile_w)

    def window(self, y0, y1, x0, x1):
        """A view of this tiler for the region ``y0:y1, x0:x1`` of the slice.

        Its :meth:`split` takes the part of the slice :meth:`span` names (not the whole slice) and
        cuts the tiles that contribute to the region; its :meth:`merge` blends them with the global
        weights into the region only. The region's values are those of the whole slice's
        :meth:`merge` (tiles left out have zero weight there, and adding zero changes nothing).

        Example:
            >>> tiler = Tiler(100, 150, tile=64, overlap=16)
            >>> view = tiler.window(0, 10, 40, 70)
            >>> len(view), view.origin
            (2, (0, 0))
            >>> image = np.random.default_rng(0).random((100, 150, 1), np.float32)
            >>> part = image[0:64, 0:112]                       # tiler.span(0, 10, 40, 70)
            >>> bool(np.allclose(view.merge(view.split(part)), image[0:10, 40:70]))
            True
        """
        ys, xs = self._axis_tiles(0, y0, y1), self._axis_tiles(1, x0, x1)
        view = copy.copy(self)
        columns = len(self.xs)
        view.boxes = [(self.ys[i], self.xs[j]) for i in ys for j in xs]
        view.weights = [self.weights[i * columns + j] for i in ys for j in xs]
        view.origin = (self.ys[ys[0]], self.xs[xs[0]])
        view.region = (int(y0), int(y1), int(x0), int(x1))
        return view

    def split(self, image):
        """(H, W, C) -> (tiles, H', W', C) float32, each tile padded to the size multiple.

        ``image`` is the whole slice, or for a :meth:`window` the part of the slice its
        :meth:`span` names.
        """
        pad_h, pad_w = self.padded[0] - self.tile_h, self.padded[1] - self.tile_w
        tiles = []
        top, left = self.origin
        for y, x in self.boxes:
            y, x = y - top, x - left
            tile = image[y:y + self.tile_h, x:x + self.tile_w]
            if pad_h or pad_w:
                tile = np.pad(tile, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect"
                              if min(tile.shape[:2]) > 1 else "edge")
            tiles.append(tile)
        return np.stack(tiles).astype(np.float32, copy=False)

    def merge(self, tiles):
        """(tiles, H', W', C) -> (H, W, C): crop each tile back and blend by the weights.

        For a :meth:`window`, the result is its region ``(y1 - y0, x1 - x0, C)``.
        """
        tiles = np.asarray(tiles)
        y0, y1, x0, x1 = self.region
        if self._single:
            (y, x), = self.boxes
            return tiles[0, y0 - y:y1 - y, x0 - x:x1 - x].astype(np.float32)
        total = np.zeros((y1 - y0, x1 - x0, tiles.shape[-1]), np.float64)
        norm = np.zeros((y1 - y0, x1 - x0, 1), np.float64)
        for (y, x), weight, tile in zip(self.boxes, self.weights, tiles):
            a0, a1 = max(y, y0), min(y + self.tile_h, y1)  # the tile's box inside the region
            b0, b1 = max(x, x0), min(x + self.tile_w, x1)
            if a0 >= a1 or b0 >= b1:
                continue
            part = weight[a0 - y:a1 - y, b0 - x:b1 - x]
            total[a0 - y0:a1 - y0, b0 - x0:b1 - x0] += part * tile[a0 - y:a1 - y, b0 - x:b1 - x]
            norm[a0 - y0:a1 - y0, b0 - x0:b1 - x0] += part
        return (total / norm).astype(np.float32)
