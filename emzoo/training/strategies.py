"""Distribution of a training run: ``tf.distribute`` strategies, the chief, mixed precision.

Strategies: ``default`` (one device), ``mirrored`` (all GPUs, else all logical CPUs:
``logical_cpus=2`` splits the CPU in two for tests), ``multi_worker``
(``MultiWorkerMirroredStrategy`` configured by ``TF_CONFIG``; only the chief writes the run
folder, the other workers write their checkpoints to a scratch folder they delete). The batch
size is always the *global* batch: a distributed run sees the same batches as a single-device run.

Example:
    >>> check_strategy("mirrored")
    'mirrored'
"""

import json
import os
import sys

from emzoo.errors import EmzooError, describe

STRATEGIES = ("default", "mirrored", "multi_worker")
# What a training run computes in, and the Keras dtype policy of each (weights stay float32).
TRAINING_POLICIES = {"float32": "float32", "bf16": "mixed_bfloat16", "float16": "mixed_float16"}


def check_strategy(name):
    """``name`` if it is one of :data:`STRATEGIES`; raises :class:`EmzooError` otherwise."""
    if name not in STRATEGIES:
        raise EmzooError(describe("Invalid value for argument `strategy`.",
                                  f"one of {', '.join(STRATEGIES)}", strategy=name))
    return name


def _tf_config():
    return json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")


def is_chief():
    """Whether this process is the chief of a ``TF_CONFIG`` cluster (or runs alone).

    The chief is the ``chief`` task, or worker 0 of a cluster that has no ``chief`` task.
    """
    config = _tf_config()
    task = config.get("task", {})
    return task.get("type", "chief") == "chief" or (
        task.get("type") == "worker" and int(task.get("index", 0)) == 0
        and "chief" not in config.get("cluster", {}))


def scratch_folder(output):
    """Where a non-chief worker writes the checkpoints it must take part in (then deletes)."""
    task = _tf_config().get("task", {})
    return output / f".worker-{task.get('type')}-{task.get('index')}"


def make_strategy(name, logical_cpus=None):
    """The ``tf.distribute`` strategy called ``name`` (see the module docstring)."""
    import tensorflow as tf

    check_strategy(name)
    if logical_cpus:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(
                cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(int(logical_cpus))])
        except RuntimeError as error:  # TF already initialised: keep what exists
            print(f"emzoo: note: cannot split the CPU into {logical_cpus} devices ({error}).",
                  file=sys.stderr)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [
            d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if "TF_CONFIG" not in os.environ:
        raise EmzooError(describe("The multi_worker strategy needs a cluster description.",
                                  "the TF_CONFIG environment variable (cluster and task)",
                                  TF_CONFIG=None))
    return tf.distribute.MultiWorkerMirroredStrategy()


def set_precision_policy(precision):
    """Sets and returns the global Keras dtype policy of a training run's ``precision``
    (``"float32"``, ``"bf16"`` or ``"float16"``, as :class:`TrainConfig` resolved it)."""
    import keras

    policy = TRAINING_POLICIES[precision]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def prebuild_for_multi_worker(net, dataset, strategy):
    """Builds ``net``'s compiled metrics from one local batch of ``dataset`` and makes Keras'
    ``fit`` / ``evaluate`` reduce their logs in a way ``MultiWorkerMirroredStrategy`` supports.

    Both work around Keras internals; see :mod:`emzoo.training.keras_patches`.
    """
    from emzoo.training import keras_patches

    inputs, target = next(iter(dataset.take(1)))
    keras_patches.build_without_distributed_reduce(net, (inputs, target, None), strategy)
    keras_patches.patch_reduce_per_replica()
