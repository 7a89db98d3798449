"""Tests of emzoo.samples: the bundled FIB-SEM sample and the ``sample`` input shortcut."""

import numpy as np
import pytest

from emzoo.data.volumes import open_volume


def test_bundled_sample_is_a_small_fibsem_stack_with_voxel_size():
    import emzoo.samples

    assert emzoo.samples.resolve_input("sample") == emzoo.samples.sample_path()
    assert emzoo.samples.resolve_input("stack.tif") == "stack.tif"
    with open_volume(emzoo.samples.sample_path()) as sample:
        assert sample.shape == (17, 256, 256) and sample.dtype == np.uint8
        assert sample.voxel_size == pytest.approx((10, 10, 10))
