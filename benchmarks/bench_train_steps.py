"""Training step rate of each architecture against the triplet pipeline's rate, in one run.

For every architecture (the zoo entry's default configuration, random weights, compiled the way
``emzoo train`` compiles it: paper loss, Adam, PSNR / SSIM / IE metrics) this times optimizer
steps on batches already in memory, so the number is the model's cost alone; then it times
:func:`emzoo.data.triplets.triplet_dataset` (random crops, gaps 1, 2, 4, joint augmentation,
prefetch) at the same crop, batch size and channel count. It prints steps/s and samples/s of
both and the ratio pipeline samples/s / training samples/s, which must stay >= 5 for the data
never to be the bottleneck (issue 5). Both are measured on this machine under the same load, so
the ratio is meaningful even when the absolute rates are not.

Example:
    nice -n 5 python benchmarks/bench_train_steps.py                       # batch 8, 256x256, all
    nice -n 5 python benchmarks/bench_train_steps.py --crop 64 --batch 2 --steps 2 --archs film
    # SSAN, DAN and TSAIN at 256x256 need remat (and batch <= 2) to fit in 24 GB:
    python benchmarks/bench_train_steps.py --archs tsain,ssan,dan --batch 2 --set remat=true
"""

import argparse
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EMZOO_VGG_WEIGHTS", "random")  # the VGG loss's cost without its download

DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOURCES = [DATA / "isbi2012_sstem" / "volume.tif", DATA / "flyem_medulla_fibsem_10nm" / "volume.tif"]
ARCHITECTURES = ("film", "tsain", "ssan", "dan")
TARGET_RATIO = 5.0


def pipeline_rate(sources, crop, batch, channels, batches, warmup=3):
    """Samples/s of the training pipeline (after ``warmup`` batches: tracing, first prefetches)."""
    from emzoo.data.triplets import triplet_dataset

    dataset = triplet_dataset(sources, gaps=(1, 2, 4), crop=crop, batch_size=batch, channels=channels)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    del iterator  # release the tf.data threads before the next measurement
    return batches * batch / seconds


def training_rate(name, sources, crop, batch, steps, loss, overrides, warmup=2):
    """(steps/s, model channels, parameters) of ``train_on_batch`` for architecture ``name``.

    The batches come from the real pipeline but are taken before timing starts, so the time is
    the model's forward, loss, backward and Adam update only.
    """
    import emzoo
    from emzoo.data.triplets import triplet_dataset
    from emzoo.training import compile_model

    model = emzoo.load(name, weights=None, compile=False, **overrides)
    compile_model(model, loss, "adam", None, "auto")  # what `emzoo train` compiles
    dataset = triplet_dataset(sources, gaps=(1, 2, 4), crop=crop, batch_size=batch,
                              channels=model.channels, seed=1)
    batches = [(inputs, target) for inputs, target in dataset.take(4)]
    for index in range(warmup):  # tracing / compilation
        model.train_on_batch(*batches[index % len(batches)])
    start = time.perf_counter()
    for index in range(steps):
        model.train_on_batch(*batches[index % len(batches)])
    seconds = time.perf_counter() - start
    return steps / seconds, model.channels, model.count_params()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHITECTURES),
                        help="comma-separated architectures / zoo entries")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per model")
    parser.add_argument("--pipeline-batches", type=int, default=50, help="timed pipeline batches")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed training steps first (the first traces the step)")
    parser.add_argument("--loss", default="paper", help="paper (default), l1, l2, ...")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="model configuration override for every architecture (repeatable)")
    parser.add_argument("--data", default=",".join(str(s) for s in SOURCES),
                        help="comma-separated volumes (default: the two shared stacks)")
    args = parser.parse_args()

    from emzoo import training

    sources = [s for s in args.data.split(",") if s]
    overrides = training.parse_overrides(args.set)
    print(f"crop {args.crop} batch {args.batch} loss {args.loss} steps {args.steps} "
          f"cpus {os.cpu_count()} load {os.getloadavg()[0]:.1f} overrides {overrides or '-'}")
    rows = []
    pipeline = {}  # channels -> samples/s, measured once per channel count
    for name in [a.strip() for a in args.archs.split(",") if a.strip()]:
        steps_per_s, channels, params = training_rate(name, sources, args.crop, args.batch, args.steps,
                                                      args.loss, overrides, args.warmup)
        if channels not in pipeline:
            pipeline[channels] = pipeline_rate(sources, args.crop, args.batch, channels,
                                               args.pipeline_batches)
        train_samples = steps_per_s * args.batch
        ratio = pipeline[channels] / train_samples
        rows.append((name, f"{params:,}", str(channels), f"{steps_per_s:.3f}", f"{train_samples:.2f}",
                     f"{pipeline[channels]:.1f}", f"{ratio:.1f}", "yes" if ratio >= TARGET_RATIO else "NO"))
        print(f"  {name}: {steps_per_s:.3f} steps/s, pipeline/training {ratio:.1f}x", flush=True)

    header = ("model", "params", "ch", "train steps/s", "train samples/s", "pipeline samples/s",
              "ratio", f">= {TARGET_RATIO:g}x")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print()
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for row in rows:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))


if __name__ == "__main__":
    main()
