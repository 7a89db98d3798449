"""Self-supervised adaptation: lateral triplets at the right spacing, never worse than the base
model on the held-out triplets, a loadable folder with its provenance, and only the input read."""

import contextlib
import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tifffile

import emzoo
from emzoo import adaptation as A
from emzoo.errors import EmzooError, VolumeError
from emzoo.testing import TINY_FILM, save_tiny_film

pytestmark = pytest.mark.tf_only


def smooth_volume(depth=20, size=64, seed=0):
    """uint8 (Z, Y, X) of smooth blobs (so neighbouring planes resemble each other)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.random((depth * 4, size, size)), sigma=(4, 2, 2))[::4]
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return np.round(noise * 255).astype(np.uint8)


def test_lateral_gaps_match_each_recursion_level():
    assert A.lateral_gaps(40.0, 10.0, 4) == [2, 1]        # outer frames 40 nm and 20 nm apart
    assert A.lateral_gaps(50.0, 4.0, 8) == [6, 3, 2]
    assert A.lateral_gaps(10.0, 10.0, 2) == [1]           # isotropic input: never below 1 px


def test_stretch_along_z_is_linear_and_keeps_rows():
    plane = np.array([[0.0, 1.0], [4.0, 5.0], [8.0, 9.0]], np.float32)
    stretched = A.stretch_along_z(plane, 2.0)
    assert stretched.shape == (5, 2)
    np.testing.assert_allclose(stretched[:, 0], [0, 2, 4, 6, 8])
    np.testing.assert_allclose(stretched[::2], plane)


def test_held_out_triplets_use_only_the_held_out_x_range():
    block = np.broadcast_to(np.arange(64, dtype=np.float32)[None, None, :], (10, 64, 64)).copy()
    triplets = A.LateralTriplets(block / 64.0, ratio=4.0, gaps=[1, 2], crop=32)
    rng = np.random.default_rng(0)
    for held_out in (False, True):
        inputs, target = triplets.batch(rng, 16, 1, held_out=held_out)
        values = np.concatenate([inputs["x0"].ravel(), inputs["x1"].ravel(), target.ravel()]) * 64
        if held_out:
            assert values.min() >= triplets.split - 0.5
        else:
            assert values.max() <= triplets.split + 0.5


@pytest.fixture
def base(tmp_path):
    return str(save_tiny_film(tmp_path / "base"))


def test_adapt_writes_a_loadable_folder_with_its_provenance(base, tmp_path):
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, smooth_volume(), imagej=True, resolution=(100, 100),
                     metadata={"spacing": 0.04, "unit": "um", "axes": "ZYX"})
    report = emzoo.adapt(base, str(stack), factor=4, steps=4, crop=32, batch_size=2,
                         evaluate_every=2, output=tmp_path / "adapted", progress=False)
    assert report["gaps"] == [2, 1] and report["steps"] == 4
    assert report["validation_after"] <= report["validation_before"]
    entry = json.loads((tmp_path / "adapted" / "config.json").read_text())
    record = entry["metadata"]["adaptation"]
    assert record["input"].endswith("stack.tif") and len(record["input_sha256"]) == 64
    assert record["budget"] == {"minutes": None, "steps": 4}
    assert record["self_validation_mae"]["after"] == report["validation_after"]
    loaded = emzoo.load(str(tmp_path / "adapted"), compile=False)
    for a, b in zip(loaded.get_weights(), report["model"].get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(EmzooError, match="already holds a model"):
        emzoo.adapt(base, str(stack), factor=4, steps=1, crop=32, batch_size=2,
                    output=tmp_path / "adapted", progress=False)


def test_input_too_short_for_the_model_s_crops_is_not_adapted(base, monkeypatch):
    import emzoo.adaptation

    volume = smooth_volume()
    settings = dict(voxel_size=(40, 10, 10), factor=4, steps=3, crop=32, batch_size=2,
                    learning_rate=1e-3, evaluate_every=1, progress=False)
    assert emzoo.adapt(base, volume, **settings)["skipped"] is None
    monkeypatch.setattr(emzoo.adaptation, "MIN_CROP_MULTIPLES", 1000)
    report = emzoo.adapt(base, volume, **settings)
    assert report["steps"] == 0 and not report["improved"]
    assert "not adapted" in report["skipped"] and "base model kept" in report["skipped"]
    reference = emzoo.load(base, compile=False)
    for a, b in zip(report["model"].get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_harmful_adaptation_keeps_the_base_weights(base):
    volume = smooth_volume()
    report = emzoo.adapt(base, volume, voxel_size=(40, 10, 10), factor=4, steps=3, crop=32,
                         batch_size=2, learning_rate=5.0, evaluate_every=1, progress=False)
    reference = emzoo.load(base, compile=False)
    if not report["improved"]:
        for a, b in zip(report["model"].get_weights(), reference.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert report["validation_after"] <= report["validation_before"]


# Every file the process opens, while a test records them (audit hooks cannot be removed, so one
# hook serves the module and records only inside `_files_opened`).
_OPENED = []


def _record_opens(event, args):
    if event == "open" and _OPENED and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED[-1].add(os.path.realpath(os.fsdecode(args[0])))


@contextlib.contextmanager
def _files_opened():
    if not getattr(_record_opens, "installed", False):
        sys.addaudithook(_record_opens)
        _record_opens.installed = True
    _OPENED.append(set())
    try:
        yield _OPENED[-1]
    finally:
        _OPENED.pop()


def test_adaptation_reads_only_the_input(base, tmp_path):
    """Adapting on the kept slices of a longer stack opens no other data file, and the weights are
    identical whether the dropped slices (and the full stack) sit beside the input or do not exist,
    and when the kept slices come from memory instead of a file."""
    full = smooth_volume(depth=37)
    kept_index = np.arange(0, 37, 4)
    kept, dropped = full[kept_index], np.delete(full, kept_index, axis=0)
    settings = dict(voxel_size=(40, 10, 10), factor=4, steps=3, crop=32, batch_size=2,
                    evaluate_every=1, learning_rate=1e-3, progress=False)
    weights, opened = {}, {}
    for folder, beside in (("alone", {}), ("beside", {"dropped.tif": dropped, "full.tif": full})):
        data = tmp_path / folder
        data.mkdir()
        tifffile.imwrite(data / "kept.tif", kept)
        for name, array in beside.items():
            tifffile.imwrite(data / name, array)
        with _files_opened() as files:
            report = emzoo.adapt(base, str(data / "kept.tif"), output=tmp_path / f"out-{folder}",
                                 **settings)
        opened[folder] = {pathlib.Path(f).name for f in files
                          if pathlib.Path(f).parent == data.resolve()}
        weights[folder] = report["model"].get_weights()
        record = json.loads((tmp_path / f"out-{folder}" / "config.json").read_text())
        assert record["metadata"]["adaptation"]["input_sha256"] == hashlib.sha256(
            (data / "kept.tif").read_bytes()).hexdigest()
    assert opened == {"alone": {"kept.tif"}, "beside": {"kept.tif"}}
    weights["memory"] = emzoo.adapt(base, kept, **settings)["model"].get_weights()
    for name in ("beside", "memory"):
        for a, b in zip(weights["alone"], weights[name]):
            np.testing.assert_array_equal(a, b)


def test_bad_input_is_refused(base):
    with pytest.raises(EmzooError, match="budget"):
        emzoo.adapt(base, smooth_volume(), voxel_size=(40, 10, 10))
    with pytest.raises(VolumeError, match="voxel size"):
        emzoo.adapt(base, smooth_volume(), steps=1)
    with pytest.raises(VolumeError, match="too small"):
        emzoo.adapt(base, smooth_volume(depth=3, size=16), voxel_size=(40, 10, 10), steps=1)
    assert TINY_FILM["channels"] == 1


# ---------------------------------------------------------------------------- resume
RUN = dict(factor=4, crop=32, batch_size=2, evaluate_every=3, learning_rate=1e-3,
           checkpoint_every=2, checkpoint_seconds=3600, progress=False)


@pytest.fixture
def stack(tmp_path):
    """The smooth volume as a TIFF that records its voxel size (40 x 10 x 10 nm)."""
    from emzoo.data.volumes import write_volume

    path = tmp_path / "stack.tif"
    write_volume(str(path), smooth_volume(), voxel_size=(40, 10, 10))
    return str(path)


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
    assert A.run_state(run_dir) == ("interrupted", 4)
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


def test_ctrl_c_checkpoints_the_finished_step_and_resume_continues(base, stack, tmp_path):
    run_dir = tmp_path / "adapted"
    with _signal_after_step(3, signal.SIGINT), pytest.raises(KeyboardInterrupt):
        emzoo.adapt(base, stack, steps=6, output=run_dir, **dict(RUN, checkpoint_every=100))
    assert A.run_state(run_dir) == ("interrupted", 3)      # saved at the step Ctrl-C came in
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resumed = emzoo.adapt(base, stack, steps=6, output=run_dir, resume=True, **RUN)
    uninterrupted = emzoo.adapt(base, stack, steps=6, **RUN)
    assert resumed["resumed"] == [3] and resumed["steps"] == 6
    _assert_same_weights(resumed["model"].get_weights(), uninterrupted["model"].get_weights())


def test_time_already_spent_counts_toward_the_minutes(base, stack, tmp_path):
    """Step 1 takes longer than the whole budget; a resume that restarted the clock would run
    another step."""
    run_dir = tmp_path / "adapted"
    budget = dict(RUN, minutes=0.002)                        # 0.12 s
    with _signal_after_step(1, signal.SIGINT, sleep=0.3), pytest.raises(KeyboardInterrupt):
        emzoo.adapt(base, stack, output=run_dir, **budget)
    assert A.run_state(run_dir) == ("interrupted", 1)
    resumed = emzoo.adapt(base, stack, output=run_dir, resume=True, **budget)
    assert resumed["steps"] == 1 and resumed["resumed"] == [1]
    assert resumed["seconds"] >= 0.3


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


def test_resume_without_a_folder_starts_and_a_run_without_checkpoint_starts_again(base, stack,
                                                                                  tmp_path):
    run_dir = tmp_path / "adapted"
    first = emzoo.adapt(base, stack, steps=2, output=run_dir, resume=True, **RUN)
    assert first["resumed"] == [] and first["steps"] == 2
    # A run killed before its first checkpoint leaves only its record; resume starts it again.
    started = tmp_path / "started"
    with _signal_after_step(1, signal.SIGINT), pytest.raises(KeyboardInterrupt):
        emzoo.adapt(base, stack, steps=2, output=started, **RUN)
    (started / A.CHECKPOINT_FILE).unlink()
    assert A.run_state(started) == ("interrupted", 0)
    again = emzoo.adapt(base, stack, steps=2, output=started, resume=True, **RUN)
    assert again["resumed"] == [0]
    _assert_same_weights(again["model"].get_weights(), first["model"].get_weights())
