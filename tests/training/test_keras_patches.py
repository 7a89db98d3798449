"""Tests of emzoo.training.keras_patches: they fail when the Keras internals we patch change.

A failure here after a Keras upgrade means: read the new ``keras/src/backend/tensorflow/
trainer.py``, check whether the multi-worker problems are fixed (then delete the patch) or moved
(then move the patch), run ``pytest -m slow tests/training/test_training_distributed.py``, and
update ``KERAS_VERSION``.
"""

import inspect

import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402
from keras.src.backend.tensorflow import trainer as tf_trainer  # noqa: E402

from emzoo.training import keras_patches  # noqa: E402


@pytest.fixture
def restore_keras(monkeypatch):
    """Puts Keras' own ``reduce_per_replica`` back after the test."""
    monkeypatch.setattr(tf_trainer, "reduce_per_replica", _original())


def _original():
    function = tf_trainer.reduce_per_replica
    return getattr(function, "original", function)


def test_keras_is_the_version_the_patches_were_written_for():
    assert keras.__version__.startswith(keras_patches.KERAS_VERSION + "."), keras.__version__


def test_private_functions_still_exist_with_the_expected_signatures():
    assert list(inspect.signature(_original()).parameters) == ["values", "strategy", "reduction"]
    trainer = tf_trainer.TensorFlowTrainer
    for name in ("_symbolic_build", "_maybe_symbolic_build"):
        assert list(inspect.signature(getattr(trainer, name)).parameters) == [
            "self", "iterator", "data_batch"], name
    # Keras looks reduce_per_replica up as a module global when a step runs: patching works.
    source = inspect.getsource(trainer._make_function)
    assert "reduce_per_replica(" in source and 'reduction="auto"' in source


def test_the_problems_the_patches_work_around_are_still_there():
    # 1. The symbolic build reduces a distributed sample batch (fails on dict inputs).
    build = inspect.getsource(tf_trainer.TensorFlowTrainer._maybe_symbolic_build)
    assert "self.distribute_strategy.reduce(" in build
    # 2. Multi-worker means are reduced along axis 0 (fails on scalar logs).
    reduce = inspect.getsource(_original())
    assert "_collective_all_reduce_multi_worker(strategy)" in reduce
    assert 'strategy.reduce("MEAN", v, axis=0)' in reduce


class _FakeMultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
    """Passes ``isinstance`` checks; records reductions instead of running collectives."""

    def __init__(self):  # no cluster, no collective ops
        self.calls = []

    def reduce(self, reduce_op, value, axis):
        self.calls.append((reduce_op, axis))
        return value


def test_patch_is_installed_once_and_keeps_the_original(restore_keras):
    original = tf_trainer.reduce_per_replica
    patched = keras_patches.patch_reduce_per_replica()
    assert tf_trainer.reduce_per_replica is patched and patched.original is original
    assert keras_patches.patch_reduce_per_replica() is patched  # idempotent


def test_the_patch_is_taken_back_after_a_run(restore_keras):
    # train() restores Keras' own function when a multi-worker run ends: nothing global is left.
    original = tf_trainer.reduce_per_replica
    keras_patches.patch_reduce_per_replica()
    assert keras_patches.restore_reduce_per_replica() is original
    assert tf_trainer.reduce_per_replica is original
    assert keras_patches.restore_reduce_per_replica() is original  # nothing to undo


def test_patch_applies_only_to_multi_worker_means(restore_keras):
    patched = keras_patches.patch_reduce_per_replica()
    logs = {"loss": tf.constant(0.5), "psnr": tf.constant(30.0)}
    fake = _FakeMultiWorker()
    for reduction in ("auto", "mean"):
        out = patched(logs, fake, reduction)
        assert {k: float(v) for k, v in out.items()} == {"loss": 0.5, "psnr": 30.0}
    assert fake.calls == [("MEAN", None)] * 4
    # Any other strategy (and any other reduction) goes to Keras' own function unchanged.
    calls = []

    def spy(values, strategy, reduction):
        calls.append((strategy, reduction))
        return values

    spied = keras_patches.multi_worker_reduce_per_replica(spy)
    default = tf.distribute.get_strategy()
    mirrored = tf.distribute.MirroredStrategy(devices=["/cpu:0"])
    for strategy, reduction in ((default, "auto"), (mirrored, "mean"), (fake, "concat"), (fake, "sum")):
        assert spied(logs, strategy, reduction) is logs
    assert calls == [(default, "auto"), (mirrored, "mean"), (fake, "concat"), (fake, "sum")]
    # The patched Keras function gives Keras' results for a single-device strategy.
    assert {k: float(v) for k, v in patched(logs, default, "auto").items()} == {"loss": 0.5,
                                                                                "psnr": 30.0}


def test_build_without_distributed_reduce_builds_and_turns_keras_build_off():
    from emzoo.testing import random_inputs
    from emzoo_test_helpers import TinyInterpolator

    net = TinyInterpolator(filters=2)
    net.compile(optimizer="adam", loss="mean_absolute_error", jit_compile=False)
    inputs, target = random_inputs(2, 16, 16, 1)
    keras_patches.build_without_distributed_reduce(net, (inputs, target, None),
                                                   tf.distribute.get_strategy())
    assert net.built and net.compiled
    assert "_maybe_symbolic_build" in vars(net)  # Keras' own build is off for this model
    history = net.fit(inputs, target, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1
