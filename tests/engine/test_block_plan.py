"""Tests of emzoo.engine.blocks: the block plan, what each block reads, and block results equal to
the single-process engine's (no Dask here: blocks are computed in this process)."""

import fractions
import math

import numpy as np
import pytest

from emzoo.data.volumes import ArrayVolume
from emzoo.engine import MidpointEngine, Tiler, repair_volume, upscale_volume
from emzoo.engine.blocks import (BlockPlan, BlockWork, Copy, Interpolate, RepairRecipe, UpscaleRecipe,
                                 compute_block, input_slices)
from emzoo_test_helpers import TinyConvModel, random_volume


# ------------------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("shape, chunks, region", [
    ((17, 64, 96), (4, 32, 32), 32),
    ((17, 64, 96), (4, 32, 32), 40),     # rounded up to whole chunks: 64
    ((25, 70, 50), (8, 16, 24), 20),     # chunks cut by the array's edge
    ((3, 8, 8), (8, 256, 256), None),    # chunks larger than the array
])
def test_blocks_cover_every_output_chunk_exactly_once(shape, chunks, region):
    plan = BlockPlan(shape, chunks, region=region)
    owner = {}
    for block in plan:
        assert block == plan[block.id]
        for bound, chunk in ((block.z0, chunks[0]), (block.y0, chunks[1]), (block.x0, chunks[2])):
            assert bound % chunk == 0  # starts on a chunk
        for end, chunk, length in zip((block.z1, block.y1, block.x1), chunks, shape):
            assert end % chunk == 0 or end == length  # ends on a chunk or the array's edge
        for z in range(block.z0 // chunks[0], -(-block.z1 // chunks[0])):
            for y in range(block.y0 // chunks[1], -(-block.y1 // chunks[1])):
                for x in range(block.x0 // chunks[2], -(-block.x1 // chunks[2])):
                    assert (z, y, x) not in owner, f"chunk {(z, y, x)} in blocks {owner[z, y, x]} and {block.id}"
                    owner[z, y, x] = block.id
    grid = tuple(-(-s // c) for s, c in zip(shape, chunks))
    assert len(owner) == math.prod(grid)


def test_a_single_tile_along_an_axis_makes_blocks_span_that_axis():
    tiler = Tiler(64, 96, tile=80, overlap=8)  # one tile along y (64 <= 80), two along x
    plan = BlockPlan((9, 64, 96), (4, 16, 16), tiler, region=16)
    assert {(b.y0, b.y1) for b in plan} == {(0, 64)}
    assert {(b.x0, b.x1) for b in plan} == {(x, x + 16) for x in range(0, 96, 16)}


@pytest.mark.parametrize("factor", [2, 3, 2.5, 8])
def test_upscale_blocks_read_the_input_pairs_of_their_positions(factor):
    recipe = UpscaleRecipe(9, factor)
    for z0 in range(0, recipe.count, 4):
        z1 = min(z0 + 4, recipe.count)
        expected = set()
        for j in range(z0, z1):
            position = fractions.Fraction(j) / recipe.factor
            expected.update({math.floor(position), math.ceil(position)})
        assert input_slices(recipe, z0, z1) == sorted(expected)
    assert recipe(0) == Copy(0) and recipe(recipe.count - 1) == Copy(8)  # 8 * factor is whole


def test_repair_blocks_read_the_good_slices_around_their_damaged_runs():
    recipe = RepairRecipe(12, [(2, 2), (5, 7)])
    assert input_slices(recipe, 0, 4) == [0, 1, 3]       # slice 2 comes from 1 and 3
    assert input_slices(recipe, 4, 8) == [4, 8]          # 5..7 from 4 and 8, whichever block
    assert input_slices(recipe, 6, 7) == [4, 8]          # good slices outside the block
    assert recipe(6) == Interpolate(4, 8, 4, fractions.Fraction(2))
    assert recipe(9) == Copy(9)


def test_midpoints_reach_one_ring_of_tiles_further_than_what_needs_them():
    work = BlockWork(UpscaleRecipe(3, 8), 0, 9)  # x8: three recursion levels
    for key, (left, right) in work.parents.items():
        assert work.reach[left] >= work.reach[key] + 1 and work.reach[right] >= work.reach[key] + 1
    assert work.reach[fractions.Fraction(1, 2)] == 2  # level 1, below two more levels
    assert work.inputs[fractions.Fraction(0)] == (0, 3)
    levels = [level for (level, _), _ in work.steps()]
    assert levels == sorted(levels)  # parents before children


# ------------------------------------------------------------------------ tiles and windows
def test_a_window_blends_its_region_exactly_as_the_whole_slice():
    tiler = Tiler(100, 150, tile=40, overlap=12)
    image = np.random.default_rng(1).random((100, 150, 1), np.float32)
    tiles = tiler.split(image) + np.random.default_rng(2).normal(0, 0.1, (len(tiler), 40, 40, 1))
    whole = tiler.merge(tiles)
    index = {box: i for i, box in enumerate(tiler.boxes)}
    for region in [(0, 16, 0, 16), (30, 47, 55, 101), (84, 100, 140, 150), (0, 100, 0, 150)]:
        view = tiler.window(*region)
        y0, y1, x0, x1 = tiler.span(*region)
        part = image[y0:y1, x0:x1]
        assert len(view) < len(tiler) or region == (0, 100, 0, 150)
        np.testing.assert_array_equal(view.split(part), tiler.split(image)[[index[b] for b in view.boxes]])
        merged = view.merge(tiles[[index[b] for b in view.boxes]])
        np.testing.assert_array_equal(merged, whole[region[0]:region[1], region[2]:region[3]])


# ---------------------------------------------------------------- blocks == the single process
def _blockwise(volume, recipe, model, shape, chunks, region, tile=32, overlap=8, scales=None):
    engine = MidpointEngine(model, volume.shape[1], volume.shape[2], tile, overlap, jit_compile=False)
    out = np.zeros(shape, volume.dtype)
    plan = BlockPlan(shape, chunks, engine.tiler, region=region)
    for block in plan:
        out[block.z0:block.z1, block.y0:block.y1, block.x0:block.x1] = compute_block(
            block, recipe, engine.tiler, engine, ArrayVolume(volume), scales)
    return out, len(plan)


@pytest.mark.parametrize("factor", [2, 3])
def test_blocks_equal_the_single_process_engine(factor):
    volume = random_volume((5, 64, 96), np.uint8, seed=3)  # level 1 tested on 32 x 48 (calibration)
    model = TinyConvModel()
    done = upscale_volume(volume, model, factor=factor, tile=32, overlap=8, progress=False,
                          jit_compile=False)
    expected, scales = done["array"], done["residual_scales"]
    assert scales is not None and min(scales) < 1  # the weighing towards linear is exercised
    recipe = UpscaleRecipe(5, factor)
    out, count = _blockwise(volume, recipe, model, expected.shape, (4, 16, 16), 16, scales=scales)
    assert count > 10
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_repair_blocks_equal_the_single_process_engine():
    volume = random_volume((9, 48, 64), np.uint16, seed=4)
    model = TinyConvModel()
    expected = repair_volume(volume, [2, 5, 6], model, tile=32, overlap=8, progress=False,
                             jit_compile=False)["array"]
    out, _ = _blockwise(volume, RepairRecipe(9, [(2, 2), (5, 6)]), model, volume.shape, (2, 16, 32), 16)
    assert np.abs(out.astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(out[[0, 1, 3, 4, 7, 8]], volume[[0, 1, 3, 4, 7, 8]])  # copied
