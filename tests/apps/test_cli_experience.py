"""What a user sees on every run: no TensorFlow chatter, one summary line, progress fit for logs,
flag mistakes refused before TensorFlow is imported, a missing TensorFlow in one line, and SIGTERM
ending in 143 with nothing partial left behind."""

import os
import signal
import time

import pytest

from app_runner import NO_TENSORFLOW, assert_one_line_error, run_emzoo, start_emzoo

TF_CHATTER = ("I0000", "W0000", "E0000", "WARNING: All log messages")


def test_a_run_prints_one_summary_line_and_no_tensorflow_logs(tmp_path, tiny_model, stack):
    # TF_CPP_MIN_LOG_LEVEL unset, as in a user's shell; stderr is a pipe, as in a batch job's log.
    done = run_emzoo(["upscale", stack, "-o", tmp_path / "out.tif", "--model", tiny_model],
                     cwd=tmp_path, TF_CPP_MIN_LOG_LEVEL=None)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith(TF_CHATTER)] == []
    assert done.stdout.splitlines() == [done.stdout.splitlines()[0]]  # one line, on stdout
    assert done.stdout.startswith(f"Wrote {tmp_path / 'out.tif'}: 5 x 24 x 40 uint8")
    assert "upscale x2" not in done.stderr  # the engine's own summary is not printed as well
    assert "\r" not in done.stderr and len(done.stderr.splitlines()) <= 2  # no redraws in logs


def test_verbose_is_accepted_by_every_command(tmp_path):
    done = run_emzoo(["list", "default", "--verbose"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "default" in done.stdout


def test_missing_tensorflow_is_one_line_naming_the_extra(tmp_path, stack):
    listed = run_emzoo(["list"], cwd=tmp_path, prelude=NO_TENSORFLOW)
    assert listed.returncode == 0 and "default" in listed.stdout, listed.stderr
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["upscale", stack, "-o", tmp_path / "out.tif"], cwd=tmp_path,
                     prelude=NO_TENSORFLOW)
    assert_one_line_error(done, 'pip install "emzoo[cpu]"', tmp_path, before)
    assert "TensorFlow is not installed" in done.stderr and "emzoo[gpu]" in done.stderr


@pytest.mark.parametrize("args, match", [
    (["upscale", "{stack}", "-o", "out.tif", "--tile", "0"], "--tile"),
    (["upscale", "{stack}", "-o", "out.tif", "--tile", "8"], "size multiple"),  # default's is 16
    (["upscale", "{stack}", "-o", "out.tif", "--tile", "16", "--overlap", "16"],
     "--overlap must be smaller than --tile"),
    (["upscale", "{stack}", "-o", "out.xyz"], "Unknown output format"),
    (["upscale", "{stack}", "-o", "out.tif", "--batch-size", "0"], "--batch-size"),
    (["upscale", "{stack}", "-o", "{stack}"], "--overwrite"),
    (["repair", "{stack}", "-o", "out.tif", "--slices", "1", "--overlap", "-1"], "--overlap"),
    (["evaluate", "default", "--data", "{stack}", "--baselines", "linear,bicubic"],
     "--baselines"),
    (["evaluate", "default", "--data", "{stack}", "--crop", "1000"], "--crop"),
    (["export", "default", "--weights", "missing.weights.h5", "-o", "exported"], "--weights"),
    (["convert", "film", "missing_saved_model", "--name", "mine"], "SavedModel folder"),
    (["upscale", "{stack}", "-o", "out.tif", "--factor", "1e9"], "TiB"),  # before the model
    (["train", "default", "--data", "{stack}", "-o", "run", "--steps", "0"], "--steps"),
    (["train", "default", "--data", "missing.tif", "-o", "run"], "missing.tif"),
    (["train", "flim", "--data", "{stack}", "-o", "run"], "Did you mean: film"),
    (["train", "default", "--data", "{stack}", "-o", "run", "--crop", "4000"], "crop"),
])
def test_flag_mistakes_are_refused_before_tensorflow_is_imported(tmp_path, stack, args, match):
    # With `import tensorflow` failing, the flag's own message proves the check came first.
    args = [str(arg).format(stack=stack) for arg in args]
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(args, cwd=tmp_path, prelude=NO_TENSORFLOW)
    assert_one_line_error(done, match, tmp_path, before)
    assert "TensorFlow" not in done.stderr


def test_messages_name_the_flag_not_the_python_argument(tmp_path, stack):
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["upscale", stack, "-o", stack], cwd=tmp_path)
    assert_one_line_error(done, "--overwrite", tmp_path, before)
    assert "overwrite=True" not in done.stderr


SLOW_WRITES = """
import os, time
from emzoo.data.volumes import VolumeWriter
_write = VolumeWriter.write
def write(self, *args):
    open(os.environ["EMZOO_TEST_STARTED"], "a").close()
    time.sleep(0.25)
    return _write(self, *args)
VolumeWriter.write = write
"""


def test_sigterm_exits_143_says_terminated_and_leaves_nothing(tmp_path, tiny_model, stack):
    work = tmp_path / "work"
    work.mkdir()
    started = tmp_path / "started"
    before = sorted(os.listdir(work))
    process = start_emzoo(["upscale", stack, "-o", work / "out.tif", "--model", tiny_model,
                           "--factor", "8", "--quiet"], cwd=work, prelude=SLOW_WRITES,
                          EMZOO_TEST_STARTED=str(started))
    deadline = time.monotonic() + 300
    while not started.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists(), process.communicate()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "Traceback" not in err and "emzoo: terminated" in err
    assert sorted(os.listdir(work)) == before  # no output, no temporary file
