"""Triplet pipeline throughput: samples/s at 256 x 256 crops, batch 8, from the two shared stacks.

Prints samples/s of the full tf.data pipeline (sampling, crops, joint augmentation, prefetch) and of
the NumPy sampler alone. Divide by a model's training samples/s (steps/s x batch) for the ratio the
issue asks for (target >= 5x).

Example:
    nice -n 5 python benchmarks/bench_pipeline.py --batches 100
"""

import argparse
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOURCES = [DATA / "isbi2012_sstem" / "volume.tif", DATA / "flyem_medulla_fibsem_10nm" / "volume.tif"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--rotate", type=float, default=0.0, help="also benchmark small rotations (degrees)")
    args = parser.parse_args()

    from emzoo.data.triplets import TripletSampler, triplet_dataset

    sources = [str(s) for s in SOURCES]
    sampler = TripletSampler(sources, gaps=(1, 2, 4), crop=args.crop)
    start = time.perf_counter()
    for index in range(args.batches):
        sampler.sample_batch(index, args.batch_size, augment=True)
    numpy_rate = args.batches * args.batch_size / (time.perf_counter() - start)

    dataset = triplet_dataset(sources, gaps=(1, 2, 4), crop=args.crop, batch_size=args.batch_size,
                              channels=args.channels, rotate_degrees=args.rotate)
    iterator = iter(dataset)
    for _ in range(5):  # warm-up: tracing and the first prefetches
        next(iterator)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)
    pipeline_rate = args.batches * args.batch_size / (time.perf_counter() - start)
    del iterator  # release tf.data threads before interpreter shutdown

    print(f"crop {args.crop} batch {args.batch_size} channels {args.channels} rotate {args.rotate} "
          f"cpus {os.cpu_count()} load {os.getloadavg()[0]:.1f}")
    print(f"numpy sampler (1 thread): {numpy_rate:8.1f} samples/s")
    print(f"tf.data pipeline:         {pipeline_rate:8.1f} samples/s")


if __name__ == "__main__":
    main()
