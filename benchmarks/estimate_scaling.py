"""Estimate a large blockwise upscale (default: 1 TB uint8 at x4 on 64 workers) from measured costs.

Reads the JSON that ``bench_distributed.py --json`` writes (per-pixel model costs, chunk read and
write costs per byte, the scheduler's cost per task, worker memory) and applies them to the block
plan emzoo would run on the large volume. A simple arithmetic model, not a simulation of Dask:

**What one block costs.** emzoo's own plan gives the work of each block
(:class:`emzoo.engine.blocks.BlockWork` with the job's global
:class:`~emzoo.engine.tiler.Tiler`, exactly as :func:`~emzoo.engine.blocks.compute_block` runs it):
per recursion step, the tiles of the step's window times the midpoints of the step
(``from_features`` tile-pixels) and times the distinct slices they interpolate between
(``extract`` tile-pixels, features being dropped after each step). Then::

    t_block = k * (extract_px * c_extract + ff_px * c_ff)      model, blending, resampling
              + fetched_bytes * c_read + written_bytes * c_write    chunk I/O (decompress, compress)
              + s_task                                             the task's round trip

``c_extract`` and ``c_ff`` are the seconds per tile-pixel of the two model functions timed alone on
one tile; ``k`` (>= 1 in practice) is the measured block compute over what those two predict for
the measured blocks (blending, normalising, resampling, Python); ``c_read``/``c_write`` the
measured seconds per chunk byte read/written; ``s_task`` the scheduler's time per task, measured
with no-op tasks on the same cluster. A read of one slice window fetches whole input chunks:
``fetched_bytes`` counts the chunk-aligned window times the input chunk depth.

**The whole job.** ``N`` blocks (whole output chunks deep, ``--region`` pixels wide, as
:class:`~emzoo.engine.blocks.BlockPlan` cuts them). The job takes the longest of three times::

    T_workers = N * t_block / W               every worker busy
    T_scheduler = N * s_task                  one scheduler hands out tasks one at a time
    T_storage = N * (fetched + written) / B   the shared file system's aggregate bandwidth B

plus the cluster's start-up (processes and model loading, measured). It stops scaling at the
worker count where ``T_workers`` meets the larger of the other two:
``W_scheduler = t_block / s_task`` and ``W_storage = t_block * B / (fetched + written per block)``.
``B`` is an assumption (``--storage-gbps``, default 1 GB/s: what one job may get from a shared
NFS / GPFS / Lustre file system on a mid-size cluster); blocks near the volume's edges are
counted as they are (smaller, fewer halo tiles).

**Memory per worker.** The measured worker with the model loaded (``base``) plus, for the large
block: the model's working memory for one tile (the measured working memory scaled by the tile's
pixels), the cached features of one step's window (bytes per pixel measured), the dense-grid
slices the block keeps (float32) and its output.

Example:
    python benchmarks/estimate_scaling.py --json bench_distributed.json
    python benchmarks/estimate_scaling.py --json bench_distributed.json --chunks 4,256,256 \\
        --input-chunks 64,64,64 --storage-gbps 5
"""

import argparse
import json
import math

from emzoo.data.volumes.chunked import default_chunks
from emzoo.engine.blocks import DEFAULT_REGION, Block, BlockPlan, BlockWork, UpscaleRecipe
from emzoo.engine.distributed import DEFAULT_TILE, WHOLE_SLICE_MAX
from emzoo.engine.tiler import Tiler

Z_SAMPLE = 64  # consecutive z-blocks from the middle of the volume that stand for all of them


def _area(extent):
    y0, y1, x0, x1 = extent
    return (y1 - y0) * (x1 - x0)


def _fetched(extent, input_chunks):
    """Pixels of input chunks fetched to read the window ``extent`` of one slice (whole chunks,
    each ``input_chunks[0]`` slices deep)."""
    depth, cy, cx = input_chunks
    y0, y1, x0, x1 = extent
    return depth * (math.ceil(y1 / cy) * cy - y0 // cy * cy) * (math.ceil(x1 / cx) * cx - x0 // cx * cx)


def block_costs(recipe, block, tiler, input_chunks, itemsize=1):
    """What ``block`` of an upscale with ``recipe`` runs through the model and reads, writes and
    holds, with the global ``tiler`` (tile, overlap and the model's size multiple), as
    :func:`emzoo.engine.blocks.compute_block` computes it.

    Returns a dict: ``extract_px`` and ``ff_px`` (tile-pixels through the model's feature
    extraction and its ``from_features`` part), ``fetched_bytes`` (input chunks read, whole
    chunks of ``input_chunks``), ``read_bytes`` (the windows themselves), ``written_bytes``,
    ``feature_px`` (the largest number of tile-pixels whose features one step keeps), ``dense_px``
    (float32 pixels of the dense-grid slices kept until the block ends) and ``tile_px`` (one
    padded tile).

    Example:
        >>> recipe = UpscaleRecipe(17, factor=4)
        >>> costs = block_costs(recipe, Block(1, 4, 8, 0, 256, 0, 256), Tiler(256, 256, None, 32, 16),
        ...                     (4, 128, 128))
        >>> costs["ff_px"] == 3 * 256 * 256, costs["extract_px"] == 5 * 256 * 256
        (True, True)
    """
    work = BlockWork(recipe, block.z0, block.z1)
    region = (block.y0, block.y1, block.x0, block.x1)
    extents = [region]
    while len(extents) <= work.max_reach:
        extents.append(tiler.span(*extents[-1]))
    tile_px = tiler.padded[0] * tiler.padded[1]
    extract = ff = feature = 0
    for (_, reach), keys in work.steps():
        tiles = len(tiler.window(*extents[reach]))
        slices = {key for child in keys for key in work.parents[child]}
        ff += len(keys) * tiles * tile_px
        extract += len(slices) * tiles * tile_px
        feature = max(feature, len(slices) * tiles * tile_px)
    reads = [extents[reach] for _, reach in work.inputs.values()] + [region] * len(work.copies)
    dense = sum(_area(extents[work.reach[key]]) for key in work.reach)
    voxels = (block.z1 - block.z0) * _area(region)
    return {"extract_px": extract, "ff_px": ff, "feature_px": feature, "dense_px": dense,
            "tile_px": tile_px, "read_bytes": sum(_area(e) for e in reads) * itemsize,
            "fetched_bytes": sum(_fetched(e, input_chunks) for e in reads) * itemsize,
            "written_bytes": voxels * itemsize}


def _z_ranges(count, depth):
    return [(z0, min(z0 + depth, count)) for z0 in range(0, count, depth)]


def plan_costs(input_shape, factor, chunks, input_chunks, tile, overlap, region, multiple, itemsize=1):
    """Block count and total / largest per-block costs (:func:`block_costs`) of upscaling an
    ``input_shape`` volume by ``factor`` blockwise. The z-blocks are sampled
    (:data:`Z_SAMPLE` consecutive ones from the middle stand for all); every (y, x) region counts.

    Example:
        >>> plan_costs((17, 256, 256), 4, (4, 128, 128), (4, 128, 128), None, 32, 2048, 16)["blocks"]
        17
    """
    recipe = UpscaleRecipe(input_shape[0], factor)
    shape = (recipe.count,) + tuple(input_shape[1:])
    tiler = Tiler(shape[1], shape[2], tile, overlap, multiple)
    one_row = BlockPlan((chunks[0],) + shape[1:], chunks, tiler, region)  # the (y, x) regions
    regions = [(b.y0, b.y1, b.x0, b.x1) for b in one_row]
    zs = _z_ranges(shape[0], chunks[0])
    middle = max(0, len(zs) // 2 - Z_SAMPLE // 2)
    sample = zs[middle:middle + Z_SAMPLE]
    totals, largest = {}, {}
    for z0, z1 in sample:
        for y0, y1, x0, x1 in regions:
            costs = block_costs(recipe, Block(0, z0, z1, y0, y1, x0, x1), tiler, input_chunks, itemsize)
            for key, value in costs.items():
                totals[key] = totals.get(key, 0) + value
                largest[key] = max(largest.get(key, 0), value)
    scale = len(zs) / len(sample)
    blocks = len(zs) * len(regions)
    return {"blocks": blocks, "output_shape": shape, "tile": tile,
            "total": {key: value * scale for key, value in totals.items()},
            "largest": largest, "mean": {key: value * scale / blocks for key, value in totals.items()}}


def cost_rates(measured):
    """The per-unit costs from ``bench_distributed.py``'s JSON: seconds per model tile-pixel
    (extract, from_features), the overhead factor k, seconds per byte read and written, seconds per
    task, and the memory terms."""
    model, block, memory = measured["model_costs"], measured["per_block"], measured["memory"]
    predicted = (block["extract_px"] * model["extract_s_per_px"] + block["ff_px"] * model["ff_s_per_px"])
    k = block["compute_s"] / predicted
    small, largest = memory["small"], block["largest"]
    working = (max(small["peak_mb"]) - small["base_mb"]) * 2**20 - (
        largest["feature_px"] * model["feature_bytes_per_px"] + largest["dense_px"] * 4 + largest["written_bytes"])
    return {"k": k, "extract": model["extract_s_per_px"], "ff": model["ff_s_per_px"],
            "read": block["read_s"] / block["fetched_bytes"], "write": block["write_s"] / block["written_bytes"],
            "task": measured["scheduler"]["seconds_per_task"], "base_bytes": small["base_mb"] * 2**20,
            "working_per_tile_px": max(working, 0) / largest["tile_px"],
            "feature_bytes_per_px": model["feature_bytes_per_px"],
            "startup_s": measured["startup"]["cluster_s"]["dask2"] + measured["startup"]["first_job_s"]["dask2"]}


def estimate(measured, input_shape, factor, workers, chunks=None, input_chunks=None, tile=None,
             overlap=32, region=DEFAULT_REGION, storage_gbps=1.0, multiple=None):
    """The estimate (a dict of JSON-ready values) of upscaling ``input_shape`` (uint8) by
    ``factor`` on ``workers`` workers with the measured costs ``measured``; defaults as emzoo
    chooses them (output and input chunks :func:`~emzoo.data.volumes.chunked.default_chunks`,
    tile :data:`~emzoo.engine.distributed.DEFAULT_TILE` for slices over
    :data:`~emzoo.engine.distributed.WHOLE_SLICE_MAX`).

    Example:
        >>> estimate(json.load(open("bench_distributed.json")), (3969, 15876, 15876), 4, 64)["tasks"]  # doctest: +SKIP
        1015872
    """
    input_shape = tuple(int(s) for s in input_shape)
    output_count = UpscaleRecipe(input_shape[0], factor).count
    output_shape = (output_count,) + input_shape[1:]
    chunks = tuple(default_chunks(output_shape, "uint8", chunks, buffered=False))
    input_chunks = tuple(default_chunks(input_shape, "uint8", input_chunks))
    if tile is None and max(input_shape[1:]) > WHOLE_SLICE_MAX:
        tile = DEFAULT_TILE
    multiple = multiple or measured["settings"]["size_multiple"]
    plan = plan_costs(input_shape, factor, chunks, input_chunks, tile, overlap, region, multiple)
    rates = cost_rates(measured)
    mean, largest, blocks = plan["mean"], plan["largest"], plan["blocks"]
    model_s = rates["k"] * (mean["extract_px"] * rates["extract"] + mean["ff_px"] * rates["ff"])
    io_s = mean["fetched_bytes"] * rates["read"] + mean["written_bytes"] * rates["write"]
    t_block = model_s + io_s + rates["task"]
    bandwidth = storage_gbps * 1e9
    moved = mean["fetched_bytes"] + mean["written_bytes"]
    times = {"workers": blocks * t_block / workers, "scheduler": blocks * rates["task"],
             "storage": blocks * moved / bandwidth}
    limit = max(times, key=times.get)
    memory = {"base": rates["base_bytes"], "model": rates["working_per_tile_px"] * largest["tile_px"],
              "features": largest["feature_px"] * rates["feature_bytes_per_px"],
              "slices": largest["dense_px"] * 4 + largest["written_bytes"]}
    return {
        "input_shape": list(input_shape), "input_tb": math.prod(input_shape) / 1e12,
        "output_shape": list(output_shape), "output_tb": math.prod(output_shape) / 1e12,
        "factor": factor, "workers": workers, "chunks": list(chunks), "input_chunks": list(input_chunks),
        "tile": tile, "overlap": overlap, "region": region, "storage_gbps": storage_gbps,
        "tasks": blocks,
        "per_block": {"seconds": t_block, "model_s": model_s, "io_s": io_s, "task_s": rates["task"],
                      "extract_px": mean["extract_px"], "ff_px": mean["ff_px"],
                      "fetched_mb": mean["fetched_bytes"] / 1e6, "written_mb": mean["written_bytes"] / 1e6,
                      "model_px_per_new_px": (mean["ff_px"] * blocks)
                      / ((output_count - input_shape[0]) * input_shape[1] * input_shape[2])},
        "seconds": {**times, "startup": rates["startup_s"],
                    "total": times[limit] + rates["startup_s"]},
        "limit": limit,
        "stops_scaling_at": {"scheduler": t_block / rates["task"],
                             "storage": t_block * bandwidth / moved},
        "memory_per_worker_gib": sum(memory.values()) / 2**30,
        "memory_gib": {key: value / 2**30 for key, value in memory.items()},
        "calibration": {"k": rates["k"], "working_mb_per_tile_mpx": rates["working_per_tile_px"] * 1e6 / 2**20},
    }


def _days(seconds):
    return f"{seconds / 86400:.1f} days" if seconds >= 86400 else f"{seconds / 3600:.1f} h"


def report(result):
    """The estimate as printed lines."""
    block, seconds, stop = result["per_block"], result["seconds"], result["stops_scaling_at"]
    memory = result["memory_gib"]
    shape = " x ".join(str(s) for s in result["input_shape"])
    out = " x ".join(str(s) for s in result["output_shape"])
    return "\n".join([
        f"input {shape} uint8 ({result['input_tb']:.2f} TB) -> x{result['factor']:g} {out} "
        f"({result['output_tb']:.2f} TB) on {result['workers']} workers",
        f"output chunks {tuple(result['chunks'])}, input chunks {tuple(result['input_chunks'])}, "
        f"tile {result['tile']} overlap {result['overlap']}, region {result['region']}",
        f"tasks (blocks): {result['tasks']:,}",
        f"per block: {block['seconds']:.2f} s = model {block['model_s']:.2f} + chunk I/O {block['io_s']:.3f} "
        f"+ task {block['task_s'] * 1e3:.2f} ms; reads {block['fetched_mb']:.2f} MB of chunks, writes "
        f"{block['written_mb']:.2f} MB; model tile-pixels per new output pixel {block['model_px_per_new_px']:.2f}",
        f"time: workers {_days(seconds['workers'])}, scheduler {_days(seconds['scheduler'])}, storage at "
        f"{result['storage_gbps']:g} GB/s {_days(seconds['storage'])} -> {_days(seconds['total'])} "
        f"(bound by {result['limit']})",
        f"stops scaling at ~{stop['scheduler']:,.0f} workers (scheduler) / ~{stop['storage']:,.0f} workers "
        f"(storage at {result['storage_gbps']:g} GB/s)",
        f"memory per worker: ~{result['memory_per_worker_gib']:.1f} GiB = TensorFlow and the model "
        f"{memory['base']:.1f} + one tile's working memory {memory['model']:.1f} + one step's features "
        f"{memory['features']:.1f} + the block's slices {memory['slices']:.1f}",
        f"calibration: measured block compute / model functions alone k = {result['calibration']['k']:.2f}",
    ])


def _shape(text):
    values = tuple(int(v) for v in text.split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError("expected three integers z,y,x")
    return values


def default_shape(terabytes, factor):
    """A uint8 volume of ``terabytes`` whose z spacing is ``factor`` times its (y, x) spacing,
    physically a cube: ``Z * Y * X = terabytes * 1e12`` with ``Y = X = factor * Z``."""
    z = round((terabytes * 1e12 / factor**2) ** (1 / 3))
    return (z, round(factor * z), round(factor * z))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True, help="what bench_distributed.py --json wrote")
    parser.add_argument("--terabytes", type=float, default=1.0, help="input size (uint8) when no --shape")
    parser.add_argument("--shape", type=_shape, help="input z,y,x (default: --terabytes, z coarser by the factor)")
    parser.add_argument("--factor", type=float, default=4)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--chunks", type=_shape, help="output chunks z,y,x (default: emzoo's)")
    parser.add_argument("--input-chunks", type=_shape, help="input chunks z,y,x (default: emzoo's)")
    parser.add_argument("--tile", type=int, help=f"default {DEFAULT_TILE} for slices over {WHOLE_SLICE_MAX}")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--region", type=int, default=DEFAULT_REGION, help="a block's (y, x) size")
    parser.add_argument("--storage-gbps", type=float, default=1.0,
                        help="aggregate bandwidth of the shared file system for this job, GB/s")
    parser.add_argument("--out", help="also write the estimate as JSON here")
    args = parser.parse_args()
    with open(args.json, encoding="utf-8") as handle:
        measured = json.load(handle)
    shape = args.shape or default_shape(args.terabytes, args.factor)
    result = estimate(measured, shape, args.factor, args.workers, args.chunks, args.input_chunks, args.tile,
                      args.overlap, args.region, args.storage_gbps)
    print(report(result))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
