"""``emzoo upscale`` end to end, through a subprocess (each app defines its own absl flags).

Bad input must give one line on stderr, a non-zero exit, no output (not even a temporary file)
and leave an existing output untouched. Errors found before the model is needed do not import
TensorFlow, so most of these subprocesses are quick.
"""

import os

import numpy as np
import pytest

from app_runner import assert_one_line_error, run_emzoo
from emzoo.data.volumes import open_volume, write_volume


def test_sample_shortcut_upscales_and_says_where(tmp_path, tiny_model):
    # The README's first command, with a tiny model; plus tiles, HDF5 output and --isotropic.
    done = run_emzoo(["upscale", "sample", "-o", "out.tif", "--factor", "2", "--model",
                      tiny_model], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"Wrote {tmp_path / 'out.tif'}" in done.stdout or "Wrote out.tif" in done.stdout
    with open_volume(str(tmp_path / "out.tif")) as out:
        assert out.shape == (33, 256, 256) and out.dtype == np.uint8
        assert out.voxel_size == pytest.approx((5, 10, 10))
    assert len(done.stdout.splitlines()) == 1  # one summary line, on stdout
    assert "upscale x2" not in done.stderr  # not repeated on stderr by the engine


def test_isotropic_with_voxel_size_flag_tiles_and_hdf5(tmp_path, tiny_model, stack):
    done = run_emzoo(["upscale", str(stack), "-o", str(tmp_path / "iso.h5"), "--isotropic",
                      "--voxel-size", "20,8,8", "--model", tiny_model, "--tile", "16",
                      "--overlap", "8", "--quiet"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open_volume(str(tmp_path / "iso.h5") + ":/volumes/raw") as out:
        assert out.shape == (6, 24, 40) and out.voxel_size == pytest.approx((8, 8, 8))


def test_the_last_line_says_how_far_the_model_leans_towards_linear(tmp_path, tiny_model):
    # random weights do worse than linear on random slices: calibration leans towards linear
    stack = tmp_path / "stack.tif"  # slices large enough to test level 1 (binned 2x: 32 x 32)
    write_volume(str(stack), np.random.default_rng(0).integers(0, 255, (5, 64, 64)).astype(np.uint8),
                 voxel_size=(40, 8, 8))
    runs = {}
    for name, flags in (("calibrated", []), ("raw", ["--nocalibrate"])):
        done = run_emzoo(["upscale", str(stack), "-o", str(tmp_path / f"{name}.tif"), "--model",
                          tiny_model, "--quiet"] + flags, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        runs[name] = done.stdout
    assert "weight of the model against linear per level" in runs["calibrated"]
    assert "against linear" not in runs["raw"]
    with open_volume(str(tmp_path / "calibrated.tif")) as a, open_volume(str(tmp_path / "raw.tif")) as b:
        assert not np.array_equal(a.read(1), b.read(1))
        assert np.array_equal(a.read(0), b.read(0))  # input slices copied either way


@pytest.mark.parametrize("make_input, flags, match", [
    (None, ["--factor", "2"], "No such file"),
    ("corrupt", ["--factor", "2"], "Cannot"),
    ("single", ["--factor", "2"], "slice"),  # a 1-page TIFF reads as a 2-D image
    ("stack", ["--factor", "0.5"], "Expected a number >= 1"),
    ("stack", ["--factor", "abc"], "Expected a number >= 1"),
    ("novoxel", ["--isotropic"], "--voxel-size"),
    ("stack", ["--factor", "2", "--model", "no-such-model"], "Unknown model"),
    ("stack", ["--voxel-size", "1,2"], "voxel"),
])
def test_bad_input_gives_one_line_and_no_output(tmp_path, make_input, flags, match):
    source = tmp_path / "in.tif"
    if make_input == "corrupt":
        source.write_bytes(b"II*\x00" + os.urandom(200))
    elif make_input == "single":
        write_volume(str(source), np.zeros((1, 16, 16), np.uint8))
    elif make_input == "novoxel":
        write_volume(str(source), np.zeros((3, 16, 16), np.uint8))
    elif make_input == "stack":
        write_volume(str(source), np.zeros((3, 16, 16), np.uint8), voxel_size=(40, 4, 4))
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["upscale", str(source), "-o", str(tmp_path / "out.tif")] + flags,
                     cwd=tmp_path)
    assert_one_line_error(done, match, tmp_path, before)


def test_existing_output_is_kept_without_overwrite(tmp_path, stack):
    target = tmp_path / "out.tif"
    target.write_bytes(b"precious")
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["upscale", str(stack), "-o", str(target)], cwd=tmp_path)
    assert_one_line_error(done, "--overwrite", tmp_path, before)
    assert "overwrite=True" not in done.stderr  # the CLI's flag, not the Python argument
    assert target.read_bytes() == b"precious"


def test_tile_smaller_than_the_model_multiple(tmp_path, tiny_model, stack):
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["upscale", str(stack), "-o", str(tmp_path / "out.tif"), "--model",
                      tiny_model, "--tile", "1"], cwd=tmp_path)
    assert_one_line_error(done, "size multiple", tmp_path, before)


def test_disk_full_while_writing(tmp_path, tiny_model, stack):
    target = tmp_path / "out.tif"
    write_volume(str(target), np.zeros((2, 8, 8), np.uint8))
    old = target.read_bytes()
    before = sorted(os.listdir(tmp_path))
    prelude = """
        import errno
        from emzoo.data.volumes import VolumeWriter
        _write = VolumeWriter.write
        def write(self, z, raw):
            if z >= 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return _write(self, z, raw)
        VolumeWriter.write = write
    """
    done = run_emzoo(["upscale", str(stack), "-o", str(target), "--model", tiny_model,
                      "--overwrite", "--quiet"], cwd=tmp_path, prelude=prelude)
    assert_one_line_error(done, "ran out of space", tmp_path, before)
    assert target.read_bytes() == old


@pytest.mark.parametrize("command, flag", [("upscale", "--factor"), ("upscale", "--tile"),
                                           ("repair", "--slices"), ("evaluate", "--baselines")])
def test_command_help_lists_its_own_flags(tmp_path, command, flag):
    done = run_emzoo([command, "--help"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"emzoo {command}" in done.stdout and flag in done.stdout


def test_the_apps_word_the_library_errors_as_their_flags():
    # The library names its arguments and raises typed errors; only the apps name flags.
    from emzoo.apps.common import cli_message, interrupted_message
    from emzoo.errors import (AdaptationInterrupted, EmzooError, IncompleteOutputError,
                              JobInterrupted, RandomWeightsError, TrainingInterrupted)

    library = EmzooError("`resume` and `overwrite` exclude each other. Expected resume to "
                         "continue, or overwrite=True. Received: resume=True, overwrite=True")
    assert cli_message(library) == ("--resume and --overwrite exclude each other. Expected resume "
                                    "to continue, or --overwrite. Received: resume=True, "
                                    "overwrite=True")
    incomplete = IncompleteOutputError("out.zarr", "Block 3 failed.")
    assert "resume=True" in str(incomplete) and "--" not in str(incomplete)
    assert cli_message(incomplete).endswith("kept incomplete; continue it with --resume.")
    untrained = RandomWeightsError("tsain", "`tsain` has no trained weights.", "a trained model")
    assert "--allow-random-weights" in cli_message(untrained)
    assert "--" not in str(untrained)
    assert "continue it with --resume" in interrupted_message(JobInterrupted("out.zarr"), False)
    adapting = AdaptationInterrupted("run.adapted", 7)
    assert "resume=True" in str(adapting) and "--" not in str(adapting)
    assert interrupted_message(adapting, True) == ("checkpoint at step 7 in run.adapted kept; the "
                                                   "same command with --resume continues it.")
    assert interrupted_message(TrainingInterrupted("runs/a", 1250), True) == (
        "checkpoint at step 1250 in runs/a kept; the same command with --resume continues it.")
    beside = AdaptationInterrupted("out.tif.adapted", 0, resume_needed=False)
    assert interrupted_message(beside, False) == ("no checkpoint yet in out.tif.adapted; the same "
                                                  "command starts it again.")
    assert interrupted_message(KeyboardInterrupt(), False) == "no output was written."
