"""The adaptation loop: a loadable folder with its provenance, never worse than the base model on
the held-out triplets, short inputs left alone, and only the input read."""

import contextlib
import hashlib
import json
import os
import pathlib
import sys

import numpy as np
import pytest
import tifffile

import emzoo
from emzoo.errors import EmzooError, VolumeError
from emzoo.testing import TINY_FILM
from emzoo_test_helpers import TerminalStream, smooth_volume

pytestmark = pytest.mark.tf_only


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
    assert record["self_validation"]["after"] == report["validation_after"]
    assert record["precision"] == "float32" and record["loss"] == "l2"   # "auto" trains in float32
    assert report["model"].compute_dtype == "float32"   # whatever the training computed in
    loaded = emzoo.load(str(tmp_path / "adapted"), compile=False)
    for a, b in zip(loaded.get_weights(), report["model"].get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(EmzooError, match="already holds a model"):
        emzoo.adapt(base, str(stack), factor=4, steps=1, crop=32, batch_size=2,
                    output=tmp_path / "adapted", progress=False)


@pytest.mark.parametrize("budget, shown", [
    ({"steps": 3}, "3/3 steps"), pytest.param({"minutes": 0.05}, "/3 s", marks=pytest.mark.slow)])
def test_progress_bar_counts_steps_or_the_time_budget_with_the_best_score(base, monkeypatch, budget,
                                                                         shown):
    terminal = TerminalStream()
    monkeypatch.setattr(sys, "stderr", terminal)
    emzoo.adapt(base, smooth_volume(), voxel_size=(40, 10, 10), factor=4, crop=32, batch_size=2,
                evaluate_every=1, learning_rate=1e-3, **budget)
    text = terminal.getvalue()
    assert text.startswith("\radapt") and shown in text and "best held-out error" in text
    assert text.endswith("\n")


@pytest.mark.slow   # three adaptations
def test_adapt_beside_output_reuses_its_folder_and_refuses_another_run_while_the_output_exists(
        base, tmp_path):
    from emzoo.adaptation import adapt_beside_output
    from emzoo.adaptation.run_folder import AnotherRunError

    settings = dict(voxel_size=(40, 10, 10), factor=4, crop=32, batch_size=2, evaluate_every=1,
                    learning_rate=1e-3, progress=False)
    volume, output = smooth_volume(), tmp_path / "iso.tif"
    first = adapt_beside_output(base, volume, output, steps=2, **settings)
    assert first["output"] == str(tmp_path / "iso.tif.adapted") and not first["already_complete"]
    assert adapt_beside_output(base, volume, output, steps=2, **settings)["already_complete"]
    output.write_bytes(b"")   # an output made with those weights exists: they must not change
    with pytest.raises(AnotherRunError, match="another budget"):
        adapt_beside_output(base, volume, output, steps=3, **settings)
    output.unlink()           # gone: the folder is adapted anew for the new budget
    anew = adapt_beside_output(base, volume, output, steps=3, **settings)
    assert anew["steps"] == 3 and not anew["already_complete"]


def test_input_too_short_for_the_model_s_crops_is_not_adapted(base, monkeypatch):
    from emzoo.adaptation import fine_tune

    volume = smooth_volume()
    settings = dict(voxel_size=(40, 10, 10), factor=4, steps=3, crop=32, batch_size=2,
                    learning_rate=1e-3, evaluate_every=1, progress=False)
    assert emzoo.adapt(base, volume, **settings)["skipped"] is None
    monkeypatch.setattr(fine_tune, "MIN_CROP_MULTIPLES", 1000)
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


def test_a_diverged_step_stops_the_run_and_keeps_the_weights_from_before(base, monkeypatch):
    import keras

    original, calls = keras.Model.train_on_batch, [0]

    def train_on_batch(self, *args, **kwargs):
        calls[0] += 1
        loss = original(self, *args, **kwargs)
        return float("nan") if calls[0] == 3 else loss

    monkeypatch.setattr(keras.Model, "train_on_batch", train_on_batch)
    report = emzoo.adapt(base, smooth_volume(), voxel_size=(40, 10, 10), factor=4, steps=10,
                         crop=32, batch_size=2, evaluate_every=1, progress=False)
    assert report["steps"] == 3 and "diverged at step 3" in report["diverged"]
    assert report["best_step"] < 3


@pytest.mark.slow
def test_the_axial_error_is_reported_and_does_not_decide(base, monkeypatch):
    """Better on the lateral held-out triplets but worse on the input's own axial triplets: the
    adapted weights are kept (the axial error disagreed with the dropped slices), and reported."""
    from emzoo.adaptation import fine_tune

    real_axial, real_error, axial = fine_tune.axial_batches, fine_tune.held_out_error, []

    def axial_batches(block, multiple, **kwargs):
        axial.append(real_axial(block, multiple, **kwargs))
        return axial[0]

    def held_out_error(model, batches, loss):     # the axial check after training: worse
        error = real_error(model, batches, loss)
        return error + 1.0 if batches is axial[0] and model.optimizer.iterations > 0 else error

    settings = dict(voxel_size=(40, 10, 10), factor=4, steps=3, crop=32, batch_size=2,
                    evaluate_every=1, learning_rate=1e-3, progress=False)
    monkeypatch.setattr(fine_tune, "axial_batches", axial_batches)
    monkeypatch.setattr(fine_tune, "held_out_error", held_out_error)
    report = emzoo.adapt(base, smooth_volume(), **settings)
    assert report["validation_after"] < report["validation_before"]   # lateral: better
    assert report["improved"] and report["vetoed"] is None
    assert report["axial_after"] > report["axial_before"]
    changed = [not np.array_equal(a, b) for a, b in zip(report["model"].get_weights(),
                                                        emzoo.load(base).get_weights())]
    assert any(changed)


@pytest.mark.parametrize("voxel_size, factor, ratio", [((20, 10, 10), 2, "2x"),
                                                       ((80, 10, 10), 8, "8x")])
def test_spacings_outside_the_stretch_range_are_not_adapted(base, voxel_size, factor, ratio):
    report = emzoo.adapt(base, smooth_volume(depth=16), voxel_size=voxel_size, factor=factor,
                         steps=3, crop=32, batch_size=2, evaluate_every=1, progress=False)
    assert report["steps"] == 0 and not report["improved"]
    assert f"z spacing is {ratio} its x spacing" in report["skipped"]
    for a, b in zip(report["model"].get_weights(), emzoo.load(base).get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_volume_too_small_to_adapt_on_at_a_spacing_outside_the_range_is_only_not_adapted(
        base, tmp_path):
    """Its lateral planes are never cut (they would not fit): "not adapted", not an error."""
    volume = smooth_volume(depth=4, size=8)
    with pytest.raises(VolumeError, match="too small to adapt on"):   # in the range: an error
        emzoo.adapt(base, volume, voxel_size=(40, 10, 10), factor=4, steps=1, progress=False)
    report = emzoo.adapt(base, volume, voxel_size=(80, 10, 10), factor=8, steps=3,
                         output=tmp_path / "adapted", progress=False)
    assert report["steps"] == 0 and "z spacing is 8x its x spacing" in report["skipped"]
    assert report["validation_before"] is report["validation_after"] is None
    assert emzoo.adapt(base, volume, voxel_size=(80, 10, 10), factor=8, steps=3,
                       output=tmp_path / "adapted", resume=True, progress=False)["skipped"]


@pytest.mark.slow
def test_a_gain_smaller_than_the_margin_keeps_the_base_weights(base, monkeypatch):
    from emzoo.adaptation import fine_tune

    settings = dict(voxel_size=(40, 10, 10), factor=4, steps=3, crop=32, batch_size=2,
                    evaluate_every=1, learning_rate=1e-3, progress=False)
    monkeypatch.setattr(fine_tune, "MIN_GAIN_DB", 1000.0)
    report = emzoo.adapt(base, smooth_volume(), **settings)
    assert report["validation_after"] < report["validation_before"]   # lateral: better
    assert not report["improved"] and "less than 1000 dB" in report["vetoed"]
    for a, b in zip(report["model"].get_weights(), emzoo.load(base).get_weights()):
        np.testing.assert_array_equal(a, b)


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


@pytest.mark.slow   # three adaptations; the files one app run opens: tests/apps/test_adapt_app.py
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
    with pytest.raises(VolumeError, match="`isotropic` needs the voxel size"):
        emzoo.adapt(base, smooth_volume(), isotropic=True, steps=1)
    with pytest.raises(VolumeError, match="too small"):
        emzoo.adapt(base, smooth_volume(depth=3, size=16), voxel_size=(40, 10, 10), steps=1)
    assert TINY_FILM["channels"] == 1


@pytest.mark.slow
def test_without_a_voxel_size_the_output_is_taken_as_isotropic_and_said(base, capsys):
    settings = dict(factor=4, steps=2, crop=32, batch_size=2, evaluate_every=1, precision="float32")
    said = emzoo.adapt(base, smooth_volume(), **settings)
    assert "z spacing is taken as 4x its x spacing" in capsys.readouterr().err
    assert said["assumed"] and said["gaps"] == [2, 1]
    given = emzoo.adapt(base, smooth_volume(), voxel_size=(40, 10, 10), progress=False, **settings)
    assert given["assumed"] is None and given["gaps"] == said["gaps"]
    for a, b in zip(said["model"].get_weights(), given["model"].get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bf16_training_returns_a_float32_model_with_the_trained_weights(base, monkeypatch):
    from emzoo.engine import precision

    monkeypatch.setenv(precision.FORCE_VARIABLE, "1")   # bf16 even where the CPU lacks it
    settings = dict(voxel_size=(40, 10, 10), factor=4, steps=3, crop=32, batch_size=2,
                    evaluate_every=1, learning_rate=1e-3, progress=False)
    bf16 = emzoo.adapt(base, smooth_volume(), precision="bf16", **settings)
    assert bf16["model"].compute_dtype == "float32"
    changed = [not np.array_equal(a, b) for a, b in zip(bf16["model"].get_weights(),
                                                        emzoo.load(base).get_weights())]
    assert any(changed) == bf16["improved"]    # the trained weights, or the base ones
    with pytest.raises(EmzooError, match="loss"):
        emzoo.adapt(base, smooth_volume(), loss="l3", **settings)
