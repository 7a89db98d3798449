"""How the engine runs the model: the default batch size, the XLA policy, compiled model calls,
TensorFlow's thread pools.

Pairs (and tiles) go through the model ``batch_size`` at a time (default: 4 with an accelerator,
1 on CPU, where batching costs time). Model calls are compiled once per model and reused by later
volumes; on the TensorFlow backend they are XLA-compiled when the job is long enough to pay for
the compile (``jit_compile="auto"``). The measured speeds behind these defaults are in
``benchmarks/README.md``.
"""

import weakref

from emzoo.engine.caches import model_cache
from emzoo.errors import EmzooError, check_integer, describe

# model -> {(what, jit_compile): compiled function}: held beside the model, never on it, and
# dropped with it.
_COMPILED = weakref.WeakKeyDictionary()

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


def resolve_jit_compile(jit_compile, reuse_features, calls=None, precision="float32"):
    """Whether the engine XLA-compiles its model calls.

    ``"auto"`` means yes on the TensorFlow backend for models whose features are reused (FILM),
    when the job makes at least :data:`XLA_MIN_CALLS` model calls (or their number is unknown):
    XLA runs FILM faster than the plain graph (benchmarks/bench_film.py,
    benchmarks/bench_upscale_speed.py), but its one-off compile per slice size makes short jobs
    such as the bundled sample slower end to end. Other architectures (deformable convolutions,
    sparse attention) keep the plain graph. Other backends compile their own way (JAX jit) and
    ignore this flag. In bf16 (``precision``, resolved) on a CPU, ``"auto"`` keeps the plain
    graph: XLA's CPU backend ran FILM's bf16 convs slower than the plain graph's oneDNN kernels,
    and slower than float32 (benchmarks/bench_precision.py).

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

        if precision == "bf16":
            from emzoo.engine.precision import computes_on_gpu

            if not computes_on_gpu():
                return False
        return (keras.backend.backend() == "tensorflow" and bool(reuse_features)
                and (calls is None or calls >= XLA_MIN_CALLS))
    return bool(jit_compile)


def compiled_function(model, what, jit_compile):
    """The model's ``what`` ("call", "extract" or "from_features") as a compiled function.

    On the TensorFlow backend this is a ``tf.function`` (XLA when ``jit_compile``), cached per
    model (beside it, in a weak-keyed map: nothing is set on the model, and the cache goes with
    it) so that later volumes reuse its traces; on other backends the plain eager call.
    """
    import keras

    from emzoo.models.base import image_of

    cache = model_cache(_COMPILED, model)  # nothing set on the user's model
    key = (what, bool(jit_compile))
    if key not in cache:
        model_ref = weakref.ref(model)  # the cache must not keep the model alive

        if what == "call":
            def function(x0, x1, t):
                return image_of(model_ref()({"x0": x0, "x1": x1, "time": t}, training=False))
        elif what == "extract":
            def function(x):
                return model_ref().extract(x)
        else:
            def function(f0, f1, t):
                return image_of(model_ref().interpolate_from_features(f0, f1, t))
        # Keras models are traced; other interpolators (the NumPy/OpenCV flow baseline) run as they are.
        if keras.backend.backend() == "tensorflow" and isinstance(model, keras.Model):
            import tensorflow as tf

            function = tf.function(function, reduce_retracing=True, jit_compile=bool(jit_compile))
        cache[key] = function
    return cache[key]


def configure_threads(intra=None, inter=None):
    """Sets TensorFlow's thread pools and returns the setting in force.

    ``intra`` is the number of threads one op (a convolution) may use, ``inter`` the number of
    ops run at once; 0 is TensorFlow's default (one per core), ``None`` leaves a pool as it is.
    N processes sharing N cores each want ``intra=1, inter=1``, or they oversubscribe the cores.
    TensorFlow fixes its pools when it runs its first op: asking for a different setting after
    that raises an :class:`EmzooError` (asking for the one in force is fine).

    Returns:
        ``{"intra": int, "inter": int}``: the setting now in force (0: TensorFlow's default).

    Example:
        >>> configure_threads(intra=1, inter=1)                  # doctest: +SKIP
        {'intra': 1, 'inter': 1}
        >>> configure_threads()["intra"]                         # doctest: +SKIP
        1
    """
    import keras

    intra = None if intra is None else check_integer("intra", intra, minimum=0)
    inter = None if inter is None else check_integer("inter", inter, minimum=0)
    if keras.backend.backend() != "tensorflow":
        if intra is not None or inter is not None:
            raise EmzooError(describe(
                "configure_threads sets TensorFlow's thread pools, and Keras runs on another "
                "backend.", "KERAS_BACKEND=tensorflow, or no thread setting",
                backend=keras.backend.backend()))
        return {"intra": None, "inter": None}
    import tensorflow as tf

    threading = tf.config.threading
    current = {"intra": threading.get_intra_op_parallelism_threads(),
               "inter": threading.get_inter_op_parallelism_threads()}
    setters = {"intra": threading.set_intra_op_parallelism_threads,
               "inter": threading.set_inter_op_parallelism_threads}
    for name, wanted in (("intra", intra), ("inter", inter)):
        if wanted is None or wanted == current[name]:
            continue
        try:
            setters[name](wanted)
        except RuntimeError:
            raise EmzooError(describe(
                f"TensorFlow already runs with {current[name]} {name}-op threads (0: one per "
                "core); its thread pools are fixed once it has run an op.",
                "configure_threads called before the first model call in this process",
                **{name: wanted})) from None
        current[name] = wanted
    return current
