"""FILM forward speed: eager vs tf.function vs XLA vs emzoo's own exported SavedModel.

Batch 1, CPU, the default (Style) configuration with random weights (or ``--weights``). All
variants use the same weights and inputs and run side by side in one process; the script prints
seconds per frame (median of ``--repeats``, the variants timed in turns after one warm-up call
each, so changes in machine load hit them alike) and the ratios:

* ``savedmodel / emzoo``: the exported SavedModel's time over emzoo's in-process graph
  (tf.function, no XLA); >= 1 means emzoo is at least as fast as its FILM-compatible export.
* ``no-XLA / XLA``: > 1 means ``jit_compile=True`` helps.

Example:
    TF_CPP_MIN_LOG_LEVEL=2 nice -n 5 python benchmarks/bench_film.py --sizes 256 512 --repeats 3
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _interleaved(variants, repeats):
    """Median seconds per call of each variant, timed in turns so load changes hit all alike."""
    first, times = {}, {name: [] for name in variants}
    for name, fn in variants.items():
        start = time.perf_counter()
        fn()  # warm-up (tracing / XLA compilation)
        first[name] = time.perf_counter() - start
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), first[name]) for name in variants}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", default=None, help=".weights.h5 or FILM SavedModel folder")
    parser.add_argument("--skip", nargs="*", default=[], choices=["eager", "xla", "savedmodel"])
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    import emzoo
    from emzoo.export import export_saved_model

    model = emzoo.load("film", weights=args.weights, compile=False)
    print(f"FILM default config: {model.count_params():,} parameters; "
          f"TF {tf.__version__}; {os.cpu_count()} CPU(s) visible")

    graph = tf.function(lambda inputs: model(inputs, training=False)["image"], jit_compile=False)
    xla = tf.function(lambda inputs: model(inputs, training=False)["image"], jit_compile=True)
    loaded = None
    if "savedmodel" not in args.skip:
        folder = tempfile.mkdtemp(prefix="bench_film_")
        start = time.perf_counter()
        export_saved_model(model, os.path.join(folder, "exported"))
        loaded = tf.saved_model.load(os.path.join(folder, "exported"))
        print(f"export + load: {time.perf_counter() - start:.1f} s")

    rng = np.random.default_rng(0)
    for size in args.sizes:
        inputs = {"x0": tf.constant(rng.random((1, size, size, 3), dtype=np.float32)),
                  "x1": tf.constant(rng.random((1, size, size, 3), dtype=np.float32)),
                  "time": tf.constant([[0.5]], tf.float32)}
        variants = {"graph": lambda: graph(inputs).numpy()}
        if "eager" not in args.skip:
            variants["eager"] = lambda: model(inputs, training=False)["image"].numpy()
        if "xla" not in args.skip:
            variants["xla"] = lambda: xla(inputs).numpy()
        if loaded is not None:
            variants["savedmodel"] = lambda: loaded(inputs, training=False)["image"].numpy()
        reference = graph(inputs).numpy()
        results = _interleaved(variants, args.repeats)
        for name, fn in variants.items():
            difference = float(np.abs(fn() - reference).max())
            print(f"{size}x{size} {name:>10}: {results[name][0]:.3f} s/frame "
                  f"(first call {results[name][1]:.1f} s; max |diff| vs graph {difference:.1e})",
                  flush=True)
        if "savedmodel" in results:
            print(f"{size}x{size} ratio savedmodel / emzoo graph = "
                  f"{results['savedmodel'][0] / results['graph'][0]:.2f}")
        if "xla" in results:
            print(f"{size}x{size} ratio no-XLA / XLA = {results['graph'][0] / results['xla'][0]:.2f}")
        if "eager" in results:
            print(f"{size}x{size} ratio eager / graph = {results['eager'][0] / results['graph'][0]:.2f}")


if __name__ == "__main__":
    main()
