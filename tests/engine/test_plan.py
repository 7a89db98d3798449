"""Tests of emzoo.engine.plan and emzoo.engine.runner: one checked plan per job, run any way.

A plan checks everything once, before any work; its JSON rebuilds the same plan (the Dask task,
the resume record, the workers' cache key); ``run`` takes a progress callback and a cancel event;
the library's messages name arguments, never command-line flags.
"""

import os
import threading

import numpy as np
import pytest

from emzoo.data.volumes import ArrayVolume, open_volume, write_volume
from emzoo.engine import (Blockwise, EngineOptions, JobPlan, plan_repair, plan_upscale,
                          repair_volume, run, upscale_volume)
from emzoo.engine.plan import DEFAULT_TILE, WHOLE_SLICE_MAX
from emzoo.errors import EmzooError, JobCancelled
from emzoo_test_helpers import MeanModel, random_volume


class CountingVolume(ArrayVolume):
    """An array volume that counts how often its value range is read (a whole-volume pass)."""

    def __init__(self, array):
        super().__init__(array)
        self.range_reads = 0

    def value_range(self):
        self.range_reads += getattr(self, "_range", None) is None  # a pass over the data
        return super().value_range()


def test_plan_json_rebuilds_the_same_plan(tmp_path):
    path = str(tmp_path / "in.tif")
    write_volume(path, (random_volume((4, 8, 8)) * 255).astype(np.uint8), voxel_size=(40, 4, 4))
    plans = [plan_upscale(path, 2.5, str(tmp_path / "out.zarr"),
                          options=EngineOptions(tile=32, overlap=8, batch_size=2, xla=False),
                          blockwise=Blockwise(workers=2, block_size=64), chunks=(2, 8, 8)),
             plan_repair(path, "1-2", options=EngineOptions(precision="float32"))]
    for plan in plans:
        again = JobPlan.from_json(plan.to_json())
        assert again == plan and again.to_json() == plan.to_json()
        assert again.source is None and again.open_input().shape == (4, 8, 8)
    assert plans[0].input == os.path.abspath(path) and plans[0].output_voxel_size == (16, 4, 4)
    assert plans[0].kind == "upscale x2.5" and plans[1].repaired == [1, 2]
    assert plans[0] != plans[1]


def test_a_plan_reads_a_float_volume_range_once_for_the_whole_job():
    volume = CountingVolume(random_volume((3, 8, 8)) * 7.0)
    plan = plan_upscale(volume, 2)
    assert volume.range_reads == 1 and plan.value_range == volume.value_range()
    run(plan, MeanModel(), progress=False)
    assert volume.range_reads == 1
    again = JobPlan.from_json(plan.to_json())  # e.g. in a Dask worker: the range travels along
    assert again.value_range == plan.value_range


def test_the_wrappers_equal_plan_then_run():
    volume = random_volume((5, 8, 8))
    planned = run(plan_upscale(volume, 4, options=EngineOptions(batch_size=3)), MeanModel(),
                  progress=False)
    direct = upscale_volume(volume, MeanModel(), factor=4, batch_size=3, progress=False)
    np.testing.assert_array_equal(planned.array, direct["array"])
    assert set(direct) == set(planned.to_dict()) and direct["factor"] == planned.factor == 4.0
    repaired = run(plan_repair(volume, [2]), MeanModel(), progress=False)
    np.testing.assert_array_equal(
        repaired.array, repair_volume(volume, [2], MeanModel(), progress=False)["array"])
    assert "factor" not in repaired.to_dict() and repaired.repaired == [2]


@pytest.mark.parametrize("call, match", [
    (lambda v: plan_upscale(v, 4, isotropic=True), "`factor` and `isotropic` exclude each other"),
    (lambda v: upscale_volume(v, MeanModel(), block_size=512), "`block_size` applies to blockwise"),
    (lambda v: plan_upscale(v, blockwise=Blockwise(resume=True)), "`resume` continues"),
    (lambda v: plan_upscale(v, chunks=(1, 8, 8)), "`chunks` applies to chunked outputs"),
    (lambda v: plan_upscale(v, options=EngineOptions(batch_size=0)), "`batch_size`"),
    (lambda v: plan_upscale(v, options={"tile": 64}), "an EngineOptions"),
])
def test_the_library_refuses_what_the_command_line_refuses_in_its_own_words(call, match):
    # The library ignored block_size without workers and factor with isotropic; now both refuse.
    with pytest.raises(EmzooError, match=match) as error:
        call(random_volume((3, 8, 8)))
    assert "--" not in str(error.value) and "\n" not in str(error.value)


def test_without_a_tile_both_engines_process_slices_alike():
    assert EngineOptions().for_slices(WHOLE_SLICE_MAX, 64).tile is None
    assert EngineOptions().for_slices(WHOLE_SLICE_MAX + 1, 64).tile == DEFAULT_TILE
    assert EngineOptions(tile=256).for_slices(4096, 4096).tile == 256
    assert plan_upscale(random_volume((2, 8, 8))).options.tile is None


def test_progress_goes_to_a_callback():
    seen = []
    result = run(plan_upscale(random_volume((3, 8, 8)), 2), MeanModel(),
                 progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 5) for k in range(1, 6)] and result.output_shape == (5, 8, 8)


def test_a_cancelled_job_leaves_nothing_behind(tmp_path):
    stop = threading.Event()

    def cancel_after_two(done, total):
        if done == 2:
            stop.set()
    plan = plan_upscale(random_volume((4, 8, 8)), 2, str(tmp_path / "out.tif"))
    with pytest.raises(JobCancelled, match="no output was written"):
        run(plan, MeanModel(), progress=cancel_after_two, cancel=stop)
    assert os.listdir(tmp_path) == []


def test_a_plan_from_json_runs_like_the_original(tmp_path):
    path = str(tmp_path / "in.tif")
    write_volume(path, (random_volume((3, 8, 8)) * 255).astype(np.uint8))
    plan = plan_upscale(path, 2, str(tmp_path / "a.tif"))
    run(plan, MeanModel(), progress=False)
    copy = JobPlan.from_json(plan.to_json().replace("a.tif", "b.tif"))
    run(copy, MeanModel(), progress=False)
    with open_volume(str(tmp_path / "a.tif")) as a, open_volume(str(tmp_path / "b.tif")) as b:
        np.testing.assert_array_equal(a.read_range(0, 5), b.read_range(0, 5))


def test_options_are_checked_once_where_they_are_made():
    with pytest.raises(EmzooError, match="`xla`"):
        EngineOptions(xla="sometimes")
    with pytest.raises(EmzooError, match="`precision`"):
        EngineOptions(precision="float16")
    with pytest.raises(EmzooError, match="exclude each other"):
        Blockwise(workers=2, scheduler="tcp://host:8786")
    with pytest.raises(EmzooError, match="smaller than the model's size multiple"):
        EngineOptions(tile=8).check_tile(16)
    with pytest.raises(EmzooError, match="`overlap` must be smaller than `tile`"):
        EngineOptions(tile=16, overlap=16).check_tile(16)
    assert EngineOptions(precision="BF16").precision == "bf16"


def test_nothing_is_set_on_the_users_model_and_its_caches_go_with_it():
    import gc
    import weakref

    from emzoo_test_helpers import TinyConvModel

    model = TinyConvModel()
    before = set(vars(model))
    upscale_volume(random_volume((3, 16, 16)), model, factor=2, progress=False)
    assert set(vars(model)) == before  # was: _emzoo_compiled set on the model
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None
