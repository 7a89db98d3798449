"""Tiles: large slices are cut into overlapping tiles for the model and blended back.

Slices larger than ``tile`` are cut into ``tile`` x ``tile`` tiles overlapping by ``overlap``
pixels. Tiles are blended with separable weights that are zero within ``overlap // 4``
pixels of an inner tile edge (where a tile lacks context), then rise as a raised cosine to 1;
weights are normalised by their sum, so a pixel seen by one tile takes that tile's value and
overlaps cross-fade smoothly. Slices are (H, W, C) NumPy arrays.
"""

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
        self.boxes = [(y, x) for y in self.ys for x in self.xs]
        self.weights = [np.outer(a, b)[..., None] for a in wy for b in wx]
        m = self.multiple
        self.padded = (-(-self.tile_h // m) * m, -(-self.tile_w // m) * m)

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

    def split(self, image):
        """(H, W, C) -> (tiles, H', W', C) float32, each tile padded to the size multiple."""
        pad_h, pad_w = self.padded[0] - self.tile_h, self.padded[1] - self.tile_w
        tiles = []
        for y, x in self.boxes:
            tile = image[y:y + self.tile_h, x:x + self.tile_w]
            if pad_h or pad_w:
                tile = np.pad(tile, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect"
                              if min(tile.shape[:2]) > 1 else "edge")
            tiles.append(tile)
        return np.stack(tiles).astype(np.float32, copy=False)

    def merge(self, tiles):
        """(tiles, H', W', C) -> (H, W, C): crop each tile back and blend by the weights."""
        tiles = np.asarray(tiles)
        if len(self.boxes) == 1:
            return tiles[0, :self.tile_h, :self.tile_w].astype(np.float32)
        total = np.zeros((self.height, self.width, tiles.shape[-1]), np.float64)
        norm = np.zeros((self.height, self.width, 1), np.float64)
        for (y, x), weight, tile in zip(self.boxes, self.weights, tiles):
            total[y:y + self.tile_h, x:x + self.tile_w] += weight * tile[:self.tile_h, :self.tile_w]
            norm[y:y + self.tile_h, x:x + self.tile_w] += weight
        return (total / norm).astype(np.float32)
