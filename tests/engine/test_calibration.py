"""Weighing the model against linear interpolation on the input itself (emzoo.engine.calibration)."""

import numpy as np
import pytest

from emzoo.engine import EngineOptions, plan_upscale, upscale_volume
from emzoo.engine.calibration import residual_scales
from emzoo.engine.interpolators import midpoint_engine
from emzoo.errors import EmzooError
from emzoo_test_helpers import MeanModel, linear_along_z


class Overshoot:
    """A model that adds twice the step between its inputs to their mean: wrong wherever slices
    change along z, and by more the larger the gap."""

    size_multiple = 1
    channels = 1

    def __call__(self, inputs, training=False):
        x0, x1 = inputs["x0"], inputs["x1"]
        return {"image": 0.5 * (x0 + x1) + 2.0 * (x1 - x0)}


class Oracle:
    """A model that knows the volume: the true slice halfway between the two it is given (the
    mean where no slice lies halfway)."""

    size_multiple = 1
    channels = 1

    def __init__(self, volume):
        self.volume = volume

    def _index(self, image):
        return int(np.argmin([abs(float(image.mean()) - float(s.mean())) for s in self.volume]))

    def __call__(self, inputs, training=False):
        out = []
        for x0, x1 in zip(np.asarray(inputs["x0"]), np.asarray(inputs["x1"])):
            i, j = self._index(x0), self._index(x1)
            out.append(self.volume[(i + j) // 2] if (i + j) % 2 == 0 else 0.5 * (x0 + x1))
        return {"image": np.stack(out).astype(np.float32)}


def _binned_all(volume, side):
    """``volume`` (Z, H, W, 1) binned to ``side`` pixels a side, as calibration bins it."""
    factor = volume.shape[1] // side
    return volume.reshape(len(volume), side, factor, side, factor, 1).mean(axis=(2, 4))


def ramp(depth=17, size=128):
    """Slices changing linearly along z and across x (no flat region)."""
    z, _, x = np.mgrid[0:depth, 0:size, 0:size].astype(np.float32)
    return (0.2 + 0.03 * z + 0.01 * x)[..., None] / 1.5


def test_a_model_worse_than_linear_everywhere_gets_weight_zero_and_the_job_gives_linear():
    volume = (ramp()[..., 0] * 255).round().astype(np.uint8)
    done = upscale_volume(volume, Overshoot(), factor=4, progress=False)
    assert done["residual_scales"] == pytest.approx((0.0, 0.0), abs=0.01)  # rounding to uint8
    expected = linear_along_z(volume, np.arange((len(volume) - 1) * 4 + 1) / 4)
    assert np.abs(done["array"].astype(int) - expected.round()).max() <= 1
    raw = upscale_volume(volume, Overshoot(), factor=4, progress=False, calibrate=False)
    assert raw["residual_scales"] is None
    assert np.abs(raw["array"].astype(int) - expected.round()).max() > 5  # what it would be


def test_a_model_right_where_the_volume_can_tell_keeps_weight_one():
    rng = np.random.default_rng(0)
    depth, size = 17, 128
    volume = np.cumsum(rng.normal(0, 0.02, (depth, size, size, 1)), axis=0) + np.linspace(
        0.2, 0.6, depth)[:, None, None, None]  # slices that differ (a random walk) and are told
    volume = np.clip(volume, 0, 1).astype(np.float32)  # apart by their mean
    engines = lambda height, width: midpoint_engine(Oracle(_binned_all(volume, height)), height,  # noqa: E731
                                                     width, jit_compile=False)
    weights = residual_scales(lambda z, size: volume[z], depth, engines, 2)
    assert weights == pytest.approx((1.0, 1.0), abs=1e-4)
    engines = lambda height, width: midpoint_engine(MeanModel(), height, width)  # noqa: E731
    # nothing to weigh
    assert residual_scales(lambda z, size: volume[z], depth, engines, 2) == (1.0, 1.0)


def test_too_few_slices_leave_the_model_as_it_is():
    volume = (ramp(depth=2)[..., 0] * 255).astype(np.uint8)
    assert upscale_volume(volume, Overshoot(), factor=2, progress=False)["residual_scales"] == (1.0,)


def test_weights_given_by_hand_are_checked_against_the_levels():
    options = EngineOptions(residual_scales=(1.0, 0.5))
    plan = plan_upscale(np.zeros((3, 8, 8), np.uint8), factor=4, options=options)
    assert plan.options.residual_scales == (1.0, 0.5)
    with pytest.raises(EmzooError, match="one weight per recursion level: 3 for factor 8"):
        plan_upscale(np.zeros((3, 8, 8), np.uint8), factor=8, options=options)
    with pytest.raises(EmzooError, match="in \\[0, 1\\]"):
        EngineOptions(residual_scales=(1.5,))


def test_a_level_too_small_to_test_keeps_the_weight_of_the_level_above():
    volume = ramp()  # 128 pixels a side: levels 1 and 2 tested (64, 32), level 3 (16) not
    engines = lambda height, width: midpoint_engine(Overshoot(), height, width)  # noqa: E731
    weights = residual_scales(lambda z, size: volume[z], len(volume), engines, 3)
    assert weights == pytest.approx((0.0, 0.0, 0.0), abs=0.01)  # not trusted where untested
