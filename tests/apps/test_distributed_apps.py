"""``emzoo upscale --workers / --resume / --allow-incomplete`` end to end, through subprocesses.

The whole job (the app and its Dask workers) is killed with SIGKILL after a few blocks are
recorded; ``--resume`` finishes it, equal to an uninterrupted run, without recomputing the recorded
blocks. Refused requests give one line, no traceback, and write nothing.
"""

import os
import signal
import time

import numpy as np
import pytest

psutil = pytest.importorskip("psutil")
pytest.importorskip("distributed")

from app_runner import assert_one_line_error, run_emzoo, start_emzoo  # noqa: E402
from emzoo.data.volumes import create_volume, open_volume, read_volume, write_volume  # noqa: E402
from emzoo.engine import upscale_volume  # noqa: E402
from emzoo.engine.records import SIDE_FOLDER, BlockRecords  # noqa: E402
from emzoo_test_helpers import random_volume  # noqa: E402

# Small chunks and blocks: 216 blocks for 17 x 64 x 96, so the job is still running when killed.
FLAGS = ["--tile", "32", "--overlap", "8", "--chunks", "2,16,16", "--block-size", "16",
         "--precision", "float32", "--xla", "off", "--quiet"]


@pytest.fixture
def zarr_stack(tmp_path):
    volume = random_volume((9, 64, 96), np.uint8, seed=6)
    write_volume(str(tmp_path / "in.zarr"), volume, (40, 8, 8))
    return str(tmp_path / "in.zarr"), volume


def _kill_tree(process):
    """SIGKILL a process and everything it started (the Dask nannies' worker processes)."""
    family = [process] + process.children(recursive=True)
    for member in family:
        try:
            member.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)


@pytest.mark.slow   # a killed app run on Dask, then its resume; in-process: tests/engine/test_distributed.py
def test_a_job_killed_with_sigkill_resumes_to_the_same_output(zarr_stack, tiny_model, tmp_path):
    source, volume = zarr_stack
    output = tmp_path / "out.zarr"
    args = ["upscale", source, "-o", str(output), "--model", tiny_model, "--workers", "2"] + FLAGS
    job = start_emzoo(args)
    records = BlockRecords(str(output))
    deadline = time.monotonic() + 300
    while len(records.done()) < 3 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, f"the job ended before it could be killed: {job.communicate()}"
    _kill_tree(psutil.Process(job.pid))
    job.communicate()
    finished = records.done()
    assert 3 <= len(finished) < 216
    assert open_volume(str(output), allow_incomplete=True).complete is False

    done = run_emzoo(args + ["--resume"])  # which blocks: tests/engine/test_distributed.py
    assert done.returncode == 0, done.stderr
    assert f"{216 - len(finished)} of 216 blocks computed ({len(finished)} done before)" in done.stdout
    expected = upscale_volume(volume, tiny_model, factor=2, tile=32, overlap=8, jit_compile=False,
                              precision="float32", progress=False)["array"]
    out, voxel = read_volume(str(output))
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert voxel == pytest.approx((20, 8, 8))
    assert not (output / SIDE_FOLDER).exists()


def test_an_incomplete_output_is_refused_as_an_input(tmp_path):
    create_volume(str(tmp_path / "half.zarr"), (5, 16, 16), "uint8").publish_incomplete({"plan": {}})
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["upscale", str(tmp_path / "half.zarr"), "-o", str(tmp_path / "out.tif")])
    assert_one_line_error(done, "--allow-incomplete", tmp_path, before)


@pytest.mark.parametrize("case, match", [
    ("not-3d", "not a grey-level 3-D volume"),
    ("missing-array", "not found in the Zarr store"),
    ("existing-output", "already exists"),
    ("tiff-output", "Zarr, OME-Zarr or N5 outputs only"),
    ("resume-alone", "continues a blockwise job"),
    ("no-scheduler", "does not answer"),
])
def test_bad_requests_give_one_line_and_write_nothing(zarr_stack, tiny_model, tmp_path, case, match):
    import zarr

    source, _ = zarr_stack
    output, extra, prelude = str(tmp_path / "out.zarr"), ["--workers", "2"], ""
    if case == "not-3d":
        zarr.create_array(str(tmp_path / "four.zarr"), shape=(2, 9, 8, 8), chunks=(1, 9, 8, 8), dtype="uint8")
        source = str(tmp_path / "four.zarr")
    elif case == "missing-array":
        source += ":/missing"
    elif case == "existing-output":
        write_volume(output, np.zeros((3, 8, 8), np.uint8))
    elif case == "tiff-output":
        output = str(tmp_path / "out.tif")
    elif case == "resume-alone":
        extra = ["--resume"]
    elif case == "no-scheduler":
        extra = ["--scheduler", "tcp://127.0.0.1:9"]
        prelude = "import emzoo.engine.cluster as c\nc.SCHEDULER_TIMEOUT = 1\n"
    before = sorted(os.listdir(tmp_path))
    done = run_emzoo(["upscale", source, "-o", output, "--model", tiny_model] + extra, prelude=prelude)
    assert_one_line_error(done, match, tmp_path, before)
