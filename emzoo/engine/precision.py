"""What precision a volume job computes in: float32, or bf16 where the hardware has it.

``precision="float32"`` runs the model as it was built (float32 throughout). ``"bf16"`` runs it
under Keras' ``mixed_bfloat16`` dtype policy: variables stay float32, the convolutions compute in
bfloat16, and every output is cast back to float32 before the engine clips, blends and writes it
(FILM keeps its image pyramids, flows, warping and last conv in float32 under any policy; see
:mod:`emzoo.models.film.model`). ``"auto"`` is bf16 where it is supported, float32 elsewhere.

bf16 pays only where the device computes it natively, so it is refused (one line, before any
work) elsewhere: a CPU without ``avx512_bf16`` / ``amx_bf16`` (x86) or ``bf16`` (Arm) in
``/proc/cpuinfo``, an NVIDIA GPU of compute capability below 8.0, a system where this cannot be
told (no ``/proc/cpuinfo``: set ``EMZOO_FORCE_BF16=1`` to run bf16 anyway), and models that are
not Keras models (the optical-flow baseline computes in NumPy / OpenCV). Whether bf16 is the
default, and what it costs in PSNR, is measured by ``benchmarks/bench_precision.py``
(numbers in ``benchmarks/README.md``).

The bf16 model is a rebuild of the model under the ``mixed_bfloat16`` policy from its
``get_config()``, holding a copy of its weights; it is kept beside the model (a weak-keyed map,
nothing set on the model, dropped with it) and its weights are
copied again before every job, so weights changed in between (fine-tuning, ``--adapt``) are
always the ones that run. On a CPU, bf16 jobs keep the plain TensorFlow graph (oneDNN's bf16
kernels) rather than XLA, whose CPU backend ran them slower
(:func:`~emzoo.engine.policy.resolve_jit_compile`).

Example:
    >>> resolve_precision("float32", model=None)
    'float32'
    >>> fast = with_precision(emzoo.load("default"), "bf16")     # doctest: +SKIP
    >>> fast.compute_dtype                                        # doctest: +SKIP
    'bfloat16'
"""

import os
import sys
import weakref

from emzoo.errors import EmzooError, describe

PRECISIONS = ("float32", "bf16", "auto")

# The Keras dtype policy each resolved precision runs under.
_POLICIES = {"float32": "float32", "bf16": "mixed_bfloat16"}

# /proc/cpuinfo flags of CPUs with native bf16 arithmetic (x86: AVX512-BF16 or AMX; Arm: BF16).
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")

FORCE_VARIABLE = "EMZOO_FORCE_BF16"

# model -> {policy: its rebuild under that policy}, for later jobs; weak keys: nothing is set on
# the user's model and the rebuilds (a second copy of the weights) go when the model does.
_CLONES = weakref.WeakKeyDictionary()


def check_precision(precision):
    """``precision`` checked: one of ``float32``, ``bf16``, ``auto`` (``bfloat16`` means ``bf16``).

    Example:
        >>> check_precision("BF16")
        'bf16'
    """
    value = str(precision).strip().lower() if isinstance(precision, str) else precision
    value = "bf16" if value == "bfloat16" else value
    if value not in PRECISIONS:
        raise EmzooError(describe("Invalid value for argument `precision`.",
                                  "one of float32, bf16, auto", precision=precision))
    return value


def cpu_bf16_support(cpuinfo="/proc/cpuinfo"):
    """``(supported, reason)`` for bf16 on this CPU, from the flags in ``cpuinfo``.

    ``supported`` is ``None`` where the flags cannot be read (not Linux): unknown.

    Example:
        >>> cpu_bf16_support()                           # doctest: +SKIP
        (True, 'CPU with amx_bf16, avx512_bf16')
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return None, (f"cannot tell whether this CPU computes bf16 natively ({cpuinfo} is not "
                      f"readable on {sys.platform})")
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    found = sorted(flag for flag in _CPU_BF16_FLAGS if flag in flags)
    if found:
        return True, "CPU with " + ", ".join(found)
    return False, ("this CPU has none of the bf16 instructions (avx512_bf16, amx_bf16; bf16 on "
                   "Arm): bf16 would be emulated, slower than float32")


def _gpu_capabilities():
    """``[(name, (major, minor) or None)]`` of the GPUs the Keras backend computes on (empty on
    CPU). TPUs count as supported: they compute bf16 natively."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        found = []
        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            found.append((details.get("device_name", gpu.name),
                          details.get("compute_capability")))
        return found
    if backend == "jax":
        import jax

        if jax.default_backend() == "tpu":
            return [("TPU", (99, 0))]
        if jax.default_backend() == "cpu":
            return []
        found = []
        for device in jax.devices():
            text = str(getattr(device, "compute_capability", "") or "")
            major, _, minor = text.partition(".")
            capability = (int(major), int(minor or 0)) if major.isdigit() else None
            found.append((getattr(device, "device_kind", str(device)), capability))
        return found
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return []
        return [(torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)))
                for i in range(torch.cuda.device_count())]
    return []


def computes_on_gpu():
    """Whether the Keras backend computes on a GPU (or TPU) here, rather than the CPU."""
    return bool(_gpu_capabilities())


def bf16_support():
    """``(supported, reason)``: whether the device the model runs on computes bf16 natively.

    On a GPU (what the Keras backend computes on when one is visible): NVIDIA compute capability
    8.0 (Ampere) or newer. On the CPU: the flags of :func:`cpu_bf16_support`; where they cannot be
    read the answer is no, unless the environment variable ``EMZOO_FORCE_BF16=1`` says yes.

    Example:
        >>> bf16_support()                               # doctest: +SKIP
        (True, 'CPU with amx_bf16, avx512_bf16')
    """
    gpus = _gpu_capabilities()
    if gpus:
        for name, capability in gpus:
            if capability is None or tuple(capability) < (8, 0):
                shown = "unknown" if capability is None else "%d.%d" % tuple(capability)
                return _forced(False, f"GPU {name} has compute capability {shown}; bf16 needs "
                                      "8.0 (Ampere) or newer")
        return True, "GPU " + ", ".join(name for name, _ in gpus)
    supported, reason = cpu_bf16_support()
    return _forced(bool(supported), reason)


def _forced(supported, reason):
    if not supported and os.environ.get(FORCE_VARIABLE, "") == "1":
        return True, f"{reason}, but {FORCE_VARIABLE}=1 forces bf16"
    return supported, reason


def can_run_bf16(model):
    """Whether ``model`` can be rebuilt to compute in bf16: a Keras model (an emzoo interpolator)
    with ``get_config`` / ``from_config``. The optical-flow baseline cannot."""
    import keras

    return isinstance(model, keras.Model) and callable(getattr(model, "build_for_weights", None))


def resolve_precision(precision, model):
    """The precision a job with ``model`` runs in: ``"float32"`` or ``"bf16"``.

    ``"bf16"`` is refused with one line where :func:`bf16_support` says no or ``model`` cannot run
    in bf16 (:func:`can_run_bf16`; ``model=None`` skips that check); ``"auto"`` is bf16 where
    both allow it, else float32.

    Example:
        >>> resolve_precision("float32", model=None)
        'float32'
    """
    precision = check_precision(precision)
    if precision == "float32":
        return precision
    if model is not None and not can_run_bf16(model):
        if precision == "auto":
            return "float32"
        raise EmzooError(describe(
            f"The model {type(model).__name__} cannot compute in bf16: only emzoo's Keras "
            "interpolators are rebuilt under the mixed_bfloat16 policy (the optical-flow baseline "
            "computes in float32 NumPy / OpenCV).",
            "precision float32 (or auto) with this model, or an emzoo Keras model",
            precision=precision, model=type(model).__name__))
    supported, reason = bf16_support()
    if supported:
        return "bf16"
    if precision == "auto":
        return "float32"
    raise EmzooError(describe(
        f"bf16 is not supported here: {reason}.",
        f"precision float32 (or auto), a CPU with AVX512-BF16 / AMX or a GPU of compute "
        f"capability >= 8.0, or {FORCE_VARIABLE}=1 where you know the device computes bf16",
        precision=precision))


def with_precision(model, precision):
    """``model`` computing in ``precision`` (``"float32"`` or ``"bf16"``, as resolved).

    A model already under that dtype policy is returned as it is; otherwise a rebuild of it under
    the policy, holding a copy of its current weights (kept on ``model`` for later jobs, and its
    weights copied again each time). Variables are float32 under both policies.

    Example:
        >>> with_precision(model, "bf16").compute_dtype                 # doctest: +SKIP
        'bfloat16'
    """
    import keras

    precision = check_precision(precision)
    if precision == "auto":
        raise EmzooError(describe("with_precision needs a resolved precision.",
                                  "float32 or bf16 (see resolve_precision)", precision=precision))
    if not isinstance(model, keras.Model):  # the flow baseline: float32 only
        if precision == "float32":
            return model
        resolve_precision(precision, model)  # raises the one-line refusal
    policy = _POLICIES[precision]
    if model.dtype_policy.name == policy:
        return model
    from emzoo.engine.caches import model_cache

    clones = model_cache(_CLONES, model)  # beside the model, not on it; dropped with it
    if policy not in clones:
        clones[policy] = _rebuild(model, policy)
    clone = clones[policy]
    clone.set_weights(model.get_weights())
    return clone


def copy_in_precision(model, precision):
    """A new, independent ``model`` (its class, config and a copy of its current weights) that
    computes in ``precision`` (``"float32"`` or ``"bf16"``, as resolved): a copy to train, where
    :func:`with_precision` returns ``model`` itself or a cached clone to run.

    Example:
        >>> copy = copy_in_precision(model, "bf16")                    # doctest: +SKIP
        >>> copy is model, copy.compute_dtype                          # doctest: +SKIP
        (False, 'bfloat16')
    """
    if precision not in _POLICIES:
        raise EmzooError(describe("copy_in_precision needs a resolved precision.",
                                  "float32 or bf16 (see resolve_precision)", precision=precision))
    copy = _rebuild(model, _POLICIES[precision])
    copy.set_weights(model.get_weights())
    return copy


def _rebuild(model, policy):
    """``model``'s class built from its config under the dtype ``policy`` (variables created)."""
    import keras

    if not can_run_bf16(model):
        raise EmzooError(describe(
            f"The model {type(model).__name__} cannot be rebuilt under the dtype policy {policy}: only "
            "emzoo's Keras interpolators are rebuilt from their config.",
            "an emzoo interpolator (with get_config and build_for_weights)",
            model=type(model).__name__))
    model.build_for_weights()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        clone = type(model).from_config(model.get_config())
        clone.build_for_weights()
    finally:
        keras.config.set_dtype_policy(previous)
    entry = getattr(model, "zoo_entry", None)
    if entry is not None:
        clone.zoo_entry = entry
    return clone
