"""Peak memory of ``upscale_volume`` does not grow with the number of slices (streaming).

Writes two uint8 TIFF stacks of 512 x 512 slices, 17 and 129 slices long (cut from the shared
FIB-SEM stack, mirrored along z past its end, or noise when the data is absent), then upscales
each to a TIFF file in a fresh subprocess and reports the subprocess's peak resident set size
(``ru_maxrss``). A streaming engine holds only a chunk of slices, so the ratio
peak(129) / peak(17) should be close to 1 (target <= 1.25). Both subprocesses run the same model
and arguments; only the number of slices differs.

Example:
    nice -n 5 python benchmarks/bench_upscale_memory.py                 # compact FILM, x2
    nice -n 5 python benchmarks/bench_upscale_memory.py --model average # no network: I/O only
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data", "flyem_medulla_fibsem_10nm", "volume.tif")


def make_stack(path, slices, size):
    """Writes a (slices, size, size) uint8 stack with 10 nm voxels."""
    from emzoo.data.volumes import write_volume

    if os.path.exists(SHARED):
        import tifffile

        source = tifffile.memmap(SHARED)
        period = 2 * (len(source) - 1)
        index = [z % period if z % period < len(source) else period - z % period
                 for z in range(slices)]
        array = np.stack([np.asarray(source[z, :size, :size]) for z in index])
    else:
        array = (np.random.default_rng(0).random((slices, size, size)) * 255).astype(np.uint8)
    write_volume(path, array, voxel_size=(10, 10, 10))


def child(args):
    """Runs one upscale and prints a JSON line with its peak RSS."""
    import emzoo
    from emzoo import engine

    if args.model == "average":
        from emzoo.models.base import Interpolator

        class Average(Interpolator):
            size_multiple = 1

            def call(self, inputs, training=False):
                return {"image": 0.5 * (inputs["x0"] + inputs["x1"])}

        model = Average()
    elif args.model in ("compact-film", "tiny-film"):
        sys.path.insert(0, HERE)
        from bench_upscale_speed import build_model

        model = build_model(args.model)
    else:
        model = emzoo.load(args.model, compile=False)
    start = time.perf_counter()
    summary = engine.upscale_volume(args.input, model, factor=args.factor, output=args.output,
                                    batch_size=args.batch_size, tile=args.tile, progress=False)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": peak_mb, "seconds": time.perf_counter() - start,
                      "output_shape": summary["output_shape"]}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="compact-film",
                        help="compact-film / tiny-film (random weights), average, or a name")
    parser.add_argument("--sizes", default="17,129", help="the two stack lengths")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--factor", type=float, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    lengths = [int(n) for n in args.sizes.split(",")]
    peaks = {}
    with tempfile.TemporaryDirectory() as folder:
        for length in lengths:
            stack = os.path.join(folder, f"in_{length}.tif")
            make_stack(stack, length, args.size)
            out = os.path.join(folder, f"out_{length}.tif")
            command = [sys.executable, os.path.abspath(__file__), "--child", "--input", stack,
                       "--output", out, "--model", args.model, "--factor", str(args.factor),
                       "--batch-size", str(args.batch_size)]
            if args.tile:
                command += ["--tile", str(args.tile)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:])
                raise SystemExit(f"child for {length} slices failed")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            peaks[length] = result["peak_rss_mb"]
            print(f"{length:4d} slices x {args.size}x{args.size} -> {result['output_shape']}: "
                  f"peak RSS {result['peak_rss_mb']:.0f} MB, {result['seconds']:.1f} s", flush=True)
            os.remove(out)
    small, large = lengths[0], lengths[-1]
    ratio = peaks[large] / peaks[small]
    print(f"model={args.model} factor={args.factor} batch_size={args.batch_size}: peak RSS ratio "
          f"{large}/{small} slices = {ratio:.3f} (target <= 1.25: {'PASS' if ratio <= 1.25 else 'FAIL'})")


if __name__ == "__main__":
    main()
