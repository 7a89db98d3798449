"""Memory, FLOPs and speed of SSAN's two-level attention-aware layer vs one-level ISA (issue 4, item 6).

Each configuration runs in its own subprocess (fresh allocator, so peaks do not mix). Memory is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after one forward minus its value just before
(after imports, building the layer and allocating the input), and also minus the current RSS at
that point (``/proc/self/statm``), which is the honest "extra memory of the forward" when the
import peak was higher than the resting RSS. Times are medians of ``--reps`` forwards after a
warm-up, wall clock and process CPU time (CPU time is steadier on a shared machine).

FLOPs are counted analytically as multiply-accumulates (MACs, the convention of SSAN's Table 2,
which used thop/ptflops-style counters) of one SAGAN unit over N positions in groups of T tokens:

    projections  N * C * (C/k + C/k + C)      (query, key, value 1x1 convs)
    scores       N * T * C/k                  (q . k^T within each group)
    aggregation  N * T * C                    (A . v)

The two-level form has three units (T = (H/32)(W/32), 16, 64 at the authors' partitions 8, 4);
one-level ISA has two (T = (H/P)(W/P), P^2); dense SAGAN one (T = HW). At 1 x 64 x 512 x 512,
k = 8: AAL = 3 * 1.342 G + 262144 * 72 * (256 + 16 + 64) = 10.37 G (paper 10.42 G; the rest is
softmax, gamma * z + x and biases); ISA P = 8: 81.2 G (paper 81.24 G); dense: 4.95 T.

Usage (short; CPU):
    nice -n 5 python benchmarks/bench_attention.py              # attention table + SSAN timings
    nice -n 5 python benchmarks/bench_attention.py --skip-model # attention only
    ... --isa-partitions 16 8   (P = 8 needs ~9 GB of RAM at 512 x 512: skipped when not free)

Prints one row per configuration and the ratios: AAL memory (target <= 2.3 GB), AAL time / ISA
time (target < 1; paper 0.84), AAL time 1024 / 512 (target <= 6.4 = 4^(4/3)).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

GB = 1024 ** 3


def sagan_macs(positions, channels, tokens, reduction=8):
    key = channels // reduction
    return positions * channels * (2 * key + channels) + positions * tokens * (key + channels)


def attention_macs(kind, size, channels=64, reduction=8, partition=8, outer=8, inner=4):
    n = size * size
    if kind == "aal":
        from_groups = [(size // (outer * inner)) ** 2, inner ** 2, outer ** 2]
    elif kind == "isa":
        from_groups = [(size // partition) ** 2, partition ** 2]
    else:
        from_groups = [n]
    return sum(sagan_macs(n, channels, t, reduction) for t in from_groups)


def _rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def worker(spec):
    """Runs one configuration and prints a JSON line (in the subprocess)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import keras

    from emzoo.layers.attention import HierarchicalSparseAttention, InterlacedSparseAttention

    size, channels = spec["size"], spec["channels"]
    if spec["kind"] == "aal":
        layer = HierarchicalSparseAttention(spec["outer"], spec["inner"])
    else:
        layer = InterlacedSparseAttention(spec["partition"])
    shape = (1, size, size, channels)
    layer.build(shape)
    # Non-zero gammas: the attention must really be computed (gamma = 0 still computes it, but
    # this keeps the output honest).
    layer.set_weights([w + 0.1 if w.ndim == 0 else w for w in layer.get_weights()])
    x = keras.ops.convert_to_tensor(np.random.default_rng(0).random(shape, dtype=np.float32))
    base_max, base_now = _maxrss(), _rss_now()
    start = time.perf_counter()
    y = layer(x)
    keras.ops.convert_to_numpy(y[0, 0, 0])
    first = time.perf_counter() - start
    peak = _maxrss()
    del y
    walls, cpus = [], []
    for _ in range(spec["reps"]):
        w0, c0 = time.perf_counter(), time.process_time()
        y = layer(x)
        keras.ops.convert_to_numpy(y[0, 0, 0])
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        del y
    print(json.dumps({"first_s": first, "wall_s": statistics.median(walls) if walls else first,
                      "cpu_s": statistics.median(cpus) if cpus else None,
                      "mem_maxrss_gb": (peak - base_max) / GB, "mem_over_rss_gb": (peak - base_now) / GB}))


def run_worker(spec):
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                            capture_output=True, text=True)
    lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
    if result.returncode or not lines:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(lines[-1])


def available_gb():
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 1024 ** 2


def model_timings(train_batch, train_size, forward_size):
    """SSAN (default entry) forward time per frame and one training step (mae loss)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import keras

    import emzoo

    model = emzoo.load("ssan", weights=None, compile=False)
    rng = np.random.default_rng(0)

    def batch(b, s):
        x0, x1 = (rng.random((b, s, s, 1), dtype=np.float32) for _ in range(2))
        return {"x0": x0, "x1": x1, "time": np.full((b, 1), 0.5, np.float32)}, 0.5 * (x0 + x1)

    inputs, _ = batch(1, forward_size)
    forward = keras.ops.convert_to_numpy  # force the result
    start = time.perf_counter()
    forward(model(inputs)["image"])
    first = time.perf_counter() - start
    start = time.perf_counter()
    forward(model(inputs)["image"])
    per_frame = time.perf_counter() - start
    inputs, y = batch(train_batch, train_size)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mae", metrics=[], jit_compile=False)
    start = time.perf_counter()
    model.train_on_batch(inputs, y)
    first_step = time.perf_counter() - start
    start = time.perf_counter()
    model.train_on_batch(inputs, y)
    step = time.perf_counter() - start
    return dict(params=model.count_params(), forward_first_s=first, forward_s=per_frame,
                train_first_s=first_step, train_step_s=step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--isa-partitions", type=int, nargs="+", default=[16, 8])
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-1024", action="store_true")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=256)
    parser.add_argument("--forward-size", type=int, default=512)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))

    from emzoo.layers.attention import balanced_partitions

    c = args.channels
    configs = [("AAL 8x4 @512", dict(kind="aal", size=512, outer=8, inner=4))]
    if not args.skip_1024:
        configs.append(("AAL 8x4 @1024", dict(kind="aal", size=1024, outer=8, inner=4)))
        for size in (512, 1024):
            outer, inner = balanced_partitions(size, size)
            configs.append((f"AAL bal {outer}x{inner} @{size}",
                            dict(kind="aal", size=size, outer=outer, inner=inner)))
    for p in args.isa_partitions:
        configs.append((f"ISA P={p} @512", dict(kind="isa", size=512, partition=p)))
    results = {}
    print(f"{'configuration':<22}{'GMACs':>9}{'mem GB (maxrss)':>17}{'mem GB (>rss)':>15}"
          f"{'wall s':>9}{'cpu s':>9}")
    for label, spec in configs:
        spec = dict(spec, channels=c, reps=args.reps)
        macs = attention_macs(spec["kind"], spec["size"], c, partition=spec.get("partition", 8),
                              outer=spec.get("outer", 8), inner=spec.get("inner", 4)) / 1e9
        if spec["kind"] == "isa":
            need = 2.5 * spec["size"] ** 4 / spec["partition"] ** 2 * 4 / GB
            if need > available_gb() - 2:
                print(f"{label:<22}{macs:>9.2f}   skipped: needs ~{need:.1f} GB, "
                      f"{available_gb():.1f} GB available")
                continue
        r = run_worker(spec)
        results[label] = dict(r, gmacs=macs)
        if "error" in r:
            print(f"{label:<22}{macs:>9.2f}   error: {r['error']}")
            continue
        print(f"{label:<22}{macs:>9.2f}{r['mem_maxrss_gb']:>17.3f}{r['mem_over_rss_gb']:>15.3f}"
              f"{r['wall_s']:>9.3f}{(r['cpu_s'] or 0):>9.3f}", flush=True)

    def ratio(a, b, key):
        if a in results and b in results and key in results[a] and key in results[b]:
            return results[a][key] / results[b][key]
        return float("nan")

    aal = results.get("AAL 8x4 @512", {})
    print(f"\nAAL forward extra memory @1x{c}x512x512: {aal.get('mem_maxrss_gb', float('nan')):.3f} GB "
          f"(maxrss), {aal.get('mem_over_rss_gb', float('nan')):.3f} GB (over resting RSS); target <= 2.3, paper 2.331")
    print(f"AAL analytic MACs @512: {attention_macs('aal', 512, c) / 1e9:.2f} G (paper 10.42 GFLOPs); "
          f"ISA P=8: {attention_macs('isa', 512, c, partition=8) / 1e9:.2f} G (paper 81.24); "
          f"dense: {attention_macs('dense', 512, c) / 1e12:.2f} T")
    for p in args.isa_partitions:
        for key in ("wall_s", "cpu_s"):
            print(f"time AAL / ISA P={p} @512 ({key}): {ratio('AAL 8x4 @512', f'ISA P={p} @512', key):.3f} "
                  "(target < 1; paper 0.84 vs P=8)")
    if not args.skip_1024:
        for key in ("wall_s", "cpu_s"):
            print(f"time 1024/512, authors' fixed 8x4 ({key}): "
                  f"{ratio('AAL 8x4 @1024', 'AAL 8x4 @512', key):.2f} (target <= 6.4)")
            bal = [l for l in results if l.startswith("AAL bal")]
            if len(bal) == 2:
                print(f"time 1024/512, balanced partitions {bal[0]} -> {bal[1]} ({key}): "
                      f"{ratio(bal[1], bal[0], key):.2f} (target <= 6.4)")
        (o5, i5), (o10, i10) = balanced_partitions(512, 512), balanced_partitions(1024, 1024)
        print(f"analytic MACs 1024/512: fixed 8x4 {attention_macs('aal', 1024, c) / attention_macs('aal', 512, c):.2f}, "
              f"balanced {attention_macs('aal', 1024, c, outer=o10, inner=i10) / attention_macs('aal', 512, c, outer=o5, inner=i5):.2f}")
    if not args.skip_model:
        m = model_timings(args.train_batch, args.train_size, args.forward_size)
        print(f"\nSSAN default ({m['params']:,} params): forward per {args.forward_size}x{args.forward_size} "
              f"frame {m['forward_s']:.2f} s (first call {m['forward_first_s']:.2f} s); training step "
              f"batch {args.train_batch} at {args.train_size}x{args.train_size}: {m['train_step_s']:.2f} s "
              f"(first, with tracing, {m['train_first_s']:.2f} s)")
        scale_forward = (512 / args.forward_size) ** 2
        scale_train = (8 / args.train_batch) * (256 / args.train_size) ** 2
        if scale_forward != 1 or scale_train != 1:
            print(f"  extrapolated linearly in pixels (the RDN convs dominate): forward per 512x512 "
                  f"~{m['forward_s'] * scale_forward:.1f} s; training step batch 8 at 256x256 "
                  f"~{m['train_step_s'] * scale_train:.1f} s")


if __name__ == "__main__":
    main()
