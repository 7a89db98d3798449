"""Every use of private Keras internals in emzoo, in one place (written against Keras 3.15).

``MultiWorkerMirroredStrategy`` training with ``model.fit`` / ``evaluate`` fails in Keras 3.15 in
two places, both in ``keras.src.backend.tensorflow.trainer``:

1. ``TensorFlowTrainer._maybe_symbolic_build`` builds the compiled metrics by
   ``strategy.reduce("MEAN", batch, axis=None)``-ing a distributed sample batch; the strategy
   cannot reduce the dict inputs of an interpolator ("Attempt to convert a value ({'x0':
   PerReplica ...}) to a Tensor"). :func:`build_without_distributed_reduce` builds from a plain
   local batch instead (the same variables) and turns Keras' own build off for that model.
2. ``reduce_per_replica(values, strategy, reduction)`` reduces the (scalar) logs of every step
   across workers with ``strategy.reduce("MEAN", v, axis=0)``, which fails on scalars.
   :func:`patch_reduce_per_replica` replaces the module function (Keras looks it up at call time)
   by one that reduces with ``axis=None`` for ``MultiWorkerMirroredStrategy`` and calls the
   original for every other strategy and reduction.

``tests/training/test_keras_patches.py`` fails when these internals change (a new Keras may fix
the problems or move the functions): then check whether the patches are still needed.
"""

KERAS_VERSION = "3.15"  # the Keras these patches were written and tested against


def build_without_distributed_reduce(net, data_batch, strategy):
    """Builds ``net``'s compiled metrics from ``data_batch`` = ``(inputs, target, sample_weight)``
    (local tensors) and skips Keras' later symbolic build, which would reduce a distributed batch.
    """
    with strategy.scope():
        net._symbolic_build(data_batch=data_batch)
    net._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def multi_worker_reduce_per_replica(original):
    """``original`` (Keras' ``reduce_per_replica``), with scalar-safe means for multi-worker runs."""
    import tensorflow as tf

    def reduce_per_replica(values, strategy, reduction):
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        if multi_worker and reduction in ("auto", "mean"):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._emzoo_patched = True
    reduce_per_replica.original = original
    return reduce_per_replica


def patch_reduce_per_replica():
    """Installs :func:`multi_worker_reduce_per_replica` in Keras' TensorFlow trainer (once), for
    the length of one training run: :func:`emzoo.training.train` puts the original back with
    :func:`restore_reduce_per_replica` when the run ends."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if not getattr(tf_trainer.reduce_per_replica, "_emzoo_patched", False):
        original = tf_trainer.reduce_per_replica
        tf_trainer.reduce_per_replica = multi_worker_reduce_per_replica(original)
    return tf_trainer.reduce_per_replica


def restore_reduce_per_replica():
    """Puts Keras' own ``reduce_per_replica`` back (nothing to do when it was not patched)."""
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer.reduce_per_replica, "_emzoo_patched", False):
        tf_trainer.reduce_per_replica = tf_trainer.reduce_per_replica.original
    return tf_trainer.reduce_per_replica
