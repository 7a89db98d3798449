"""TSAIN speed: forward time per 512x512 frame and training-step time at batch 8, 256x256.

The issue asks for both numbers with the default (paper) configuration. Timings use Keras'
compiled paths (``predict_on_batch`` and ``train_on_batch``), after one warm-up call that traces
and compiles. On a small CPU a batch-8 training step can take minutes: ``--train_batch 1`` measures
one sample and the script prints the batch-8 figure extrapolated linearly (marked as such); in the
same way ``--forward_size`` / ``--train_size`` below the targets extrapolate by pixel count (every
layer's cost is linear in H*W; this ignores cache effects, so treat it as an estimate).

Example:
    nice -n 5 python benchmarks/bench_tsain.py                       # defaults: 512 fwd, 8x256 train
    nice -n 5 python benchmarks/bench_tsain.py --train_batch 1 --repeats 1
    nice -n 5 python benchmarks/bench_tsain.py --forward_size 128 --train_size 64 --train_batch 1
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import emzoo  # noqa: E402


def _inputs(batch, size, channels, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.random((batch, size, size, channels), dtype=np.float32)
    x1 = rng.random((batch, size, size, channels), dtype=np.float32)
    return {"x0": x0, "x1": x1, "time": np.full((batch, 1), 0.5, np.float32)}, 0.5 * (x0 + x1)


def _time(fn, repeats):
    """Median wall time of ``fn`` after a warm-up, the wall times, and the mean process CPU time.

    The CPU time (all threads) tells how much work a call is when the machine is shared and the
    wall time mostly measures waiting.
    """
    fn()  # warm-up: trace and compile
    times = []
    cpu_start = time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu_start) / repeats
    print(f"  (process CPU time per call, all threads: {cpu * 1e3:.0f} ms; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    return float(np.median(times)), times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forward_size", type=int, default=512)
    parser.add_argument("--target_forward_size", type=int, default=512,
                        help="frame size the forward time is reported for (extrapolated by pixels)")
    parser.add_argument("--train_size", type=int, default=256)
    parser.add_argument("--target_train_size", type=int, default=256)
    parser.add_argument("--train_batch", type=int, default=8)
    parser.add_argument("--target_batch", type=int, default=8,
                        help="batch the training time is reported for (extrapolated if larger)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip_forward", action="store_true")
    parser.add_argument("--skip_train", action="store_true")
    args = parser.parse_args()

    model = emzoo.load("tsain", weights=None, compile=False)
    print(f"backend={keras.backend.backend()} params={model.count_params():,} "
          f"config={model.get_config()}")

    if not args.skip_forward:
        inputs, _ = _inputs(1, args.forward_size, model.channels)
        median, times = _time(lambda: model.predict_on_batch(inputs), args.repeats)
        print(f"forward 1x{args.forward_size}x{args.forward_size}: {median * 1e3:.0f} ms/frame "
              f"(median of {args.repeats}: {[round(t * 1e3) for t in times]})")
        if args.forward_size != args.target_forward_size:
            scale = (args.target_forward_size / args.forward_size) ** 2
            print(f"forward 1x{args.target_forward_size}x{args.target_forward_size}: "
                  f"~{median * scale * 1e3:.0f} ms/frame (EXTRAPOLATED by pixel count from "
                  f"{args.forward_size}x{args.forward_size}; every layer is linear in H*W)")

    if not args.skip_train:
        model.compile(optimizer=keras.optimizers.Adam(4e-4), loss="mae", metrics=[])
        inputs, y = _inputs(args.train_batch, args.train_size, model.channels, seed=1)
        median, times = _time(lambda: model.train_on_batch(inputs, y), args.repeats)
        print(f"train step batch {args.train_batch} x {args.train_size}x{args.train_size}: "
              f"{median * 1e3:.0f} ms (median of {args.repeats}: {[round(t * 1e3) for t in times]})")
        if (args.train_batch, args.train_size) != (args.target_batch, args.target_train_size):
            scale = (args.target_batch / args.train_batch
                     * (args.target_train_size / args.train_size) ** 2)
            size = args.target_train_size
            print(f"train step batch {args.target_batch} x {size}x{size}: ~{median * scale * 1e3:.0f} "
                  f"ms (EXTRAPOLATED linearly in batch and pixels from batch {args.train_batch} x "
                  f"{args.train_size}x{args.train_size})")


if __name__ == "__main__":
    main()
