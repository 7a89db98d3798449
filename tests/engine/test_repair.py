"""Tests of emzoo.engine.repair: slice lists, runs of damaged slices, files."""

import numpy as np
import pytest

from emzoo.data.volumes import open_volume
from emzoo.engine import parse_slices, repair_volume
from emzoo.errors import EmzooError
from emzoo_test_helpers import MeanModel, random_volume


def test_parse_slices():
    assert parse_slices("3,1, 7-9") == [1, 3, 7, 8, 9]
    assert parse_slices("4-4") == [4]
    with pytest.raises(EmzooError):
        parse_slices("a,b")


def test_parse_slices_says_a_range_is_reversed():
    with pytest.raises(EmzooError, match=r"reversed range 5-3\. Expected START-END with START <= END"):
        parse_slices("1,5-3")
    with pytest.raises(EmzooError, match="longer than any volume"):
        parse_slices("1-99999999999")  # refused, not listed


def test_repair_result_is_the_same_kind_with_or_without_output(tmp_path):
    volume = random_volume((5, 8, 8), np.uint8)
    in_memory = repair_volume(volume, [2], MeanModel(), progress=False)
    on_disk = repair_volume(volume, [2], MeanModel(), output=str(tmp_path / "r.tif"), progress=False)
    assert set(in_memory) == set(on_disk) and in_memory["repaired"] == on_disk["repaired"] == [2]
    assert in_memory["output"] is None and on_disk["array"] is None
    np.testing.assert_array_equal(open_volume(on_disk["output"]).read_range(0, 5), in_memory["array"])


def test_repair_keeps_the_range_of_float_data_outside_unit_range():
    volume = np.stack([np.full((4, 4), v, np.float32) for v in (-0.46, 0.0, 1.51)])
    out = repair_volume(volume, [1], MeanModel(), progress=False)["array"]
    np.testing.assert_array_equal(out[[0, 2]], volume[[0, 2]])
    np.testing.assert_allclose(out[1], (-0.46 + 1.51) / 2, atol=1e-6)


def test_repair_single_and_runs_of_slices():
    volume = random_volume((10, 16, 24), seed=9)
    damaged = [2, 5, 6, 7] + [8]  # 2 alone; 5..8 is a run of four (positions k / 5)
    out = repair_volume(volume, damaged, MeanModel(), progress=False)["array"]
    np.testing.assert_allclose(out[2], (volume[1] + volume[3]) / 2, atol=1e-6)
    for k, z in enumerate(range(5, 9), start=1):
        np.testing.assert_allclose(out[z], (1 - k / 5) * volume[4] + k / 5 * volume[9],
                                   atol=1e-6)
    good = [z for z in range(10) if z not in damaged]
    np.testing.assert_array_equal(out[good], volume[good])


def test_repair_writes_file_and_refuses_edges(tmp_path):
    volume = random_volume((5, 8, 8), np.uint8)
    summary = repair_volume(volume, "2", MeanModel(), output=str(tmp_path / "r.tif"),
                            voxel_size=(10, 10, 10), progress=False)
    assert summary["repaired"] == [2]
    assert open_volume(str(tmp_path / "r.tif")).voxel_size == pytest.approx((10, 10, 10))
    with pytest.raises(EmzooError, match="both sides"):
        repair_volume(volume, [0], MeanModel(), progress=False)
    with pytest.raises(EmzooError, match="outside"):
        repair_volume(volume, [7], MeanModel(), progress=False)
