"""Tests of emzoo.training.strategies: strategy names, the chief of a cluster, mixed precision."""

import json
import pathlib

import pytest

from emzoo.errors import EmzooError
from emzoo.training import STRATEGIES, make_strategy, strategies


def test_strategy_names_are_checked_in_one_place():
    assert STRATEGIES == ("default", "mirrored", "multi_worker")
    for name in STRATEGIES:
        assert strategies.check_strategy(name) == name
    with pytest.raises(EmzooError, match=r"`strategy`\. Expected one of default, mirrored, "
                                         r"multi_worker\. Received: strategy='tpu'"):
        make_strategy("tpu")


def test_multi_worker_needs_tf_config(monkeypatch):
    pytest.importorskip("tensorflow")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(EmzooError, match="TF_CONFIG"):
        make_strategy("multi_worker")


def test_default_strategy_has_one_replica():
    tf = pytest.importorskip("tensorflow")
    strategy = make_strategy("default")
    assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1


def _cluster(monkeypatch, cluster, task_type, index):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster,
                                                "task": {"type": task_type, "index": index}}))


def test_the_chief_is_the_chief_task_or_worker_0_without_one(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert strategies.is_chief()  # alone
    workers = {"worker": ["a:1", "b:2"]}
    _cluster(monkeypatch, workers, "worker", 0)
    assert strategies.is_chief()
    _cluster(monkeypatch, workers, "worker", 1)
    assert not strategies.is_chief()
    assert strategies.scratch_folder(pathlib.Path("run")) == pathlib.Path("run/.worker-worker-1")
    with_chief = {"chief": ["c:0"], "worker": ["a:1"]}
    _cluster(monkeypatch, with_chief, "worker", 0)
    assert not strategies.is_chief()
    _cluster(monkeypatch, with_chief, "chief", 0)
    assert strategies.is_chief()


def test_training_precision_names_its_policy_and_mixed_follows_the_device():
    tf = pytest.importorskip("tensorflow")
    import keras

    from emzoo.training.config import resolve_training_precision

    try:
        for precision, policy in (("bf16", "mixed_bfloat16"), ("float16", "mixed_float16"),
                                  ("float32", "float32")):
            assert strategies.set_precision_policy(precision) == policy
            assert keras.mixed_precision.global_policy().name == policy
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed = "float16" if tf.config.list_physical_devices("GPU") else "bf16"
    assert resolve_training_precision("mixed") == mixed
    assert resolve_training_precision("auto") == "float32"
    with pytest.raises(EmzooError, match="auto, float32, bf16 or float16"):
        resolve_training_precision("mixed_bfloat16")
