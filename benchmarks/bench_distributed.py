"""The blockwise Dask engine: 1 vs 2 workers, Dask vs the single-process engine, worker memory vs
volume length, and the per-block costs that ``estimate_scaling.py`` extrapolates; one run.

On an OME-Zarr cut from the shared FIB-SEM stack (``--slices`` x ``--size`` x ``--size``, chunks
``--chunks``; mirrored along z past the stack's end, noise when the data is absent), upscaled by
``--factor`` with ``--model`` to an OME-Zarr with the same chunks:

* **1 vs 2 workers**: ``upscale_volume(..., scheduler=ADDRESS)`` on a local cluster of 1 worker and
  on one of 2 workers (1 Dask thread and 1 TensorFlow thread each); throughput ratio, target
  >= 1.7 on 2 cores.
* **Dask at 1 worker vs the single-process engine** with the same threads: the single-process
  ``upscale_volume`` (same output format and chunks) runs inside a third, 1-worker cluster, i.e.
  in a process started with the same thread settings, the model loaded once; overhead, target
  <= 10 %.
* The three run interleaved, ``--repeats`` rounds in rotating order, after one untimed round.
  **Excluded** from those times and reported separately: cluster start-up (processes, TensorFlow
  import) and each path's first job (model loading, tracing). **Included**: everything a job
  does once the cluster is up (connecting, checking, creating the output, the blocks, marking it
  complete). The outputs of the three paths are compared (to 1 uint8 unit).
* **Worker peak RSS**: a fresh 2-worker cluster per volume, ``--slices`` and ``--long`` times as
  many pairs along z; each worker's ``ru_maxrss`` at the end (``client.run``), and its RSS with
  the model loaded before the job; ratio of the largest peaks, target <= 1.25.
* **Per-block costs** (for the estimate), timed block by block in the single-process cluster's
  worker with the engine's own functions: reading the block's input windows, computing the block
  (:func:`~emzoo.engine.blocks.compute_block`, reads included, minus the read time), writing its
  chunks and its record; the model's ``extract`` and ``from_features`` timed alone on one tile,
  and the bytes per pixel of its features; the scheduler's time per task from ``--noop-tasks``
  no-op tasks on the 2-worker cluster.

``--json FILE`` writes every number (the input of ``estimate_scaling.py``). The training or tests
sharing the machine make absolute times drift: read the ratios.

Example:
    nice -n 5 python benchmarks/bench_distributed.py --json bench_distributed.json
    python benchmarks/bench_distributed.py --slices 5 --size 64 --chunks 4,64,64 --repeats 1 \\
        --long 2 --noop-tasks 50      # a quick check of the script
"""

import argparse
import json
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data", "flyem_medulla_fibsem_10nm", "volume.tif")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
              "TF_CPP_MIN_LOG_LEVEL": "2"}
PATHS = ("single", "dask1", "dask2")


# ------------------------------------------------------------------------------ inputs
def make_input(path, slices, size, chunks):
    """Writes a (slices, size, size) uint8 OME-Zarr with 10 nm voxels and ``chunks``."""
    from emzoo.data.volumes import create_volume

    if os.path.exists(SHARED):
        import tifffile

        source = tifffile.memmap(SHARED)
        period = 2 * (len(source) - 1)
        index = [z % period if z % period < len(source) else period - z % period for z in range(slices)]
        array = np.stack([np.asarray(source[z, :size, :size]) for z in index])
    else:
        array = (np.random.default_rng(0).random((slices, size, size)) * 255).astype(np.uint8)
    with create_volume(path, array.shape, array.dtype, (10, 10, 10), chunks=chunks) as writer:
        for z, plane in enumerate(array):
            writer.write(z, plane)
    return path


# ---------------------------------------------------------------------- in the workers
def _one_thread():
    """Runs in each worker first: TensorFlow at 1 intra-op and 1 inter-op thread."""
    from emzoo.engine.policy import configure_threads

    return configure_threads(intra=1, inter=1)


def _cached_model(name):
    """``name`` loaded once per worker process (kept in a module of its own in ``sys.modules``,
    since this script's functions reach the workers by value)."""
    import types

    from emzoo.engine.interpolators import resolve_model

    cache = sys.modules.setdefault("_bench_distributed_cache", types.ModuleType("_bench_distributed_cache"))
    models = cache.__dict__.setdefault("models", {})
    if name not in models:
        models[name] = resolve_model(name)
    return models[name]


def _rss_now_mb():
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _load_and_rss(name):
    """Loads the model in this worker; its RSS in MB afterwards."""
    _cached_model(name)
    return _rss_now_mb()


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _single_process_job(source, model, output, options):
    """The single-process engine on this worker (the model loaded once); its seconds."""
    from emzoo.engine import upscale_volume

    loaded = _cached_model(model)
    start = time.perf_counter()
    upscale_volume(source, loaded, output=output, progress=False, **options)
    return time.perf_counter() - start


def _model_costs(model, size, repeats=5):
    """Seconds per tile-pixel of the model's ``extract`` and ``from_features`` (batch 1, one
    ``size`` x ``size`` tile, medians of ``repeats`` after a warm-up) and its features' bytes per
    pixel."""
    import keras

    from emzoo.engine.policy import compiled_function

    loaded = _cached_model(model)
    extract = compiled_function(loaded, "extract", False)
    from_features = compiled_function(loaded, "from_features", False)
    rng = np.random.default_rng(0)
    tiles = rng.random((2, 1, size, size, int(getattr(loaded, "channels", 1))), np.float32)
    time_input = np.full((1, 1), 0.5, np.float32)
    left, right = extract(tiles[0]), extract(tiles[1])
    from_features(left, right, time_input)
    seconds = {"extract": [], "from_features": []}
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.tree.flatten(extract(tiles[0]))[0])
        seconds["extract"].append(time.perf_counter() - start)
        start = time.perf_counter()
        out = from_features(left, right, time_input)
        keras.ops.convert_to_numpy(out if not isinstance(out, dict) else out["image"])
        seconds["from_features"].append(time.perf_counter() - start)
    feature_bytes = sum(int(np.prod(t.shape)) * 4 for t in keras.tree.flatten(left))
    pixels = size * size
    return {"extract_s_per_px": statistics.median(seconds["extract"]) / pixels,
            "ff_s_per_px": statistics.median(seconds["from_features"]) / pixels,
            "feature_bytes_per_px": feature_bytes / pixels, "tile": size,
            "size_multiple": int(getattr(loaded, "size_multiple", 1) or 1)}


def _block_costs(source, model, output, factor, tile, overlap, chunks, block_size, jit_compile):
    """Each block of the job timed by its parts, as the blockwise engine's task runs them."""
    from emzoo.data.volumes import create_volume, open_regions, open_volume
    from emzoo.engine.blocks import BlockPlan, BlockWork, UpscaleRecipe, compute_block
    from emzoo.engine.midpoint import MidpointEngine
    from emzoo.engine.records import BlockRecords
    from emzoo.engine.tiler import Tiler

    volume = open_volume(source)
    recipe = UpscaleRecipe(volume.shape[0], factor)
    shape = (recipe.count,) + tuple(volume.shape[1:])
    engine = MidpointEngine(_cached_model(model), shape[1], shape[2], tile, overlap, jit_compile=jit_compile,
                            precision="float32")
    plan = BlockPlan(shape, chunks, Tiler(shape[1], shape[2], tile, overlap), block_size)
    create_volume(output, shape, volume.dtype, None, chunks=plan.chunks).publish_incomplete({"plan": {}})
    regions, records = open_regions(output), BlockRecords(output)
    rows = []
    for block in plan:
        work = BlockWork(recipe, block.z0, block.z1)
        extents = [(block.y0, block.y1, block.x0, block.x1)]
        while len(extents) <= work.max_reach:
            extents.append(engine.tiler.span(*extents[-1]))
        reads = [extents[reach] for _, reach in work.inputs.values()] + [extents[0]] * len(work.copies)
        zs = [z for z, _ in work.inputs.values()] + [z for _, z in work.copies]
        start = time.perf_counter()
        for z, (y0, y1, x0, x1) in zip(zs, reads):
            volume.read_crop(z, y0, x0, y1 - y0, x1 - x0)
        read = time.perf_counter() - start
        start = time.perf_counter()
        raw = compute_block(block, recipe, engine.tiler, engine, volume)
        compute = time.perf_counter() - start
        start = time.perf_counter()
        regions.write(block.z0, block.y0, block.x0, raw)
        records.record(block.id)
        write = time.perf_counter() - start
        rows.append({"block": list(block), "read_s": read, "compute_s": max(compute - read, 0.0), "write_s": write})
    return {"blocks": rows, "shape": list(shape), "chunks": list(plan.chunks),
            "tiler": [engine.tiler.tile, engine.tiler.overlap, engine.tiler.multiple]}


def _noop(index):
    return index


# ----------------------------------------------------------------------------- client
def start_cluster(workers):
    """A local cluster of ``workers`` processes, 1 Dask thread and 1 TensorFlow thread each, and its
    client; with the seconds it took (TensorFlow imported in every worker)."""
    import distributed

    start = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=":0", env=ONE_THREAD,
                                       silence_logs=logging.ERROR)
    client = distributed.Client(cluster, set_as_default=False)
    client.run(_one_thread)
    return cluster, client, time.perf_counter() - start


def _quiet_dask():
    """Dask's INFO lines (workers and clients coming and going) off the terminal."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.ERROR)


def close(cluster, client):
    _quiet_dask()
    client.close()
    cluster.close()


def run_path(path, clusters, source, output, args):
    """One job of ``path`` writing ``output``; its wall seconds as the caller sees them (for the
    single-process engine, as its worker sees them)."""
    from emzoo.engine import upscale_volume

    options = {"factor": args.factor, "tile": args.tile, "overlap": args.overlap, "chunks": args.chunks,
               "jit_compile": args.jit, "precision": "float32"}
    if path == "single":
        client = clusters["single"][1]
        return client.submit(_single_process_job, source, args.model, output, options, pure=False).result()
    cluster = clusters[path][0]
    start = time.perf_counter()
    upscale_volume(source, args.model, output=output, scheduler=cluster.scheduler_address,
                   block_size=args.block_size, progress=False, **options)
    return time.perf_counter() - start


def seconds_per_task(client, count):
    """The cluster's time per task: ``count`` no-op tasks submitted at once, until all are back."""
    client.gather(client.map(_noop, range(10), pure=False))  # connections up
    start = time.perf_counter()
    client.gather(client.map(_noop, range(count), pure=False))
    return (time.perf_counter() - start) / count


def max_difference(paths):
    from emzoo.data.volumes import read_volume

    arrays = [read_volume(path)[0].astype(np.int16) for path in paths]
    return max(int(np.abs(a - arrays[0]).max()) for a in arrays[1:])


def measure_memory(source, slices, args, folder):
    """A fresh 2-worker cluster runs one job; per worker: RSS with the model loaded, peak RSS."""
    from emzoo.engine import upscale_volume

    cluster, client, _ = start_cluster(2)
    try:
        base = client.run(_load_and_rss, args.model)
        start = time.perf_counter()
        upscale_volume(source, args.model, factor=args.factor, output=os.path.join(folder, f"mem_{slices}.ome.zarr"),
                       scheduler=cluster.scheduler_address, tile=args.tile, overlap=args.overlap, chunks=args.chunks,
                       block_size=args.block_size, jit_compile=args.jit, precision="float32", progress=False)
        seconds = time.perf_counter() - start
        peaks = client.run(_peak_rss_mb)
    finally:
        close(cluster, client)
    return {"slices": slices, "base_mb": max(base.values()), "peak_mb": sorted(peaks.values()),
            "seconds": seconds}


def _shape(text):
    values = tuple(int(v) for v in text.split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError("expected three integers z,y,x")
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="a registered name or saved folder")
    parser.add_argument("--slices", type=int, default=17)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunks", type=_shape, default=(4, 128, 128), help="input and output chunks z,y,x")
    parser.add_argument("--factor", type=float, default=4)
    parser.add_argument("--tile", type=int, default=None, help="default: whole slices (as emzoo does here)")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--jit", action="store_true", help="XLA-compile the model calls (off: same for all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--long", type=int, default=8, help="the memory run's long volume has this many "
                        "times the pairs along z (0: skip the memory runs)")
    parser.add_argument("--noop-tasks", type=int, default=2000)
    parser.add_argument("--json", help="write every number here")
    args = parser.parse_args()

    from estimate_scaling import block_costs

    from emzoo.engine.blocks import Block, UpscaleRecipe
    from emzoo.engine.tiler import Tiler

    result = {"settings": {k: v for k, v in vars(args).items() if k != "json"},
              "load": {"before": os.getloadavg()}}
    print(f"load average before: {result['load']['before']}", flush=True)
    folder = tempfile.mkdtemp(prefix="bench_distributed_")
    clusters = {}
    try:
        source = make_input(os.path.join(folder, "in.ome.zarr"), args.slices, args.size, args.chunks)
        startup = {}
        for path, workers in (("single", 1), ("dask1", 1), ("dask2", 2)):
            cluster, client, seconds = start_cluster(workers)
            clusters[path] = (cluster, client)
            startup[path] = seconds
        print("cluster start-up (processes + TensorFlow import), s: "
              + ", ".join(f"{p} {s:.1f}" for p, s in startup.items()), flush=True)
        first = {path: run_path(path, clusters, source, os.path.join(folder, f"first_{path}.ome.zarr"), args)
                 for path in PATHS}
        print("first job (model loading, tracing; not in the ratios), s: "
              + ", ".join(f"{p} {s:.1f}" for p, s in first.items()), flush=True)
        result["equal_max_difference"] = max_difference(
            [os.path.join(folder, f"first_{path}.ome.zarr") for path in PATHS])
        times = {path: [] for path in PATHS}
        for repeat in range(args.repeats):
            order = PATHS[repeat % 3:] + PATHS[:repeat % 3]
            for path in order:
                output = os.path.join(folder, f"run_{path}_{repeat}.ome.zarr")
                times[path].append(run_path(path, clusters, source, output, args))
                shutil.rmtree(output, ignore_errors=True)
            print(f"round {repeat + 1}: " + ", ".join(f"{p} {times[p][-1]:.2f} s" for p in PATHS), flush=True)
        median = {path: statistics.median(values) for path, values in times.items()}
        paired_speedup = statistics.median(a / b for a, b in zip(times["dask1"], times["dask2"]))
        paired_overhead = statistics.median(a / b for a, b in zip(times["dask1"], times["single"])) - 1

        single = clusters["single"][1]
        costs = single.submit(_block_costs, source, args.model, os.path.join(folder, "blocks.ome.zarr"),
                              args.factor, args.tile, args.overlap, args.chunks, args.block_size, args.jit,
                              pure=False).result()
        model = single.submit(_model_costs, args.model, args.size, pure=False).result()
        recipe = UpscaleRecipe(args.slices, args.factor)
        tiler = Tiler(*costs["shape"][1:], *costs["tiler"])  # the engine's: tile, overlap, size multiple
        geometry = [block_costs(recipe, Block(*row["block"]), tiler, args.chunks) for row in costs["blocks"]]
        per_block = {key: statistics.mean(row[key] for row in costs["blocks"])
                     for key in ("read_s", "compute_s", "write_s")}
        per_block.update({key: statistics.mean(g[key] for g in geometry) for key in geometry[0]})
        per_block["largest"] = {key: max(g[key] for g in geometry) for key in geometry[0]}
        per_block["count"] = len(costs["blocks"])
        per_block["compute_s_median"] = statistics.median(row["compute_s"] for row in costs["blocks"])
        accounted = per_block["read_s"] + per_block["compute_s"] + per_block["write_s"]
        per_task = {n: seconds_per_task(clusters[p][1], args.noop_tasks) for n, p in ((1, "dask1"), (2, "dask2"))}
        for path in list(clusters):
            close(*clusters.pop(path))

        memory = {}
        if args.long:
            long_slices = (args.slices - 1) * args.long + 1
            for name, slices in (("small", args.slices), ("long", long_slices)):
                path = source if slices == args.slices else make_input(
                    os.path.join(folder, f"in_{slices}.ome.zarr"), slices, args.size, args.chunks)
                memory[name] = measure_memory(path, slices, args, folder)
                print(f"memory, {slices} slices: worker RSS with the model {memory[name]['base_mb']:.0f} MB, "
                      f"peaks {', '.join(f'{m:.0f}' for m in memory[name]['peak_mb'])} MB "
                      f"({memory[name]['seconds']:.1f} s)", flush=True)
            memory["ratio"] = max(memory["long"]["peak_mb"]) / max(memory["small"]["peak_mb"])

        result.update({
            "startup": {"cluster_s": startup, "first_job_s": first},
            "seconds": times, "median_s": median,
            "ratios": {"speedup_2_vs_1_workers": median["dask1"] / median["dask2"],
                       "speedup_paired_median": paired_speedup,
                       "dask1_overhead_vs_single": median["dask1"] / median["single"] - 1,
                       "overhead_paired_median": paired_overhead},
            "per_block": per_block, "model_costs": model,
            "unaccounted_per_block_s": median["dask1"] / per_block["count"] - accounted,
            "scheduler": {"noop_tasks": args.noop_tasks, "seconds_per_task": per_task[2],
                          "seconds_per_task_1_worker": per_task[1]},
            "memory": memory})
        result["settings"]["size_multiple"] = model["size_multiple"]
    finally:
        for cluster, client in clusters.values():
            close(cluster, client)
        shutil.rmtree(folder, ignore_errors=True)
    result["load"]["after"] = os.getloadavg()

    ratios = result["ratios"]
    blocks = result["per_block"]
    print(f"{args.slices} x {args.size} x {args.size} uint8 OME-Zarr, chunks {args.chunks}, x{args.factor:g}, "
          f"model {args.model}, {blocks['count']} blocks; median s: "
          + ", ".join(f"{p} {result['median_s'][p]:.2f}" for p in PATHS))
    print(f"outputs of the three paths differ by at most {result['equal_max_difference']} uint8 unit(s)")
    print(f"2 vs 1 workers: throughput ratio {ratios['speedup_2_vs_1_workers']:.2f} (paired median "
          f"{ratios['speedup_paired_median']:.2f}; target >= 1.7: "
          f"{'PASS' if ratios['speedup_2_vs_1_workers'] >= 1.7 else 'FAIL'})")
    print(f"Dask at 1 worker vs single process: overhead {100 * ratios['dask1_overhead_vs_single']:+.1f} % "
          f"(paired median {100 * ratios['overhead_paired_median']:+.1f} %; target <= 10 %: "
          f"{'PASS' if ratios['dask1_overhead_vs_single'] <= 0.10 else 'FAIL'})")
    if memory:
        print(f"worker peak RSS, {memory['long']['slices']} vs {memory['small']['slices']} slices: ratio "
              f"{memory['ratio']:.3f} (target <= 1.25: {'PASS' if memory['ratio'] <= 1.25 else 'FAIL'})")
    print(f"per block: compute {blocks['compute_s']:.3f} s, read {1e3 * blocks['read_s']:.1f} ms "
          f"({blocks['fetched_bytes'] / 1e6:.2f} MB of chunks), write {1e3 * blocks['write_s']:.1f} ms "
          f"({blocks['written_bytes'] / 1e6:.2f} MB); Dask at 1 worker adds "
          f"{1e3 * result['unaccounted_per_block_s']:.0f} ms per block; scheduler "
          f"{1e3 * result['scheduler']['seconds_per_task']:.2f} ms per no-op task (2 workers)")
    model = result["model_costs"]
    print(f"model on one {model['tile']}^2 tile: extract {1e9 * model['extract_s_per_px']:.0f} ns/px, "
          f"from_features {1e9 * model['ff_s_per_px']:.0f} ns/px, features {model['feature_bytes_per_px']:.0f} B/px")
    print(f"load average after: {result['load']['after']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
