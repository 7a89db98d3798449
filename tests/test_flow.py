"""The optical-flow baseline: exact on pure translations, better than the average on moving
structure, and shaped like any interpolator."""

import numpy as np
import pytest

pytest.importorskip("cv2")

from emzoo.errors import EmzooError  # noqa: E402
from emzoo.flow import FlowInterpolator  # noqa: E402


def pattern(shift_x=0.0, size=64):
    """A smooth textured slice, translated by ``shift_x`` pixels along x."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xx = xx - shift_x
    return (0.5 + 0.2 * np.sin(xx / 3.0) * np.cos(yy / 4.0) + 0.15 * np.sin((xx + yy) / 5.0))


def test_midpoint_of_a_translation_beats_the_average():
    flow = FlowInterpolator()
    x0, x1, truth = pattern(0.0), pattern(4.0), pattern(2.0)
    middle = flow.interpolate(x0, x1, 0.5)
    inner = (slice(8, -8), slice(8, -8))      # borders lack context for any method
    flow_error = np.abs(middle - truth)[inner].mean()
    average_error = np.abs(0.5 * (x0 + x1) - truth)[inner].mean()
    assert flow_error < 0.25 * average_error, (flow_error, average_error)


def test_identical_slices_give_the_slice_and_time_weights_the_ends():
    flow = FlowInterpolator()
    x = pattern()
    np.testing.assert_allclose(flow.interpolate(x, x, 0.5), x, atol=1e-5)
    x0, x1 = pattern(0.0), pattern(4.0)
    np.testing.assert_allclose(flow.interpolate(x0, x1, 0.0), x0, atol=1e-5)
    np.testing.assert_allclose(flow.interpolate(x0, x1, 1.0), x1, atol=1e-5)


def test_follows_the_interpolator_contract():
    flow = FlowInterpolator(preset="fast")
    x0 = np.stack([pattern(0.0), pattern(1.0)])[..., None]
    x1 = np.stack([pattern(4.0), pattern(2.0)])[..., None]
    out = flow({"x0": x0, "x1": x1, "time": np.full((2, 1), 0.5, np.float32)})["image"]
    assert out.shape == (2, 64, 64, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[1, ..., 0], flow.interpolate(x0[1, ..., 0], x1[1, ..., 0]))
    with pytest.raises(EmzooError, match="preset"):
        FlowInterpolator(preset="slow")
    with pytest.raises(EmzooError, match="one shape"):
        flow({"x0": x0, "x1": x1[:1], "time": np.full((1, 1), 0.5)})


def test_flow_is_a_baseline_of_the_protocol_and_a_model_of_the_engine():
    from emzoo.engine import upscale_volume
    from emzoo.evaluate import evaluate_volume

    volume = np.stack([pattern(shift) for shift in np.arange(9) * 1.5]).astype(np.float32)
    report = evaluate_volume(volume, 4, baselines=("linear", "flow"))
    means = {name: m["mean"]["psnr"] for name, m in report["methods"].items()}
    assert means["flow"] > means["linear"] + 3.0, means
    result = upscale_volume(volume[::4], "flow", factor=4, progress=False)
    assert result["array"].shape == (9, 64, 64)
    np.testing.assert_array_equal(result["array"][::4], volume[::4])   # kept slices unchanged
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert np.abs(result["array"] - volume)[inner].mean() < 0.5 * np.abs(
        np.repeat(volume[::4], 4, axis=0)[:9] - volume)[inner].mean()
