"""MirroredStrategy on two logical CPU devices and MultiWorkerMirroredStrategy with two local
workers must train the same model as a single device on the same data.

Why they should agree: the batch size is global, the pipeline's batch ``i`` is a pure function of
``(seed, i)`` and the dataset is sharded by data, so each replica gets its half of the very batch
the single device sees; Keras scales each replica's mean loss by 1 / replicas and the gradients
are summed across replicas, which equals the gradient of the global mean. The only difference
left is the order of float32 additions in the all-reduce. We train with plain SGD (lr 1e-2) so
that the weights are linear in the gradients: a replica that saw the wrong half of a batch, or a
loss not divided by the number of replicas (twice the step), would move the weights by about
lr * |gradient|, orders of magnitude more than the 2e-5 we allow. (Adam would hide a scaling
error: it normalises the step size.)
"""

import json
import socket

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from emzoo import training  # noqa: E402
from emzoo_test_helpers import (TINY_TRAINING_RUN, start_train_subprocess,  # noqa: E402
                                subprocess_env, train_in_subprocess, trained_weights)

DISTRIBUTED_RUN = dict(TINY_TRAINING_RUN, optimizer="sgd", learning_rate=1e-2, steps=3,
                       checkpoint_every=3)
TOLERANCE = 2e-5


@pytest.fixture(scope="module")
def single_device(volume, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    training.train(data=[volume], output=out, **DISTRIBUTED_RUN)
    return trained_weights(out)


def _assert_same(weights_a, weights_b):
    assert len(weights_a) == len(weights_b)
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_one_device(volume, single_device, tmp_path):
    out = tmp_path / "mirrored"
    kwargs = dict(DISTRIBUTED_RUN, data=[volume], output=str(out), strategy="mirrored", logical_cpus=2)
    result = train_in_subprocess(kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.split("SUMMARY ", 1)[1])
    assert summary["replicas"] == 2 and summary["steps"] == 3
    _assert_same(single_device, trained_weights(out))


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_with_two_local_workers_matches_one_device(volume, single_device, tmp_path):
    out = tmp_path / "multi"
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    kwargs = dict(DISTRIBUTED_RUN, data=[volume], output=str(out), strategy="multi_worker")
    processes = []
    for index in range(2):
        env = {"TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                        "task": {"type": "worker", "index": index}})}
        processes.append(start_train_subprocess(kwargs, env=env))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=300))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    summaries = [json.loads(stdout.split("SUMMARY ", 1)[1]) for stdout, _ in outputs]
    assert [s["replicas"] for s in summaries] == [2, 2]
    assert [s["steps"] for s in summaries] == [3, 3]
    # Only the chief (worker 0) writes the run folder; worker 1 removed its scratch checkpoints.
    assert (out / "config.json").exists()
    assert not any(p.name.startswith(".worker-") for p in out.iterdir())
    _assert_same(single_device, trained_weights(out))


# One fresh process (two logical CPUs) trains one step on each validation set size and scores the
# saved model again on one device: the final validation must finish and give the same means.
_VALIDATION_SIZES_SCRIPT = r"""
import json, sys
import numpy as np
import emzoo_test_helpers as helpers
from emzoo import training
from emzoo.data.triplets import validation_triplets
import emzoo

volume, folder, sizes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
results = {}
for n in sizes:
    # 20 slices, gap 1: a validation range of n + 2 slices holds n triplets.
    fraction = (n + 2) / 20
    out = f"{folder}/run-{n}"
    kwargs = dict(helpers.TINY_TRAINING_RUN, data=[volume], output=out, steps=1, checkpoint_every=1,
                  batch_size=2, gaps=(1,), val_batches=5, val_fraction=fraction, crop=16,
                  strategy="mirrored", logical_cpus=2)
    summary = training.train(**kwargs)
    model = emzoo.load(out, compile=False)
    training.compile_model(model, "l1", "adam", 1e-3, jit_compile=False)
    single = validation_triplets([volume], gaps=(1,), crop=16, batch_size=2, val_fraction=fraction)
    scores = model.evaluate(single.take(5), verbose=0, return_dict=True)
    count = sum(int(y.shape[0]) for _, y in single.take(5))
    results[n] = dict(replicas=summary["replicas"], count=count, distributed=summary["validation"],
                      single={k: float(v) for k, v in scores.items()})
print("RESULTS " + json.dumps(results))
"""


@pytest.mark.slow   # ten mirrored runs, one per validation size
def test_mirrored_validation_of_every_size_ends_without_error(volume, tmp_path):
    """Validation sets of 1 to 10 triplets (up to 5 batches of 2) against 2 replicas: a last batch
    smaller than (or not a multiple of) the replica count used to crash Keras' cross-replica sum
    at the very end of the run ("Inputs to operation AddN ... must have the same size")."""
    import subprocess
    import sys

    sizes = list(range(1, 11))
    done = subprocess.run([sys.executable, "-c", _VALIDATION_SIZES_SCRIPT, volume, str(tmp_path),
                           json.dumps(sizes)], capture_output=True, text=True, timeout=900,
                          env=subprocess_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    results = json.loads(done.stdout.split("RESULTS ", 1)[1])
    for n in sizes:
        result = results[str(n)]
        assert result["replicas"] == 2 and result["count"] == n
        for name in ("loss", "psnr", "ssim", "ie"):
            assert result["distributed"][name] == pytest.approx(result["single"][name], rel=1e-4), (
                n, name, result)
