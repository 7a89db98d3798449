"""Tests of emzoo.engine.distributed (with its cluster and worker modules): the blockwise engine on
a local Dask cluster of 2 worker processes equals the single-process engine, survives a killed
worker, resumes, refuses bad requests before writing anything, and keeps the workers' TensorFlow
start-up lines off the terminal."""

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from emzoo.data.volumes import open_regions, open_volume, read_volume, write_volume  # noqa: E402
from emzoo.engine import cluster as dask_cluster  # noqa: E402
from emzoo.engine import repair_volume, upscale_volume  # noqa: E402
from emzoo.engine.records import SIDE_FOLDER, BlockRecords  # noqa: E402
from emzoo.errors import EmzooError, VolumeError  # noqa: E402
from emzoo_test_helpers import MeanModel, random_volume, save_tiny_film  # noqa: E402

TILES = dict(tile=32, overlap=8, jit_compile=False, precision="float32")
BLOCKS = dict(chunks=(4, 32, 32), block_size=32, progress=False)


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes (one thread each) on 127.0.0.1, shared by this module's tests."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR,
                                  env={"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                                       "TF_NUM_INTEROP_THREADS": "1"}) as local:
        with distributed.Client(local, set_as_default=False) as client:
            yield local.scheduler_address, client


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A saved tiny FILM, a 9 x 64 x 96 uint8 Zarr input and its array."""
    folder = tmp_path_factory.mktemp("blockwise")
    volume = random_volume((9, 64, 96), np.uint8, seed=5)
    write_volume(str(folder / "in.zarr"), volume, (40, 8, 8))
    return {"model": save_tiny_film(folder), "input": str(folder / "in.zarr"), "array": volume}


def _single(data, factor=2):
    return upscale_volume(data["array"], data["model"], factor=factor, progress=False, **TILES)["array"]


# slow: the fast run compares blockwise with single-process output in the resume and
# in-memory-model tests below
@pytest.mark.slow
@pytest.mark.parametrize("factor, output", [(2, "out.ome.zarr"), (2.5, "out.n5")])
def test_blockwise_equals_the_single_process_engine(cluster, data, tmp_path, factor, output):
    address, _ = cluster
    path = str(tmp_path / output)
    result = upscale_volume(data["input"], data["model"], factor=factor, output=path, scheduler=address,
                            **TILES, **BLOCKS)
    out, voxel = read_volume(path)
    expected = _single(data, factor)
    assert out.shape == expected.shape == result["output_shape"]
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert voxel == pytest.approx((40 / factor, 8, 8))
    assert result["computed"] == result["blocks"] > 10 and result["skipped"] == 0
    assert open_volume(path).complete and not os.path.exists(os.path.join(path, SIDE_FOLDER))


def test_float_data_outside_0_1_keeps_the_whole_volume_s_range_in_every_block(cluster, data, tmp_path):
    """Each block is normalised by the range of the whole volume (the client's), not its own."""
    address, _ = cluster
    volume = data["array"].astype(np.float32) / 255 * 7 - 2   # values in [-2, 5]
    volume[0, 0, 0], volume[-1, -1, -1] = -2.0, 5.0          # the extremes in one block each
    write_volume(str(tmp_path / "in.zarr"), volume, (40, 8, 8))
    path = str(tmp_path / "out.zarr")
    upscale_volume(str(tmp_path / "in.zarr"), data["model"], factor=2, output=path, scheduler=address,
                   **TILES, **BLOCKS)
    expected = upscale_volume(volume, data["model"], factor=2, progress=False, **TILES)["array"]
    out = read_volume(path)[0]
    assert out.dtype == np.float32 and out.min() >= -2 and out.max() <= 5
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_without_a_tile_blocks_are_whole_slices_as_in_the_single_process_engine(cluster, data, tmp_path):
    address, _ = cluster
    path = str(tmp_path / "out.zarr")
    result = upscale_volume(data["input"], data["model"], factor=2, output=path, scheduler=address,
                            jit_compile=False, precision="float32", **BLOCKS)
    expected = upscale_volume(data["array"], data["model"], factor=2, jit_compile=False,
                              precision="float32", progress=False)["array"]
    assert result["blocks"] == 5  # 17 slices in z-chunks of 4, each block whole slices
    assert np.abs(read_volume(path)[0].astype(int) - expected).max() <= 1


def test_blockwise_repair_equals_the_single_process_engine(cluster, data, tmp_path):
    address, _ = cluster
    path = str(tmp_path / "fixed.zarr")
    result = repair_volume(data["input"], "2,5-6", data["model"], output=path, scheduler=address,
                           **TILES, **BLOCKS)
    expected = repair_volume(data["array"], "2,5-6", data["model"], progress=False, **TILES)["array"]
    out = read_volume(path)[0]
    assert result["repaired"] == [2, 5, 6]
    assert np.abs(out.astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(out[[0, 1, 3, 4, 7, 8]], data["array"][[0, 1, 3, 4, 7, 8]])


@pytest.mark.slow   # a worker killed on a local cluster
def test_a_killed_worker_has_its_blocks_redone(cluster, data, tmp_path):
    address, client = cluster
    path = str(tmp_path / "out.zarr")
    records = BlockRecords(path)
    found = {}
    job = threading.Thread(target=lambda: found.update(upscale_volume(
        data["input"], data["model"], factor=2, output=path, scheduler=address, **TILES,
        chunks=(2, 16, 16), block_size=16, progress=False)))
    before = set(client.run(os.getpid).values())
    job.start()
    deadline = time.monotonic() + 120
    while len(records.done()) < 2 and job.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    busy = [worker for worker, keys in client.processing().items() if keys]
    assert busy and job.is_alive(), "the job ended before a worker could be killed"
    victim = client.run(os.getpid, workers=busy[:1])[busy[0]]
    os.kill(victim, signal.SIGKILL)
    killed_at = len(records.done())
    job.join(timeout=300)
    assert not job.is_alive() and found, "the job did not finish after a worker was killed"
    assert killed_at < found["blocks"]
    assert victim not in set(client.run(os.getpid).values()) and victim in before
    assert np.abs(read_volume(path)[0].astype(int) - _single(data)).max() <= 1


def test_resume_computes_only_the_blocks_not_recorded(cluster, data, tmp_path):
    address, client = cluster
    path = str(tmp_path / "out.zarr")
    upscale_volume(data["input"], data["model"], factor=2, output=path, scheduler=address, **TILES, **BLOCKS)
    regions = open_regions(path)  # make it look killed: incomplete, 7 blocks recorded, zeros elsewhere
    marker = regions.marker
    regions.set_marker({**marker, "complete": False})
    for block in range(7):
        BlockRecords(path).record(block)
    for z in range(4, 17, 4):  # blocks 11, 17, 23, 29: not recorded, so redone
        regions.write(z, 32, 64, np.zeros((min(4, 17 - z), 32, 32), np.uint8))
    with pytest.raises(VolumeError, match="allow-incomplete"):
        open_volume(path)
    with distributed.get_task_stream(client) as stream:  # the scheduler's record of the tasks run
        result = upscale_volume(data["input"], data["model"], factor=2, output=path, scheduler=address,
                                resume=True, **TILES, **BLOCKS)
    assert (result["computed"], result["skipped"]) == (result["blocks"] - 7, 7)
    computed = {int(str(task["key"]).rsplit("-", 1)[1]) for task in stream.data
                if str(task["key"]).startswith("emzoo-block-")}  # keys end in the block's id
    assert computed == set(range(7, result["blocks"]))
    assert np.abs(read_volume(path)[0].astype(int) - _single(data)).max() <= 1
    again = upscale_volume(data["input"], data["model"], factor=2, output=path, scheduler=address,
                           resume=True, **TILES, **BLOCKS)
    assert again["already_complete"] and again["computed"] == 0
    with pytest.raises(VolumeError, match="factor was '2', this job's is '4'"):
        upscale_volume(data["input"], data["model"], factor=4, output=path, scheduler=address, resume=True,
                       **TILES, **BLOCKS)


def test_an_in_memory_model_is_saved_for_the_workers(cluster, data, tmp_path):
    import emzoo

    address, _ = cluster
    model = emzoo.load(data["model"], compile=False)
    path = str(tmp_path / "out.zarr")
    upscale_volume(data["input"], model, factor=2, output=path, scheduler=address, **TILES, **BLOCKS)
    assert np.abs(read_volume(path)[0].astype(int) - _single(data)).max() <= 1
    assert open_volume(path).marker["plan"]["model"].startswith("in-memory FILM (weights sha256 ")
    assert not os.path.exists(os.path.join(path, SIDE_FOLDER))  # its saved copy went with the records


TF_START_UP = ("absl::InitializeLog", "oneDNN", "cpu_feature_guard")


@pytest.mark.slow   # a fresh process and its two workers each import TensorFlow
def test_local_workers_keep_tensorflow_start_up_lines_off_stderr(data, tmp_path):
    # Each worker process imports TensorFlow, whose C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL;
    # run as a user would (variable unset, the main process quieted as the apps quiet it).
    path = str(tmp_path / "out.zarr")
    code = ("from emzoo.engine.quiet import quiet_logs\n"
            "quiet_logs(verbose=False)\n"
            "from emzoo.engine import upscale_volume\n"
            f"upscale_volume({data['input']!r}, {data['model']!r}, factor=2, output={path!r}, workers=2, "
            "tile=32, overlap=8, jit_compile=False, precision='float32', chunks=(8, 64, 96), "
            "progress=False)\n")
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert open_volume(path).complete
    assert [line for line in done.stderr.splitlines() if any(text in line for text in TF_START_UP)] == []


# -------------------------------------------------------------------------- refused requests
def _refused(tmp_path, error, match, **kwargs):
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(error, match=match) as caught:
        upscale_volume(**kwargs)
    assert "\n" not in str(caught.value)
    assert sorted(os.listdir(tmp_path)) == before


def test_an_incomplete_output_is_refused_as_an_input_unless_allowed(data, tmp_path):
    from emzoo.data.volumes import create_volume

    create_volume(str(tmp_path / "half.zarr"), (9, 64, 96), "uint8").publish_incomplete({"plan": {}})
    _refused(tmp_path, VolumeError, "allow-incomplete", volume=str(tmp_path / "half.zarr"),
             model=MeanModel(), output=None)
    out = upscale_volume(str(tmp_path / "half.zarr"), MeanModel(), allow_incomplete=True,
                         progress=False)["array"]
    assert out.shape == (17, 64, 96) and not out.any()


@pytest.mark.parametrize("name", ["out.ome.zarr", "out.zarr:/volumes/raw", "out.n5"])
def test_single_process_chunked_outputs_say_complete_only_when_closed(tmp_path, name):
    import shutil

    from emzoo.data.volumes import create_volume

    path = str(tmp_path / name)
    writer = create_volume(path, (6, 8, 8), "uint8", (40, 4, 4), chunks=(2, 8, 8))
    for z in range(3):  # one chunk row written, one half-filled
        writer.write(z, np.full((8, 8), z, np.uint8))
    left = str(tmp_path / ("left" + name[3:]))  # what a killed job leaves, under an output's name
    shutil.copytree(writer.temp_path, left.split(":")[0])
    with pytest.raises(VolumeError, match="allow-incomplete"):
        open_volume(left)
    for z in range(3, 6):
        writer.write(z, np.full((8, 8), z, np.uint8))
    writer.close()
    with open_volume(path) as done:
        assert done.marker == {"complete": True} and done.voxel_size == (40, 4, 4)
        assert done.read_range(0, 6)[:, 0, 0].tolist() == list(range(6))


def test_bad_requests_are_refused_before_anything_is_written(data, tmp_path, monkeypatch):
    import zarr

    zarr.create_array(str(tmp_path / "four.zarr"), shape=(2, 9, 8, 8), chunks=(1, 9, 8, 8), dtype="uint8")
    write_volume(str(tmp_path / "done.zarr"), np.zeros((3, 8, 8), np.uint8))
    model = data["model"]
    _refused(tmp_path, VolumeError, "not a grey-level 3-D volume", volume=str(tmp_path / "four.zarr"),
             model=model, output=str(tmp_path / "out.zarr"), workers=2)
    _refused(tmp_path, VolumeError, "not found in the Zarr store", volume=data["input"] + ":/missing",
             model=model, output=str(tmp_path / "out.zarr"), workers=2)
    _refused(tmp_path, VolumeError, "already exists", volume=data["input"], model=model,
             output=str(tmp_path / "done.zarr"), workers=2)
    _refused(tmp_path, VolumeError, "Zarr, OME-Zarr or N5 outputs only", volume=data["input"], model=model,
             output=str(tmp_path / "out.tif"), workers=2)
    _refused(tmp_path, EmzooError, "reads its input from a path", volume=data["array"], model=model,
             output=str(tmp_path / "out.zarr"), workers=2)
    _refused(tmp_path, EmzooError, "continues a blockwise job", volume=data["input"], model=model,
             output=str(tmp_path / "out.zarr"), resume=True)
    monkeypatch.setattr(dask_cluster, "SCHEDULER_TIMEOUT", 1)
    _refused(tmp_path, EmzooError, "does not answer", volume=data["input"], model=model,
             output=str(tmp_path / "out.zarr"), scheduler="tcp://127.0.0.1:9")
