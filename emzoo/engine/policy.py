"""How the engine runs the model: the default batch size, the XLA policy, compiled model calls.

Pairs (and tiles) go through the model ``batch_size`` at a time (default: 4 with an accelerator,
1 on CPU, where batching costs time). Model calls are compiled once per model and reused by later
volumes; on the TensorFlow backend they are XLA-compiled when the job is long enough to pay for
the compile (``jit_compile="auto"``). The measured speeds behind these defaults are in
``benchmarks/README.md``.
"""

from emzoo.errors import EmzooError, describe

# XLA compiles FILM in seconds per slice size; it pays off from about this many model calls.
XLA_MIN_CALLS = 200


def default_batch_size():
    """4 when an accelerator (GPU/TPU) is visible to the Keras backend, else 1.

    On CPU, batching pairs made FILM slower per slice (benchmarks/bench_upscale_speed.py), while
    on a GPU batch 1 leaves the device mostly idle.
    """
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return 4 if tf.config.list_logical_devices("GPU") else 1
        if backend == "jax":
            import jax

            return 4 if jax.default_backend() != "cpu" else 1
        if backend == "torch":
            import torch

            return 4 if torch.cuda.is_available() else 1
    except Exception:  # noqa: BLE001 - device discovery failing just means "no accelerator"
        pass
    return 1


def resolve_jit_compile(jit_compile, reuse_features, calls=None):
    """Whether the engine XLA-compiles its model calls.

    ``"auto"`` means yes on the TensorFlow backend for models whose features are reused (FILM),
    when the job makes at least :data:`XLA_MIN_CALLS` model calls (or their number is unknown):
    XLA runs FILM faster than the plain graph (benchmarks/bench_film.py,
    benchmarks/bench_upscale_speed.py), but its one-off compile per slice size makes short jobs
    such as the bundled sample slower end to end. Other architectures (deformable convolutions,
    sparse attention) keep the plain graph. Other backends compile their own way (JAX jit) and
    ignore this flag.

    Example:
        >>> resolve_jit_compile(False, reuse_features=True)
        False
        >>> resolve_jit_compile("auto", reuse_features=False)
        False
    """
    if isinstance(jit_compile, str):
        if jit_compile.lower() != "auto":
            raise EmzooError(describe("Invalid value for argument `jit_compile`.",
                                      'True, False or "auto"', jit_compile=jit_compile))
        import keras

        return (keras.backend.backend() == "tensorflow" and bool(reuse_features)
                and (calls is None or calls >= XLA_MIN_CALLS))
    return bool(jit_compile)


def compiled_function(model, what, jit_compile):
    """The model's ``what`` ("call", "extract" or "from_features") as a compiled function.

    On the TensorFlow backend this is a ``tf.function`` (XLA when ``jit_compile``), cached per
    model so that later volumes reuse its traces; on other backends the plain eager call.
    """
    import keras

    from emzoo.models.base import image_of

    cache = getattr(model, "_emzoo_compiled", None)
    if cache is None:  # plain attribute, bypassing Keras' tracking of layer attributes
        cache = {}
        object.__setattr__(model, "_emzoo_compiled", cache)
    key = (what, bool(jit_compile))
    if key not in cache:
        if what == "call":
            def function(x0, x1, t):
                return image_of(model({"x0": x0, "x1": x1, "time": t}, training=False))
        elif what == "extract":
            def function(x):
                return model.extract(x)
        else:
            def function(f0, f1, t):
                return image_of(model.interpolate_from_features(f0, f1, t))
        # Keras models are traced; other interpolators (the NumPy/OpenCV flow baseline) run as they are.
        if keras.backend.backend() == "tensorflow" and isinstance(model, keras.Model):
            import tensorflow as tf

            function = tf.function(function, reduce_retracing=True, jit_compile=bool(jit_compile))
        cache[key] = function
    return cache[key]
