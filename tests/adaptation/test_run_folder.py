"""Resumable adaptation: checkpoints, Ctrl-C, the time already spent, and refusals of a folder
started for another run."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import emzoo
from emzoo.adaptation import CHECKPOINT_FILE, run_state
from emzoo.errors import AdaptationInterrupted, EmzooError
from emzoo_test_helpers import save_tiny_film, smooth_volume

pytestmark = pytest.mark.tf_only

RUN = dict(factor=4, crop=32, batch_size=2, evaluate_every=3, learning_rate=1e-3,
           checkpoint_every=2, checkpoint_seconds=3600, progress=False)


@pytest.fixture(autouse=True)
def _ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt in these tests whatever started pytest: a shell starts
    background jobs with SIGINT ignored, and an ignored signal is neither held nor delivered."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _signal_after_step(step, signum, sleep=0.0):
    """Sends ``signum`` to this process at the end of optimizer step ``step`` (in the step)."""
    import time

    original = keras.Model.train_on_batch
    calls = [0]

    def train_on_batch(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls[0] += 1
        time.sleep(sleep)
        if calls[0] == step:
            os.kill(os.getpid(), signum)
        return result

    keras.Model.train_on_batch = train_on_batch
    try:
        yield
    finally:
        keras.Model.train_on_batch = original


def _assert_same_weights(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow   # a killed process and three adaptations; Ctrl-C and resume: the next test
def test_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(base, stack,
                                                                               tmp_path):
    """SIGKILL after step 5 (checkpoints every 2 steps), in a subprocess; then resume here."""
    run_dir = tmp_path / "adapted"
    script = textwrap.dedent(f"""
        import os, signal, keras, emzoo
        original = keras.Model.train_on_batch
        calls = [0]
        def train_on_batch(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            calls[0] += 1
            if calls[0] == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        keras.Model.train_on_batch = train_on_batch
        emzoo.adapt({base!r}, {stack!r}, steps=8, output={str(run_dir)!r}, **{RUN!r})
        """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert run_state(run_dir) == ("interrupted", 4)
    with pytest.raises(EmzooError, match="no config.json"):   # not a loadable model yet
        emzoo.load(str(run_dir))

    resumed = emzoo.adapt(base, stack, steps=8, output=run_dir, resume=True, **RUN)
    assert resumed["steps"] == 8 and resumed["resumed"] == [4]
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "model.weights.h5"]
    record = json.loads((run_dir / "config.json").read_text())["metadata"]["adaptation"]
    assert record["resumed"] is True and record["resumed_at_steps"] == [4]
    assert record["steps_run"] == 8 and record["budget"] == {"minutes": None, "steps": 8}
    assert record["base_model"] == "tiny-film" and len(record["base_weights_sha256"]) == 64

    uninterrupted = emzoo.adapt(base, stack, steps=8, **RUN)
    assert uninterrupted["best_step"] == resumed["best_step"]
    assert uninterrupted["validation_after"] == resumed["validation_after"]
    _assert_same_weights(resumed["model"].get_weights(), uninterrupted["model"].get_weights())
    _assert_same_weights(emzoo.load(str(run_dir), compile=False).get_weights(),
                         uninterrupted["model"].get_weights())

    again = emzoo.adapt(base, stack, steps=8, output=run_dir, resume=True, **RUN)
    assert again["already_complete"] and again["steps"] == 8
    _assert_same_weights(again["model"].get_weights(), uninterrupted["model"].get_weights())


@pytest.mark.slow
def test_ctrl_c_checkpoints_the_finished_step_and_resume_continues(base, stack, tmp_path):
    run_dir = tmp_path / "adapted"
    with _signal_after_step(3, signal.SIGINT), pytest.raises(AdaptationInterrupted) as stopped:
        emzoo.adapt(base, stack, steps=6, output=run_dir, **dict(RUN, checkpoint_every=100))
    assert run_state(run_dir) == ("interrupted", 3)      # saved at the step Ctrl-C came in
    assert (stopped.value.folder, stopped.value.step) == (str(run_dir), 3)
    assert stopped.value.resume_needed and type(stopped.value.__cause__) is KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = emzoo.adapt(base, stack, steps=6, output=run_dir, resume=True, **RUN)
    uninterrupted = emzoo.adapt(base, stack, steps=6, **RUN)
    assert resumed["resumed"] == [3] and resumed["steps"] == 6
    _assert_same_weights(resumed["model"].get_weights(), uninterrupted["model"].get_weights())


@pytest.mark.slow   # two timed adaptations
def test_time_already_spent_counts_toward_the_minutes(base, stack, tmp_path):
    """Step 1 takes longer than the whole budget; a resume that restarted the clock would run
    another step."""
    run_dir = tmp_path / "adapted"
    budget = dict(RUN, minutes=0.002)                        # 0.12 s
    with _signal_after_step(1, signal.SIGINT, sleep=0.3), pytest.raises(KeyboardInterrupt):
        emzoo.adapt(base, stack, output=run_dir, **budget)
    assert run_state(run_dir) == ("interrupted", 1)
    resumed = emzoo.adapt(base, stack, output=run_dir, resume=True, **budget)
    assert resumed["steps"] == 1 and resumed["resumed"] == [1]
    assert resumed["seconds"] >= 0.3


@pytest.mark.slow   # three adaptations
def test_an_existing_run_folder_is_refused_unless_resumed_for_the_same_run(base, stack,
                                                                           tmp_path):
    run_dir = tmp_path / "adapted"
    with _signal_after_step(2, signal.SIGINT), pytest.raises(KeyboardInterrupt):
        emzoo.adapt(base, stack, steps=6, output=run_dir, **RUN)
    files = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    other_stack = tmp_path / "other.tif"
    from emzoo.data.volumes import write_volume

    write_volume(str(other_stack), smooth_volume(seed=1), voxel_size=(40, 10, 10))
    other_model = str(save_tiny_film(tmp_path / "other-model"))
    refused = [
        ("interrupted adaptation", dict(volume=stack, steps=6, resume=False)),
        ("another factor", dict(volume=stack, steps=6, factor=2)),
        ("another budget", dict(volume=stack, steps=7)),
        ("another budget", dict(volume=stack, steps=6, minutes=1.0)),
        ("another volume", dict(volume=str(other_stack), steps=6)),
        ("another model", dict(volume=stack, steps=6, model=other_model)),
        ("another learning rate", dict(volume=stack, steps=6, learning_rate=1e-2)),
    ]
    for match, change in refused:
        kwargs = dict(RUN, resume=True, output=run_dir, model=base)
        kwargs.update(change)
        with pytest.raises(EmzooError, match=match):
            emzoo.adapt(kwargs.pop("model"), kwargs.pop("volume"), **kwargs)
        assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == files, match
    with pytest.raises(EmzooError, match="exclude each other"):
        emzoo.adapt(base, stack, steps=6, output=run_dir, resume=True, overwrite=True, **RUN)
    with pytest.raises(EmzooError, match="Nothing to resume"):
        emzoo.adapt(base, stack, steps=6, resume=True, **RUN)

    fresh = emzoo.adapt(base, stack, steps=3, output=run_dir, overwrite=True, **RUN)
    assert fresh["resumed"] == [] and fresh["steps"] == 3
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "model.weights.h5"]
    with pytest.raises(EmzooError, match="another budget"):   # a finished folder is checked too
        emzoo.adapt(base, stack, steps=6, output=run_dir, resume=True, **RUN)


@pytest.mark.slow   # three adaptations
def test_resume_without_a_folder_starts_and_a_run_without_checkpoint_starts_again(base, stack,
                                                                                  tmp_path):
    run_dir = tmp_path / "adapted"
    first = emzoo.adapt(base, stack, steps=2, output=run_dir, resume=True, **RUN)
    assert first["resumed"] == [] and first["steps"] == 2
    # A run killed before its first checkpoint leaves only its record; resume starts it again.
    started = tmp_path / "started"
    with _signal_after_step(1, signal.SIGINT), pytest.raises(KeyboardInterrupt):
        emzoo.adapt(base, stack, steps=2, output=started, **RUN)
    (started / CHECKPOINT_FILE).unlink()
    assert run_state(started) == ("interrupted", 0)
    again = emzoo.adapt(base, stack, steps=2, output=started, resume=True, **RUN)
    assert again["resumed"] == [0]
    _assert_same_weights(again["model"].get_weights(), first["model"].get_weights())


def test_a_record_with_the_earlier_validation_names_is_read_as_the_same_run():
    from emzoo.adaptation.run_folder import AnotherRunError, check_same_run

    keys = ["val_fraction", "val_batches"]
    current = {"val_fraction": 0.2, "val_batches": 4}
    check_same_run("adapted", {"validation_fraction": 0.2, "validation_batches": 4}, current, keys)
    with pytest.raises(AnotherRunError, match="another validation fraction"):
        check_same_run("adapted", {"validation_fraction": 0.3, "validation_batches": 4}, current,
                       keys)
