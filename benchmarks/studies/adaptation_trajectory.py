"""Does self-validation follow the real task? One adaptation run, scored as it goes on every check.

One run with ``emzoo.adapt``'s settings (L2, float32 unless ``--precision bf16``, lr 5e-5, batch
8, crop 128, seed 0; no early stopping, no margin), on the kept slices of a region (every F-th
slice). At each step mark it scores the weights reached there, and the best weights so far by
adapt's selection, on: adapt's own held-out lateral triplets (the selection set), fresh held-out
lateral triplets from the same x range (another seed; 4x as many), the input's own axial
triplets, and PSNR on the dropped slices with `emzoo evaluate`'s protocol (the truth adaptation
never sees). Gains are dB over the base model (positive: better).

Never run in CI (it scores the dropped slices on purpose). Example:
    python benchmarks/studies/adaptation_trajectory.py --region cube2-bin2 --factor 4 --steps 150 350
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench_quality

import numpy as np  # noqa: E402

from bench_quality import BINNED, REGIONS, kept_slices, region_volume  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--region", default="cube2-all", choices=sorted({**REGIONS, **BINNED}))
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--steps", type=int, nargs="+", default=[150, 350, 550, 800])
    parser.add_argument("--precision", default="float32", choices=["float32", "bf16"],
                        help="what the training computes in (the numbers of benchmarks/README.md "
                             "were measured in bf16)")
    args = parser.parse_args()

    import keras

    import emzoo
    from emzoo.adaptation.fine_tune import held_out_error
    from emzoo.adaptation.lateral import LateralTriplets, axial_batches, lateral_gaps, read_block
    from emzoo.data.volumes import ArrayVolume
    from emzoo.engine.precision import copy_in_precision, resolve_precision
    from emzoo.evaluate import evaluate_volume

    volume, voxel = region_volume(args.region)
    kept_voxel = (voxel[0] * args.factor, voxel[1], voxel[2])
    block, _ = read_block(ArrayVolume(kept_slices(volume, args.factor), kept_voxel))
    base = emzoo.load(args.model, compile=False)
    gaps = lateral_gaps(kept_voxel[0], kept_voxel[2], args.factor)
    triplets = LateralTriplets(block, kept_voxel[0] / kept_voxel[2], gaps, 128, 0.2)
    held_rng = np.random.default_rng([0, 0])   # adapt's held-out triplets (seed 0)
    channels = base.channels
    checks = {"selection": [triplets.batch(held_rng, 8, channels, held_out=True) for _ in range(4)],
              "fresh": [triplets.batch(np.random.default_rng([1, 0, k]), 8, channels, held_out=True)
                        for k in range(16)],
              "axial": axial_batches(block, int(getattr(base, "size_multiple", 1) or 1))}

    def scores(model):
        result = {name: held_out_error(model, batches, "l2") for name, batches in checks.items()}
        report = evaluate_volume(volume, args.factor, model=model, baselines=(), model_name="m")
        result["dropped"] = report["methods"]["m"]["mean"]["psnr"]
        return result

    def gains(result):
        text = ", ".join(f"{name} {10 * np.log10(before[name] / result[name]):+.3f}"
                         for name in checks)
        change = result["dropped"] - before["dropped"]
        return f"{text} dB; dropped slices {result['dropped']:.3f} ({change:+.3f})"

    before = scores(base)
    print(f"{args.model} {args.region} x{args.factor}: lateral gaps {gaps}, crop {triplets.crop}, "
          f"base PSNR {before['dropped']:.3f}", flush=True)
    model = copy_in_precision(base, resolve_precision(args.precision, model=None))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=5e-5), loss="mean_squared_error")
    best_error, best_step, best_weights = before["selection"], 0, None
    start = time.monotonic()
    for step in range(1, max(args.steps) + 1):
        model.train_on_batch(*triplets.batch(np.random.default_rng([0, 1, step - 1]), 8, channels))
        if step % 25 == 0:   # adapt's evaluation interval
            error = held_out_error(model, checks["selection"], "l2")
            if error < best_error:
                best_error, best_step, best_weights = error, step, model.get_weights()
        if step in args.steps:
            reached = gains(scores(copy_in_precision(model, "float32")))
            line = f"step {step} ({time.monotonic() - start:.0f} s): {reached}"
            if best_weights is not None:
                current = model.get_weights()
                model.set_weights(best_weights)
                best = gains(scores(copy_in_precision(model, "float32")))
                line += f"\n  best so far (step {best_step}): {best}"
                model.set_weights(current)
            print(line, flush=True)


if __name__ == "__main__":
    main()
