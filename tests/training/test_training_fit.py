"""Tests of emzoo.training.fit: a full tiny run, exact resume after SIGKILL, bad settings, and the
paper loss that ``--loss paper`` compiles.

The runs use :class:`emzoo_test_helpers.TinyInterpolator` (two 3x3 convs on top of the frame
average, registered as ``tiny-test``) on a synthetic 20 x 48 x 48 stack (the ``volume`` fixture),
so each run takes seconds; the FILM path is exercised by tests/apps/test_train_app.py.
"""

import json
import pathlib
import signal

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from emzoo import training  # noqa: E402
from emzoo.errors import EmzooError  # noqa: E402
from emzoo.testing import TINY_FILM  # noqa: E402
from emzoo_test_helpers import TINY_TRAINING_RUN as TINY_RUN  # noqa: E402
from emzoo_test_helpers import train_in_subprocess, trained_weights  # noqa: E402



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
    fresh = training.build_model("tiny-test", None, {})
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
    result = train_in_subprocess(kwargs, kill_at=5)
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
    for a, b in zip(trained_weights(straight), trained_weights(killed)):
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


def test_ctrl_c_keeps_the_checkpoints_and_says_which_one_resume_continues(volume, tmp_path):
    from emzoo.errors import TrainingInterrupted

    class CtrlC(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 3:
                raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as stopped:
        training.train(data=[volume], steps=6, output=run, callbacks=[CtrlC()], **TINY_RUN)
    assert (stopped.value.folder, stopped.value.step) == (str(run), 2)   # checkpoints every 2
    assert type(stopped.value.__cause__) is KeyboardInterrupt
    assert (run / "checkpoints" / "ckpt-2.index").is_file()
    resumed = training.train(data=[volume], steps=6, output=run, resume=True, **TINY_RUN)
    assert resumed["resumed_from"] == 2 and resumed["steps"] == 6


def test_bf16_training_keeps_float32_weights(volume, tmp_path):
    try:
        summary = training.train(data=[volume], steps=2, output=tmp_path / "mp", precision="bf16",
                                 **TINY_RUN)
        record = json.loads((tmp_path / "mp" / "run_config.json").read_text())
        assert record["dtype_policy"] == "mixed_bfloat16" and record["config"]["precision"] == "bf16"
        assert np.isfinite(summary["validation"]["loss"])
        assert all(w.dtype == np.float32 for w in trained_weights(tmp_path / "mp"))
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


@pytest.mark.parametrize("entry, terms", [("film-l1", {"l1"}), ("film-vgg", {"l1", "film_vgg"}),
                                          ("film", {"l1", "film_vgg", "film_style"})])
@pytest.mark.parametrize("schedule_scale", [1e-3, 1.0])
def test_paper_loss_keeps_the_entry_loss_variant(entry, terms, schedule_scale):
    """``emzoo train film-l1 --schedule-scale ...`` trains with L1 alone, not FILM's Style loss.

    The VGG terms use random weights here (EMZOO_VGG_WEIGHTS=random in tests/conftest.py).
    """
    net = training.build_model(entry, "auto", TINY_FILM)
    training.compile_model(net, "paper", "adam", None, jit_compile=False,
                           schedule_scale=schedule_scale)
    assert set(net.loss.terms) == terms
    for weight in net.loss.weights.values():  # the schedule boundaries are scaled
        for boundary in getattr(weight, "boundaries", ()):
            assert boundary == pytest.approx(1.5e6 * schedule_scale)


def test_pixel_and_keras_losses_compile(volume):
    net = training.build_model("tiny-test", None, {})
    training.compile_model(net, "l2", "sgd", None, jit_compile=False)
    assert isinstance(net.optimizer, keras.optimizers.SGD)
    assert net.loss is keras.losses.get("mean_squared_error")
    with pytest.raises(EmzooError, match="`optimizer`"):
        training.compile_model(net, "l1", "rmsprop")
    with pytest.raises(EmzooError, match="Unknown loss `nope`"):
        training.compile_model(net, "nope")


def test_named_entry_starts_from_its_trained_weights_unless_from_scratch():
    """``emzoo train default`` fine-tunes the bundled weights; ``--from-scratch`` (None) does not."""
    import emzoo

    bundled = emzoo.load("default", compile=False).get_weights()
    for weights in ("auto", "default"):
        net = training.build_model("default", weights, {})
        for a, b in zip(bundled, net.get_weights()):
            np.testing.assert_array_equal(a, b)
    scratch = training.build_model("default", None, {}).get_weights()
    assert any(a.shape == b.shape and np.abs(a - b).max() > 1e-3 for a, b in zip(bundled, scratch))
    # The loss it continues with is the one its entry records (metadata.training_loss).
    net = training.compile_model(training.build_model("default", "auto", {}), "auto",
                                 jit_compile=False)
    assert net.loss is keras.losses.get("mean_squared_error")
