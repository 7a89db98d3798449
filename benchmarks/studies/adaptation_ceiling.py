"""Ceiling of adaptation: how much a model gains when fine-tuned, for the same wall time and with the
same optimizer as ``emzoo.adapt``, on the very slices it is scored on.

``emzoo.adapt`` trains on lateral triplets of the kept slices only (it never sees a dropped slice).
Here the model instead trains on *axial* triplets of the full region (kept and dropped slices: the
exact task of each recursion level of the factor, ``(z, z + g, z + 2g)`` for ``g = F/2, F/4, .., 1``)
and is then scored on the dropped slices with `emzoo evaluate`'s protocol. No self-supervised
adaptation can beat this oracle with the same budget: if it gains little, the limit is the model
and the CPU budget, not how adaptation chooses its training frames.

Never run in CI (it trains on the scored slices on purpose). Example:
    python benchmarks/studies/adaptation_ceiling.py --region cube2-all --factor 4 --minutes 10
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench_quality

import numpy as np  # noqa: E402

from bench_quality import BINNED, REGIONS, region_volume  # noqa: E402


def axial_batch(full, gaps, rng, size, crop):
    """``(inputs, target)`` of ``size`` random axial triplets (crops, flips, transposes) of
    ``full`` (Z, Y, X) in [0, 1]."""
    depth, height, width = full.shape
    x0, middle, x1 = [], [], []
    for _ in range(size):
        gap = gaps[rng.integers(len(gaps))]
        z = int(rng.integers(0, depth - 2 * gap))
        top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
        frames = [full[z + k * gap, top:top + crop, left:left + crop] for k in (0, 1, 2)]
        if rng.random() < 0.5:
            frames = [f[:, ::-1] for f in frames]
        if rng.random() < 0.5:
            frames = [f.T for f in frames]
        x0.append(frames[0])
        middle.append(frames[1])
        x1.append(frames[2])

    def stack(frames):
        return np.asarray(frames, np.float32)[..., None]

    inputs = {"x0": stack(x0), "x1": stack(x1), "time": np.full((size, 1), 0.5, np.float32)}
    return inputs, stack(middle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--region", default="cube2-all", choices=sorted({**REGIONS, **BINNED}))
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--precision", default="float32", choices=("float32", "bf16"),
                        help="what the fine-tuning computes in (emzoo.adapt's default: float32)")
    args = parser.parse_args()

    import keras

    import emzoo
    from emzoo.engine.precision import copy_in_precision, resolve_precision
    from emzoo.evaluate import evaluate_volume

    volume, _ = region_volume(args.region)
    full = np.stack([volume.normalise_raw(volume.read(z))
                     for z in range(volume.shape[0])]).astype(np.float32)   # as adaptation reads
    base = emzoo.load(args.model, compile=False)
    model = copy_in_precision(base, resolve_precision(args.precision, base))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=args.learning_rate),
                  loss="mean_squared_error")
    gaps, gap = [], args.factor // 2
    while gap >= 1:
        gaps.append(gap)
        gap //= 2
    rng = np.random.default_rng(0)
    crop = min(args.crop, full.shape[1], full.shape[2])
    start, steps = time.monotonic(), 0
    while time.monotonic() - start < 60.0 * args.minutes:
        model.train_on_batch(*axial_batch(full, gaps, rng, args.batch_size, crop))
        steps += 1
    trained = copy_in_precision(model, "float32")
    scores = {}
    for name, candidate, baselines in (("base", base, ("linear",)), ("oracle", trained, ())):
        report = evaluate_volume(volume, args.factor, model=candidate, baselines=baselines,
                                 model_name=name)
        scores.update({k: m["mean"]["psnr"] for k, m in report["methods"].items()})
    print(f"{args.region} x{args.factor}, {args.minutes:g} min ({steps} steps, gaps {gaps}): "
          f"linear {scores['linear']:.3f}, {args.model} {scores['base']:.3f} "
          f"({scores['base'] - scores['linear']:+.3f}), fine-tuned on the scored slices in "
          f"{args.precision} "
          f"{scores['oracle']:.3f} ({scores['oracle'] - scores['base']:+.3f} over {args.model})")


if __name__ == "__main__":
    main()
