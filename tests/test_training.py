"""Tests of emzoo.training: a full tiny run, exact resume after SIGKILL, summaries, bad settings.

The runs use a tiny interpolator (two 3x3 convs on top of the frame average, registered here as
``tiny-test``) on a synthetic 20 x 48 x 48 stack, so each run takes seconds; the FILM path is
exercised by tests/apps/test_train_app.py. ``test_training_distributed.py`` reuses the helpers.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from emzoo import training, zoo  # noqa: E402
from emzoo.errors import EmzooError  # noqa: E402
from emzoo.models.base import Interpolator  # noqa: E402

TESTS = pathlib.Path(__file__).resolve().parent


TINY_RUN = dict(model="tiny-test", batch_size=4, crop=32, gaps=(1, 2), loss="l1",
                learning_rate=1e-3, checkpoint_every=2, val_batches=1, jit_compile=False,
                log_every=1, verbose=False)


@zoo.register_architecture("tiny-test")
@keras.saving.register_keras_serializable(package="emzoo_tests")
class TinyInterpolator(Interpolator):
    """The frame average plus a learned two-conv correction (a stand-in architecture for tests)."""

    size_multiple = 1

    def __init__(self, filters=4, channels=1, **kwargs):
        super().__init__(channels=channels, **kwargs)
        self.filters = int(filters)
        self.hidden = keras.layers.Conv2D(self.filters, 3, padding="same", activation="relu")
        self.correction = keras.layers.Conv2D(self.channels, 3, padding="same")

    def call(self, inputs, training=False):
        x0, x1 = inputs["x0"], inputs["x1"]
        hidden = self.hidden(keras.ops.concatenate([x0, x1], axis=-1))
        correction = keras.ops.cast(self.correction(hidden), x0.dtype)  # mixed precision
        return {"image": 0.5 * (x0 + x1) + correction}

    def get_config(self):
        return {"filters": self.filters, "channels": self.channels}


def make_volume(path, depth=20, size=48):
    """A smooth uint8 stack whose pattern moves with z (so interpolation is learnable)."""
    import tifffile

    z, y, x = np.mgrid[0:depth, 0:size, 0:size].astype(np.float32)
    volume = 0.5 + 0.3 * np.sin((x + 1.5 * z) / 5.0) * np.cos((y - z) / 7.0)
    tifffile.imwrite(path, np.round(volume * 255).astype(np.uint8))
    return str(path)


class KillAtStep(keras.callbacks.Callback):
    """Sends SIGKILL to its own process after optimizer step ``step`` (a crash between checkpoints)."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def run_in_subprocess(kwargs, kill_at=None, env=None, timeout=240):
    """Runs ``training.train(**kwargs)`` in a fresh Python (this module's architecture registered)."""
    script = (f"import sys, json; sys.path.insert(0, {str(TESTS)!r}); import test_training as t; "
              f"t._subprocess_main(json.loads(sys.argv[1]), {kill_at!r})")
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    return subprocess.run([sys.executable, "-c", script, json.dumps(kwargs)], capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def _subprocess_main(kwargs, kill_at):
    callbacks = [KillAtStep(kill_at)] if kill_at else None
    summary = training.train(callbacks=callbacks, **kwargs)
    print("SUMMARY " + json.dumps(summary))


def final_weights(run_dir):
    import emzoo

    return [np.asarray(w) for w in emzoo.load(str(run_dir), compile=False).get_weights()]


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    return make_volume(tmp_path_factory.mktemp("data") / "stack.tif")


def test_run_writes_checkpoints_summaries_and_a_loadable_model(volume, tmp_path):
    import emzoo

    out = tmp_path / "run"
    summary = training.train(data=[volume], steps=4, output=out, command=["emzoo", "train", "x"],
                             **TINY_RUN)
    assert summary["steps"] == 4 and summary["resumed_from"] == 0
    record = json.loads((out / "run_config.json").read_text())
    assert record["emzoo_version"] == emzoo.__version__
    assert record["config"]["gaps"] == [1, 2] and record["config"]["steps"] == 4
    assert sorted(p.name for p in (out / "checkpoints").glob("ckpt-*.index")) == ["ckpt-2.index", "ckpt-4.index"]
    entry = json.loads((out / "config.json").read_text())
    assert entry["architecture"] == "tiny-test"
    assert entry["metadata"]["training"]["command"] == "emzoo train x"
    assert entry["metadata"]["trained_on"] == [str(pathlib.Path(volume).resolve())]
    assert set(entry["metadata"]["validation"]) >= {"loss", "psnr", "ssim", "ie"}
    model = emzoo.load(str(out))
    assert model.get_config() == {"filters": 4, "channels": 1}
    # TensorBoard: scalars at every step (log_every=1) and images at each checkpoint.
    tags = {}
    for event_file in (out / "logs").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            for value in event.summary.value:
                tags.setdefault(value.tag, set()).add(event.step)
    assert tags["train/loss"] == {1, 2, 3, 4}
    for name in ("x0", "x1", "prediction", "target"):
        assert tags[f"images/{name}"] == {2, 4}
    assert 4 in tags["validation/psnr"]
    # Training did something: the weights moved away from the initial ones.
    fresh = training._build_model("tiny-test", None, {})
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(fresh.get_weights(), model.get_weights()))


def test_resume_after_sigkill_matches_an_uninterrupted_run(volume, tmp_path):
    """Kill after step 5 (checkpoints at 2 and 4), resume, and compare with a straight run of 6.

    The resumed run restores weights, Adam's moments and step counter from ckpt-4, and its data
    stream restarts at batch 4 (batch i is a pure function of (seed, i)); it redoes step 5 and
    runs step 6 on the same batches as the straight run, with the same ops on the same device. So
    the two runs should agree to float32 rounding: we allow 1e-6. A resume that lost Adam's
    moments, re-read batches 0-1, or restarted the step counter would differ by roughly the size
    of an Adam update (about lr = 1e-3 per step), three orders of magnitude more.
    """
    straight = tmp_path / "straight"
    training.train(data=[volume], steps=6, output=straight, **TINY_RUN)

    killed = tmp_path / "killed"
    kwargs = dict(TINY_RUN, data=[volume], steps=6, output=str(killed))
    result = run_in_subprocess(kwargs, kill_at=5)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not (killed / "config.json").exists()  # no final model from a killed run
    assert (killed / "checkpoints" / "ckpt-4.index").exists()
    # ... but the latest checkpoint's weights load like a model (here: those of step 4).
    import emzoo

    latest = emzoo.load(str(killed / "latest"), compile=False)
    assert json.loads((killed / "latest" / "config.json").read_text())["metadata"]["training"]["steps"] == 4
    reader = tf.train.load_checkpoint(str(killed / "checkpoints" / "ckpt-4"))
    kernel = latest.get_weights()[0]
    assert any(np.array_equal(reader.get_tensor(k), kernel) for k in reader.get_variable_to_shape_map()
               if reader.get_variable_to_shape_map()[k] == list(kernel.shape))
    assert not (killed / "checkpoints" / "ckpt-6.index").exists()

    resumed = training.train(data=[volume], steps=6, output=killed, resume=True, **TINY_RUN)
    assert resumed["resumed_from"] == 4 and resumed["steps"] == 6
    for a, b in zip(final_weights(straight), final_weights(killed)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # Step counter and optimizer state came back too: the final checkpoints agree.
    reader_a = tf.train.load_checkpoint(str(straight / "checkpoints" / "ckpt-6"))
    reader_b = tf.train.load_checkpoint(str(killed / "checkpoints" / "ckpt-6"))
    keys = [k for k in reader_a.get_variable_to_shape_map() if "optimizer" in k and "OBJECT_GRAPH" not in k]
    assert keys
    for key in keys:
        np.testing.assert_allclose(reader_a.get_tensor(key), reader_b.get_tensor(key), rtol=0, atol=1e-6)


def test_existing_run_needs_resume_and_the_same_settings(volume, tmp_path):
    out = tmp_path / "run"
    training.train(data=[volume], steps=2, output=out, **TINY_RUN)
    with pytest.raises(EmzooError, match="already holds a training run"):
        training.train(data=[volume], steps=2, output=out, **TINY_RUN)
    with pytest.raises(EmzooError, match="different settings .*batch_size"):
        training.train(data=[volume], steps=4, output=out, resume=True, **dict(TINY_RUN, batch_size=2))
    # Extending a finished run continues from its last checkpoint.
    more = training.train(data=[volume], steps=4, output=out, resume=True, **TINY_RUN)
    assert more["resumed_from"] == 2 and more["steps"] == 4


def test_mixed_precision_trains_with_float32_weights(volume, tmp_path):
    try:
        summary = training.train(data=[volume], steps=2, output=tmp_path / "mp", mixed_precision=True,
                                 **TINY_RUN)
        record = json.loads((tmp_path / "mp" / "run_config.json").read_text())
        assert record["dtype_policy"].startswith("mixed_")
        assert np.isfinite(summary["validation"]["loss"])
        assert all(w.dtype == np.float32 for w in final_weights(tmp_path / "mp"))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("change, message", [
    (dict(steps=0), "`steps`"),
    (dict(gaps="1,x"), "`gaps`"),
    (dict(strategy="tpu"), "`strategy`"),
    (dict(crop=64), "crop is larger"),
    (dict(gaps=(12,)), "too few slices"),
    (dict(overrides=["filters"]), "key=value"),
    (dict(loss="no-such-loss"), "Unknown loss"),
    (dict(model="no-such-model"), "Unknown model"),
])
def test_bad_settings_fail_before_writing(volume, tmp_path, change, message):
    out = tmp_path / "run"
    kwargs = dict(TINY_RUN, data=[volume], steps=2, output=out)
    kwargs.update(change)
    with pytest.raises(EmzooError, match=message):
        training.train(**kwargs)
    assert not (out / "config.json").exists()


def test_missing_data_is_reported(tmp_path):
    with pytest.raises((EmzooError, OSError)):
        training.train(data=[str(tmp_path / "absent.tif")], steps=2, output=tmp_path / "run", **{
            k: v for k, v in TINY_RUN.items()})
    assert not (tmp_path / "run").exists()


def test_parse_overrides_types_values():
    assert training.parse_overrides(["a=1", "b=0.5", "c=[1, 2]", "d=text", "e=false"]) == {
        "a": 1, "b": 0.5, "c": [1, 2], "d": "text", "e": False}
