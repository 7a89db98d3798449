"""DeformableConv2D cost relative to Conv2D at the same shape, measured side by side.

Prints forward and forward+backward time ratios (DCN / Conv2D; medians of interleaved runs) at
batch 1, 64 -> 64 channels, 3x3, 256x256, 8 deformable groups, and the peak memory of one
training step (forward, backward, SGD update) at batch 8, each measured in a fresh subprocess
(peak RSS, VmHWM, on CPU; the TensorFlow allocator's peak on a GPU). Target: ratio <= 3.

Never run in CI. Example:
    nice -n 5 python benchmarks/bench_deformable.py --repeats 7
    nice -n 5 python benchmarks/bench_deformable.py --xla        # both layers XLA-compiled
    KERAS_BACKEND=jax python benchmarks/bench_deformable.py --memory-batch 2
    python benchmarks/bench_deformable.py --breakdown --memory-batch 0   # where the time goes (TF)
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_step(layer_kind, batch, size, channels, groups, train, xla=False):
    """Returns (compiled step function, its arguments) for the active Keras backend."""
    import keras
    import numpy as np

    from emzoo.layers.deformable import DeformableConv2D

    rng = np.random.default_rng(0)
    x = rng.random((batch, size, size, channels), dtype=np.float32)
    offset = (rng.standard_normal((batch, size, size, 2 * groups * 9)) * 2).astype(np.float32)
    mask = rng.random((batch, size, size, groups * 9), dtype=np.float32)
    if layer_kind == "conv":
        layer = keras.layers.Conv2D(channels, 3, padding="same")
        layer.build(x.shape)

        def forward(x_, offset_, mask_):
            return layer(x_)
    else:
        layer = DeformableConv2D(channels, 3, deformable_groups=groups)
        layer.build(x.shape, offset.shape)

        def forward(x_, offset_, mask_):
            return layer(x_, offset_, mask_)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x, offset, mask = (tf.constant(a) for a in (x, offset, mask))

        @tf.function(jit_compile=xla)
        def step(x_, offset_, mask_):
            if not train:
                return tf.reduce_sum(forward(x_, offset_, mask_))
            with tf.GradientTape() as tape:
                tape.watch([x_, offset_, mask_])
                loss = tf.reduce_sum(tf.square(forward(x_, offset_, mask_)))
            grads = tape.gradient(loss, [x_, offset_, mask_] + layer.trainable_variables)
            for variable, grad in zip(layer.trainable_variables, grads[3:]):
                variable.assign_sub(1e-6 * grad)
            return loss + sum(tf.reduce_sum(g) for g in grads[:3] if g is not None)

        return (lambda: float(step(x, offset, mask))), None
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        variables = [v.value for v in layer.trainable_variables]

        def loss_fn(values, x_, offset_, mask_):
            out, _ = layer.stateless_call(values, [], x_, offset_, mask_) if layer_kind != "conv" else \
                layer.stateless_call(values, [], x_)
            return jnp.sum(jnp.square(out))

        if train:
            @jax.jit
            def step(values, x_, offset_, mask_):
                loss, grads = jax.value_and_grad(loss_fn, argnums=(0, 1, 2, 3))(values, x_, offset_, mask_)
                return loss + sum(jnp.sum(g) for g in grads[1:]), [v - 1e-6 * g for v, g in zip(values, grads[0])]

            def run():
                loss, _ = step(variables, x, offset, mask)
                return float(loss)
        else:
            step = jax.jit(lambda values, x_, o_, m_: jnp.sum(
                    layer.stateless_call(values, [], x_, o_, m_)[0] if layer_kind != "conv"
                    else layer.stateless_call(values, [], x_)[0]))

            def run():
                return float(step(variables, x, offset, mask))
        return run, None
    raise SystemExit(f"unsupported backend {backend}")


def breakdown(args):
    """TensorFlow: median times of the forward pass's parts next to Conv2D, interleaved.

    The parts, at the benchmark's shape with its random offsets (std 2 pixels): the one gather of
    the 2x2 neighbourhoods of every tap and group, the bilinear/mask weighting of the gathered
    corners, the final matmul; and, as a floor for any sampling built from stock TensorFlow ops,
    ``tf.image.crop_and_resize`` reading the same bilinear samples (one 1x1 box per sample, the
    weighting fused into its kernel). If the sampling alone costs more than 3 convolutions, no
    arrangement of these ops reaches the ratio 3; a fused custom kernel would be needed.
    """
    import numpy as np
    import tensorflow as tf

    size, channels, groups = args.size, args.channels, args.groups
    group_channels, taps = channels // groups, 9
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((1, size, size, channels), dtype=np.float32))
    kernel = tf.constant(rng.standard_normal((3, 3, channels, channels)).astype(np.float32) * 0.05)
    offset = (rng.standard_normal((size, size, groups, taps, 2)) * 2).astype(np.float32)
    tap_y = np.repeat([-1, 0, 1], 3)[None, None, None, :]
    tap_x = np.tile([-1, 0, 1], 3)[None, None, None, :]
    y = np.arange(size)[:, None, None, None] + tap_y + offset[..., 0]
    xs = np.arange(size)[None, :, None, None] + tap_x + offset[..., 1]
    rows = np.clip(np.floor(y).astype(np.int32) + 1, 0, size)
    cols = np.clip(np.floor(xs).astype(np.int32) + 1, 0, size)
    index = tf.constant(((rows * (size + 2) + cols) * groups
                         + np.arange(groups)[:, None]).reshape(-1).astype(np.int32))
    quads = tf.constant(rng.random(((size + 3) * (size + 3) * groups, 4 * group_channels),
                                   dtype=np.float32))
    samples = int(index.shape[0])
    corners = tf.constant(rng.random((samples, 4, group_channels), dtype=np.float32))
    weights = tf.constant(rng.random((samples, 4), dtype=np.float32))
    columns = tf.constant(rng.random((size * size, taps * channels), dtype=np.float32))
    matrix = tf.reshape(kernel, (taps * channels, channels))
    images = tf.constant(rng.random((groups, size + 2, size + 2, group_channels), dtype=np.float32))
    boxes_y = ((y + 1) / (size + 1)).reshape(-1)
    boxes_x = ((xs + 1) / (size + 1)).reshape(-1)
    boxes = tf.constant(np.stack([boxes_y, boxes_x, boxes_y, boxes_x], 1).astype(np.float32))
    box_index = tf.constant(np.broadcast_to(np.arange(groups)[:, None], (size, size, groups, taps))
                            .reshape(-1).astype(np.int32))
    parts = {
        "conv2d": lambda: tf.nn.conv2d(x, kernel, 1, "SAME"),
        "dcn: gather of the corners": lambda: tf.gather(quads, index),
        "dcn: bilinear x mask weighting": lambda: tf.einsum("nqc,nq->nc", corners, weights),
        "dcn: matmul": lambda: tf.matmul(columns, matrix),
        "floor: crop_and_resize sampling":
            lambda: tf.image.crop_and_resize(images, boxes, box_index, (1, 1)),
    }
    parts = {name: tf.function(part) for name, part in parts.items()}
    for function in parts.values():
        function()
    times = {name: [] for name in parts}
    for _ in range(max(args.repeats, 1)):
        for name, function in parts.items():
            start = time.perf_counter()
            np.asarray(function())
            times[name].append(time.perf_counter() - start)
    conv = statistics.median(times["conv2d"])
    print(f"breakdown ({samples:,} bilinear samples of {group_channels} channels):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:34s} {median * 1e3:8.1f} ms  = {median / conv:5.2f} x conv2d")


def time_ratios(args):
    runs = {(kind, train): make_step(kind, 1, args.size, args.channels, args.groups, train,
                                     args.xla)[0]
            for kind in ("conv", "dcn") for train in (False, True)}
    for run in runs.values():  # compile / warm up
        run()
        run()
    times = {key: [] for key in runs}
    for _ in range(args.repeats):  # interleaved so that machine load hits both alike
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    medians = {key: statistics.median(values) for key, values in times.items()}
    return medians


def peak_rss_kib():
    """Peak resident memory of this process in KiB (VmHWM; unlike ru_maxrss it is reset by exec,
    so a child does not inherit its parent's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def measure_memory(kind, args):
    """Peak memory (MiB) of one training step in a fresh subprocess."""
    code = (
        "import sys, json, resource, time; sys.path.insert(0, %r)\n"
        "import bench_deformable as b\n"
        "run, _ = b.make_step(%r, %d, %d, %d, %d, True, %r)\n"
        "base = b.peak_rss_kib()\n"
        "run()\n"
        "peak = b.peak_rss_kib()\n"
        "gpu = None\n"
        "import keras\n"
        "if keras.backend.backend() == 'tensorflow':\n"
        "    import tensorflow as tf\n"
        "    if tf.config.list_physical_devices('GPU'):\n"
        "        gpu = tf.config.experimental.get_memory_info('GPU:0')['peak'] / 2**20\n"
        "print(json.dumps({'rss_peak_mib': peak / 1024, 'rss_before_step_mib': base / 1024, 'gpu_peak_mib': gpu}))\n"
    ) % (os.path.dirname(os.path.abspath(__file__)), kind, args.memory_batch, args.size, args.channels,
       args.groups, args.xla)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--xla", action="store_true",
                        help="TensorFlow: XLA-compile both steps (what Keras' fit does by default)")
    parser.add_argument("--memory-batch", type=int, default=8, help="batch of the memory measurement; 0 skips it")
    parser.add_argument("--breakdown", action="store_true",
                        help="TensorFlow: also time the forward's parts and a stock-op sampling floor")
    args = parser.parse_args()

    import keras

    print(f"backend={keras.backend.backend()} shape=(1, {args.size}, {args.size}, {args.channels}) "
          f"3x3 {args.channels}->{args.channels} deformable_groups={args.groups} repeats={args.repeats}"
          f"{' XLA' if args.xla else ''}")
    if args.repeats == 0:
        medians = {}
    else:
        medians = time_ratios(args)
    for train, label in ((False, "forward"), (True, "forward+backward")) if medians else ():
        conv, dcn = medians[("conv", train)], medians[("dcn", train)]
        print(f"{label:17s} conv2d {conv * 1e3:8.1f} ms  deformable {dcn * 1e3:8.1f} ms  ratio {dcn / conv:5.2f}")
    if args.breakdown:
        breakdown(args)
    if args.memory_batch:
        for kind in ("conv", "dcn"):
            memory = measure_memory(kind, args)
            gpu = "" if memory["gpu_peak_mib"] is None else f"  gpu peak {memory['gpu_peak_mib']:.0f} MiB"
            print(f"train step batch {args.memory_batch} {kind:4s}: process peak RSS {memory['rss_peak_mib']:.0f} MiB "
                  f"(before the step {memory['rss_before_step_mib']:.0f} MiB){gpu}")


if __name__ == "__main__":
    main()
