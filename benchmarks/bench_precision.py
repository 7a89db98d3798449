"""float32 vs bf16 inference of the default model, side by side: slices/s and PSNR change.

Speed: :func:`emzoo.upscale_volume` upscales a ``--size`` x ``--size`` crop of the shared FIB-SEM
stack (``--slices`` slices, x``--factor``) with the bundled ``default`` model, once per path:
float32 and bf16 (``precision=``), each without and with XLA (``jit_compile``; the engine's
``"auto"`` picks XLA on jobs of 200 model calls or more, i.e. on real volumes). Every path runs
once on two slices first (tracing, compiling and the bf16 rebuild are not timed), then
``--repeats`` rounds with the paths interleaved within each round; the median output slices/s
(wall) and per CPU second are printed with the bf16 / float32 ratio at each XLA setting. A
single 3x3 convolution (32 -> 32 channels, 512 x 512) is timed the same way as a reference for
what bf16 gives one op on this CPU.

Quality: the ``emzoo evaluate`` protocol (:func:`emzoo.evaluate.evaluate_volume`, split
``validation``: z 78..96 of the 97-slice stack, never read in training) at each ``--factors``,
once per precision; PSNR of both and the change (bf16 - float32), which must stay within
0.05 dB, and the largest pixel difference between the two reconstructions.

bf16 is refused where the CPU has no AVX512-BF16 / AMX (see :mod:`emzoo.engine.precision`);
this script then says so and stops.

Example:
    nice -n 5 python benchmarks/bench_precision.py --repeats 5
    python benchmarks/bench_precision.py --skip-quality --size 256
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import emzoo  # noqa: E402
from emzoo import engine  # noqa: E402
from emzoo.engine import precision as precision_lib  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                    "flyem_medulla_fibsem_10nm", "volume.tif")


def load_stack(path, slices, size):
    """The first ``slices`` slices of the stack, central ``size`` x ``size`` crop (uint8)."""
    import tifffile

    volume = tifffile.memmap(path)
    top = (volume.shape[1] - size) // 2
    left = (volume.shape[2] - size) // 2
    return np.array(volume[:slices, top:top + size, left:left + size])


def timed_rounds(paths, repeats):
    """``{name: ([wall s], [cpu s], last result)}``, the paths interleaved within each round."""
    times = {name: ([], [], None) for name in paths}
    for _ in range(repeats):
        for name, path in paths.items():
            wall, cpu = time.perf_counter(), time.process_time()
            result = path()
            walls, cpus, _ = times[name]
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            times[name] = (walls, cpus, result)
    return times


def conv_reference(repeats, size=512, channels=32):
    """Median seconds of one 3x3 conv (channels -> channels, size x size) in float32 and bf16."""
    import keras

    x = np.random.default_rng(0).random((1, size, size, channels)).astype("float32")
    convs = {}
    for policy in ("float32", "mixed_bfloat16"):
        conv = keras.layers.Conv2D(channels, 3, padding="same", dtype=policy)
        conv.build(x.shape)
        function = _compiled(conv)
        np.asarray(function(x))  # trace
        convs[policy] = lambda function=function: np.asarray(function(x))
    times = timed_rounds(convs, repeats)
    return {name: float(np.median(walls)) for name, (walls, _, _) in times.items()}


def _compiled(layer):
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda x: layer(x))
    return layer


def speed(model, stack, factor, repeats):
    """Prints slices/s of float32 and bf16, without and with XLA, and the bf16 / float32 ratios."""
    outputs = (len(stack) - 1) * factor + 1
    paths = {}
    for xla in (False, True):
        for precision in ("float32", "bf16"):
            def run(volume, precision=precision, xla=xla):
                return engine.upscale_volume(volume, model, factor=factor, progress=False,
                                             jit_compile=xla, precision=precision)["array"]
            run(stack[:2])  # trace / compile / rebuild, not timed
            paths[(precision, xla)] = lambda run=run: run(stack)
    times = timed_rounds(paths, repeats)
    print(f"\nspeed: default model, {stack.shape} uint8 crop, x{factor} -> {outputs} slices, "
          f"batch {engine.default_batch_size()}, {repeats} interleaved rounds (median)")
    print(f"{'path':<24} {'slices/s':>9} {'slices/CPU s':>13} {'ratio wall':>11} {'ratio CPU':>10}")
    for (precision, xla), (walls, cpus, _) in times.items():
        base_walls, base_cpus, _ = times[("float32", xla)]
        rate, cpu_rate = outputs / np.median(walls), outputs / np.median(cpus)
        ratio = np.median(base_walls) / np.median(walls)
        cpu_ratio = np.median(base_cpus) / np.median(cpus)
        name = f"{precision}, {'XLA' if xla else 'no XLA'}"
        print(f"{name:<24} {rate:>9.3f} {cpu_rate:>13.3f} {ratio:>11.2f} {cpu_ratio:>10.2f}")
    # What jit_compile="auto" picks on a long job: XLA in float32, the plain graph in bf16 on a CPU.
    from emzoo.engine.policy import resolve_jit_compile

    auto = {p: resolve_jit_compile("auto", True, None, p) for p in ("float32", "bf16")}
    walls = {p: np.median(times[(p, auto[p])][0]) for p in auto}
    cpus = {p: np.median(times[(p, auto[p])][1]) for p in auto}
    print(f"engine defaults on long jobs (float32 {'XLA' if auto['float32'] else 'no XLA'}, bf16 "
          f"{'XLA' if auto['bf16'] else 'no XLA'}): bf16 / float32 = "
          f"{walls['float32'] / walls['bf16']:.2f} wall, {cpus['float32'] / cpus['bf16']:.2f} CPU")
    for xla in (False, True):
        a = times[("float32", xla)][2].astype(np.int16)
        b = times[("bf16", xla)][2].astype(np.int16)
        print(f"{'XLA' if xla else 'no XLA'}: bf16 vs float32 output, max |difference| "
              f"{int(np.abs(a - b).max())} uint8 units, mean {float(np.abs(a - b).mean()):.4f}")


def quality(model, path, factors, split):
    """Prints the evaluate protocol's PSNR in float32 and bf16 and the change, per factor."""
    from emzoo.evaluate import evaluate_volume

    print(f"\nquality: emzoo evaluate protocol, split {split}, {os.path.basename(path)}")
    print(f"{'factor':<7} {'float32 dB':>11} {'bf16 dB':>9} {'change dB':>10} "
          f"{'max |diff|':>11} {'within 0.05':>12}")
    worst = 0.0
    for factor in factors:
        reports = {}
        for precision in ("float32", "bf16"):
            reports[precision] = evaluate_volume(path, factor, model=model, baselines=(),
                                                 split=split, model_name="default",
                                                 precision=precision)
        psnr = {p: r["methods"]["default"]["mean"]["psnr"] for p, r in reports.items()}
        diff = _largest_slice_difference(reports)
        change = psnr["bf16"] - psnr["float32"]
        worst = max(worst, abs(change))
        print(f"x{factor:<6} {psnr['float32']:>11.3f} {psnr['bf16']:>9.3f} {change:>+10.4f} "
              f"{diff:>11.5f} {'yes' if abs(change) <= 0.05 else 'NO':>12}")
    print(f"largest |PSNR change| {worst:.4f} dB (limit 0.05)")


def _largest_slice_difference(reports):
    """Largest per-slice PSNR difference between the two reports (dB)."""
    a = [row["psnr"] for row in reports["float32"]["methods"]["default"]["per_slice"]]
    b = [row["psnr"] for row in reports["bf16"]["methods"]["default"]["per_slice"]]
    return float(np.max(np.abs(np.subtract(a, b))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DATA, help="the FIB-SEM stack (10 nm isotropic)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--slices", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--factor", type=int, default=4, help="speed: a power of two")
    parser.add_argument("--factors", default="2,4,8", help="quality: comma-separated")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()

    import keras

    supported, reason = precision_lib.bf16_support()
    print(f"backend={keras.backend.backend()} bf16: {'supported' if supported else 'NOT supported'}"
          f" ({reason}); load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if not supported:
        return
    model = emzoo.load(args.model, compile=False)
    if not args.skip_speed:
        conv = conv_reference(args.repeats)
        print(f"one 3x3 conv 32->32 at 512x512: float32 {conv['float32'] * 1e3:.1f} ms, bf16 "
              f"{conv['mixed_bfloat16'] * 1e3:.1f} ms, ratio "
              f"{conv['float32'] / conv['mixed_bfloat16']:.2f}")
        speed(model, load_stack(args.data, args.slices, args.size), args.factor, args.repeats)
    if not args.skip_quality:
        quality(model, args.data, [int(f) for f in args.factors.split(",")], args.split)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
