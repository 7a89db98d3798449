"""``emzoo train`` end to end, through a subprocess (each app defines its own absl flags).

A tiny FILM (two pyramid levels, two filters) trains for two steps on a synthetic 20 x 32 x 32
stack; the run folder must be one ``emzoo.load`` away. Bad input must give exactly one
``emzoo: error:`` line on stderr, a non-zero exit, no traceback, and no run folder (or an
existing one left untouched). The library side (resume, summaries, strategies) is covered by
tests/training/.
"""

import json
import os

import numpy as np
import pytest

from app_runner import assert_one_line_error, run_emzoo
from emzoo.data.volumes import write_volume
from emzoo.testing import TINY_FILM
from emzoo_test_helpers import set_flags

TINY_FILM_FLAGS = set_flags(TINY_FILM)
# Gaps 1 and 2: the validation fifth of 20 slices (4 slices) holds gap-1 triplets only.
TINY_RUN = ["--crop", "16", "--batch-size", "2", "--steps", "2", "--loss", "l1", "--gaps", "1,2",
            "--checkpoint-every", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 20 x 32 x 32 uint8 stack (smooth structure plus noise) and a single 2-D image."""
    import tifffile

    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:20, 0:32, 0:32]
    stack = 127 + 60 * np.sin(x / 4 + z / 3) + 40 * np.cos(y / 5 - z / 4) + rng.normal(0, 8, z.shape)
    write_volume(str(folder / "stack.tif"), np.clip(stack, 0, 255).astype(np.uint8),
                 voxel_size=(10, 10, 10))
    tifffile.imwrite(str(folder / "image.tif"), rng.integers(0, 255, (32, 32), dtype=np.uint8))
    return folder


def test_tiny_film_run_writes_a_loadable_run_folder(tmp_path, data):
    import emzoo

    run = tmp_path / "run"
    done = run_emzoo(["train", "film", "--data", str(data / "stack.tif"), "-o", str(run),
                      "--jit-compile", "false"] + TINY_FILM_FLAGS + TINY_RUN, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # `film` has no trained weights: the start line says it starts from scratch, with its loss.
    assert "emzoo: training film from scratch (random weights: it has no trained weights)" in done.stderr
    assert "loss l1" in done.stderr
    assert "2 steps done" in done.stderr and "emzoo.load(" in done.stderr
    assert done.stdout.strip() == ""  # the progress goes to stderr, like every other line
    # stderr is a pipe, not a terminal: plain lines, no bar redrawn with \r and ANSI codes
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr
    for name in ("run_config.json", "config.json", "model.weights.h5"):
        assert (run / name).is_file(), sorted(os.listdir(run))
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]

    record = json.loads((run / "run_config.json").read_text())
    assert record["config"]["model"] == "film" and record["config"]["steps"] == 2
    assert record["config"]["overrides"]["filters"] == 2
    assert record["config"]["overrides"]["flow_filters"] == [2, 2]
    assert record["config"]["jit_compile"] is False
    assert record["command"][:2] == ["emzoo", "train"] and record["emzoo_version"] == emzoo.__version__

    entry = json.loads((run / "config.json").read_text())
    assert entry["architecture"] == "film"
    assert entry["config"]["filters"] == 2 and entry["config"]["pyramid_levels"] == 2
    assert entry["metadata"]["training"]["steps"] == 2
    assert set(entry["metadata"]["validation"]) >= {"loss", "psnr", "ssim", "ie"}
    assert all(np.isfinite(v) for v in entry["metadata"]["validation"].values())

    model = emzoo.load(str(run))
    assert model.architecture == "film" and model.get_config()["filters"] == 2
    frames = np.random.default_rng(1).random((2, 1, 16, 16, 1), dtype=np.float32)
    out = model.predict({"x0": frames[0], "x1": frames[1], "time": np.full((1, 1), 0.5, np.float32)},
                        verbose=0)
    image = out["image"] if isinstance(out, dict) else out
    assert np.asarray(image).shape == (1, 16, 16, 1) and np.all(np.isfinite(image))


@pytest.mark.parametrize("model, data_name, flags, match", [
    ("film", "missing.tif", [], "No such file"),
    ("film", "image.tif", [], "2-D image"),
    ("film", "stack.tif", ["--crop", "64"], "crop is larger"),
    ("film", "stack.tif", ["--steps", "0"], "steps"),
    ("film", "stack.tif", ["--mixed-precision", "--precision", "float32"], "contradict"),
    ("no-such-model", "stack.tif", [], "Unknown model"),
    ("film", "stack.tif", ["--set", "filters"], "key=value"),
    ("film", "stack.tif", ["--set", "no_such_key=3"], "no_such_key"),
    # A value of the wrong type (slow: one more TensorFlow start-up).
    pytest.param("film", "stack.tif", ["--set", "filters=abc"], "filters",
                 marks=[pytest.mark.slow]),
])
def test_bad_input_gives_one_line_and_no_run_folder(tmp_path, data, model, data_name, flags, match):
    before = sorted(os.listdir(tmp_path))
    # The flags of the bad case come last, so they override the tiny run's.
    done = run_emzoo(["train", model, "--data", str(data / data_name), "--output",
                      str(tmp_path / "run")] + TINY_FILM_FLAGS + TINY_RUN + flags, cwd=tmp_path)
    assert_one_line_error(done, match, tmp_path, before)


def test_existing_run_folder_is_left_untouched(tmp_path, data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("precious")
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["train", "film", "--data", str(data / "stack.tif"), "--output", str(run)]
                     + TINY_FILM_FLAGS + TINY_RUN, cwd=tmp_path)
    assert_one_line_error(done, "not empty", tmp_path, before)
    assert sorted(os.listdir(run)) == ["notes.txt"] and (run / "notes.txt").read_text() == "precious"


@pytest.mark.slow   # a fine-tuning run of the default; in-process: tests/training
def test_default_is_fine_tuned_from_its_bundled_weights_with_its_loss(tmp_path, data):
    """``emzoo train default`` starts from the bundled weights (one step at a negligible learning
    rate leaves them unchanged) and continues with the loss the entry was trained with (l2)."""
    import emzoo

    run = tmp_path / "run"
    done = run_emzoo(["train", "default", "--data", str(data / "stack.tif"), "-o", str(run),
                      "--steps", "1", "--checkpoint-every", "1", "--crop", "16", "--batch-size", "2",
                      "--gaps", "1", "--learning-rate", "1e-12"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "emzoo: fine-tuning default from its bundled weights, 1 steps" in done.stderr
    assert "loss l2" in done.stderr
    record = json.loads((run / "run_config.json").read_text())
    assert record["config"]["loss"] == "l2" and record["config"]["weights"] == "auto"
    entry = json.loads((run / "config.json").read_text())
    assert entry["metadata"]["training"]["initial_weights"] == (
        "fine-tuning default from its bundled weights")
    bundled = emzoo.load("default", compile=False).get_weights()
    tuned = emzoo.load(str(run), compile=False).get_weights()
    for a, b in zip(bundled, tuned):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)


def test_from_scratch_contradicting_weights_is_one_line(tmp_path, data):
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["train", "default", "--data", str(data / "stack.tif"), "-o",
                      str(tmp_path / "run"), "--from-scratch", "--weights", "x.weights.h5"]
                     + TINY_RUN, cwd=tmp_path)
    assert_one_line_error(done, "--from-scratch and --weights", tmp_path, before)


def test_inference_commands_share_one_default_batch_size():
    """upscale, repair and evaluate take the engine's default batch size (no number of their own,
    in the CLI or the library); train's --batch-size is a different quantity and says so."""
    import inspect

    from emzoo.engine import repair_volume, upscale_volume
    from emzoo.evaluate import evaluate_volume

    for function in (upscale_volume, repair_volume, evaluate_volume):
        assert inspect.signature(function).parameters["batch_size"].default is None, function
    for command in ("upscale", "repair", "evaluate"):
        done = run_emzoo([command, "--help"])
        block = done.stdout.split("--batch-size:", 1)[1].split("\n  -", 1)[0]
        assert "4 with a GPU, 1 on CPU" in " ".join(block.split()), (command, block)
        assert "(default: '" not in block, (command, block)  # absl's line for a set default
    done = run_emzoo(["train", "--help"])
    block = " ".join(done.stdout.split("--batch-size:", 1)[1].split("\n  -", 1)[0].split())
    assert "unlike the --batch-size of upscale, repair and evaluate" in block
    assert "-o,--output" in done.stdout


@pytest.mark.parametrize("missing, expected", [
    ("--data", "Expected --data PATH[,PATH...]: the training volumes"),
    ("--output", "Expected --output DIR: the run folder")])
def test_a_missing_data_or_output_flag_says_what_it_takes(tmp_path, data, missing, expected):
    args = {"--data": str(data / "stack.tif"), "--output": str(tmp_path / "run")}
    args.pop(missing)
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["train", "film"] + [item for pair in args.items() for item in pair], cwd=tmp_path)
    assert_one_line_error(done, "needs " + missing, tmp_path, before)
    assert expected in done.stderr
