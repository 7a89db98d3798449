"""Upscaling throughput: the volume engine vs naive pairwise model calls, side by side.

Both paths upscale the same stack with the same model (random weights are enough for speed):

* **naive**: what the original FILM tools do: depth-first recursion over each input pair, one
  model call per midpoint at batch 1 (each call extracts both frames' features again);
* **engine (no feature reuse, no XLA)**: :func:`emzoo.upscale_volume` with
  ``reuse_features=False, jit_compile=False``: same batching, features recomputed per pair;
* **engine (no XLA)**: feature reuse, plain ``tf.function`` graph;
* **engine (XLA)**: :func:`emzoo.upscale_volume` as users get it on real stacks (feature reuse,
  and XLA for FILM on TensorFlow once a job makes ``emzoo.engine.policy.XLA_MIN_CALLS`` model
  calls; default batch size: 4 with a GPU, 1 on CPU); plus the engine at batch 4 when that is not
  the default.

Every path runs once on a short stack first (tracing and compiling are not timed), then
``--repeats`` rounds on the full stack, the paths interleaved within each round (this machine's
load drifts by tens of percent between minutes); the median slices/s (output slices per second)
is printed with the ratio to the naive path. The naive path's result is compared with the engine's (they
must agree to 1e-5 on the dense grid).

Example:
    nice -n 5 python benchmarks/bench_upscale_speed.py                       # compact FILM, x4
    nice -n 5 python benchmarks/bench_upscale_speed.py --model default --slices 9 --size 256
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import emzoo  # noqa: E402
from emzoo import engine  # noqa: E402
from emzoo.engine.policy import compiled_function  # noqa: E402
from emzoo.testing import TINY_FILM  # noqa: E402

COMPACT_FILM = dict(pyramid_levels=5, fusion_pyramid_levels=4, specialized_levels=2, sub_levels=3,
                    filters=16, flow_convs=[3, 3, 3], flow_filters=[16, 32, 64], channels=1)


def build_model(name):
    """``compact-film`` / ``tiny-film`` (random weights), else a registered name or folder."""
    if name in ("compact-film", "tiny-film"):
        from emzoo.models.film import FILM

        model = FILM(**(COMPACT_FILM if name == "compact-film" else TINY_FILM))
        model.build_for_weights()
        return model
    return emzoo.load(name, compile=False)


def stack(slices, size, seed=0):
    """A real EM crop when the shared data is there (realistic flows), else smooth noise."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                        "flyem_medulla_fibsem_10nm", "volume.tif")
    if os.path.exists(path):
        import tifffile

        volume = tifffile.memmap(path)
        return np.array(volume[:slices, :size, :size])
    rng = np.random.default_rng(seed)
    return (rng.random((slices, size, size)) * 255).astype(np.uint8)


def model_tiler(volume, model):
    """One tile per slice, padded to the model's size multiple (as the engine does untiled)."""
    height, width = volume.shape[1:]
    return engine.Tiler(height, width, None, 0, model.size_multiple)


def model_input(tiler, model, unit):
    """A normalised slice ``unit`` (H, W) as the model's batch-1 input."""
    tile = tiler.split(unit[..., None])
    return np.repeat(tile, 3, -1) if model.channels == 3 else tile


def naive_upscale(volume, model, factor):
    """Depth-first midpoint recursion, one batch-1 model call per midpoint (like FILM's tools)."""
    from emzoo.data.volumes import denormalise, normalise

    call = compiled_function(model, "call", False)
    tiler = model_tiler(volume, model)
    time_half = np.full((1, 1), 0.5, np.float32)

    def prepare(unit):
        return model_input(tiler, model, unit)

    def middle(a, b):
        out = np.asarray(call(prepare(a), prepare(b), time_half))
        out = out.mean(-1, keepdims=True) if model.channels == 3 else out
        return np.clip(tiler.merge(out)[..., 0], 0.0, 1.0)

    def recurse(a, b, depth):
        if depth == 0:
            return [a]
        m = middle(a, b)
        return recurse(a, m, depth - 1) + recurse(m, b, depth - 1)

    depth = int(np.log2(factor))
    frames = []
    for z in range(len(volume) - 1):
        frames += recurse(normalise(volume[z]), normalise(volume[z + 1]), depth)
    frames.append(normalise(volume[-1]))
    return np.stack([denormalise(f, volume.dtype) for f in frames])


def reuse_bound(volume, model, factor, repeats):
    """The best speed-up feature reuse can give, from timed parts (Amdahl's law), or None.

    Times one compiled model call (two feature extractions + flows + fusion) and one compiled
    feature extraction at batch 1 on a slice of the stack, interleaved. The naive path makes
    ``calls = (N - 1) * (F - 1)`` calls, each extracting two slices; perfect reuse extracts each
    slice that is ever an input once (the N inputs and the midpoints of every level but the last).
    The bound is ``calls * call / (calls * (call - 2 * extract) + inputs * extract)``.
    """
    if not hasattr(model, "extract"):
        return None
    from emzoo.data.volumes import normalise

    tile = model_input(model_tiler(volume, model), model, normalise(volume[0]))
    call = compiled_function(model, "call", False)
    extract = compiled_function(model, "extract", False)
    time_half = np.full((1, 1), 0.5, np.float32)
    parts = {"call": lambda: np.asarray(call(tile, tile, time_half)),
             "extract": lambda: [np.asarray(f) for f in extract(tile)["features"]]}
    times = {name: [] for name in parts}
    for _ in range(repeats + 1):
        for name, part in parts.items():
            start = time.perf_counter()
            part()
            times[name].append(time.perf_counter() - start)
    call_s, extract_s = (float(np.median(times[name][1:])) for name in ("call", "extract"))
    pairs = len(volume) - 1
    calls = pairs * (factor - 1)
    inputs = len(volume) + pairs * (factor // 2 - 1)
    bound = calls * call_s / (calls * (call_s - 2 * extract_s) + inputs * extract_s)
    return call_s, extract_s, bound


def timed(function, repeats):
    """Median wall and CPU (process) seconds of ``repeats`` runs, and the last result.

    CPU seconds sum all threads of this process; on a shared, busy machine they are the fairer
    measure (wall time then mostly measures the other processes).
    """
    walls, cpus = [], []
    result = None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return float(np.median(walls)), float(np.median(cpus)), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="compact-film",
                        help="compact-film (random weights) or a registered name / folder")
    parser.add_argument("--slices", type=int, default=9)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--factor", type=int, default=4, help="a power of two")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="engine batch size (default: emzoo's, 4 with a GPU, 1 on CPU)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra/inter-op threads (0: TensorFlow's default)")
    args = parser.parse_args()

    import keras

    if args.threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    model = build_model(args.model)
    volume = stack(args.slices, args.size)
    outputs = (args.slices - 1) * args.factor + 1
    batch_size = args.batch_size or engine.default_batch_size()
    print(f"backend={keras.backend.backend()} model={args.model} params={model.count_params():,} "
          f"stack={volume.shape} {volume.dtype} factor={args.factor} -> {outputs} slices, "
          f"engine batch_size={batch_size}")

    paths = {"naive (batch 1, pairwise)": lambda v: naive_upscale(v, model, args.factor)}
    common = dict(factor=args.factor, batch_size=batch_size, progress=False)
    paths["engine (no reuse, no XLA)"] = lambda v: engine.upscale_volume(
        v, model, reuse_features=False, jit_compile=False, **common)["array"]
    paths["engine (no XLA)"] = lambda v: engine.upscale_volume(v, model, jit_compile=False,
                                                                **common)["array"]
    paths["engine (XLA)"] = lambda v: engine.upscale_volume(v, model, jit_compile=True,
                                                             **common)["array"]
    if batch_size != 4:
        paths["engine (XLA, batch 4)"] = lambda v: engine.upscale_volume(
            v, model, jit_compile=True, **dict(common, batch_size=4))["array"]
    results, rates, cpu_rates = {}, {}, {}
    naive = "naive (batch 1, pairwise)"
    for path in paths.values():
        path(volume[:6])  # warm-up: trace / compile at the same slice size
    walls, cpus = {name: [] for name in paths}, {name: [] for name in paths}
    for _ in range(args.repeats):  # interleaved, so that load changes hit every path alike
        for name, path in paths.items():
            wall, cpu, results[name] = timed(lambda: path(volume), 1)
            walls[name].append(wall)
            cpus[name].append(cpu)
    for name in paths:
        wall, cpu = float(np.median(walls[name])), float(np.median(cpus[name]))
        rates[name], cpu_rates[name] = outputs / wall, outputs / cpu
        print(f"{name:<28} wall {wall:7.2f} s {rates[name]:6.2f} slices/s "
              f"x{rates[name] / rates[naive]:.2f} | CPU {cpu:7.2f} s {cpu_rates[name]:6.2f} "
              f"slices/CPU-s x{cpu_rates[name] / cpu_rates[naive]:.2f} vs naive", flush=True)
    bound = reuse_bound(volume, model, args.factor, max(args.repeats, 3))
    if bound is not None:
        call_s, extract_s, limit = bound
        print(f"one model call {call_s * 1e3:.0f} ms, one feature extraction {extract_s * 1e3:.0f} ms "
              f"({2 * extract_s / call_s:.0%} of a call): perfect feature reuse can at best give "
              f"x{limit:.2f} over naive (Amdahl); the rest must come from batching and XLA")
    reference = results["naive (batch 1, pairwise)"].astype(np.float64)
    for name, result in results.items():
        difference = np.abs(result.astype(np.float64) - reference).max()
        print(f"max |{name} - naive| = {difference:g} (dtype units)")


if __name__ == "__main__":
    main()
