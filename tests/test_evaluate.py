"""Tests of emzoo.evaluate: protocol indices, baselines against independent computations, model path."""

import numpy as np
import pytest

from emzoo import evaluate
from emzoo.errors import EmzooError, VolumeError


def _independent_psnr(a, b):
    return 10.0 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def _synthetic(depth=21, size=40, seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:depth, 0:size, 0:size].astype(np.float64)
    volume = 0.5 + 0.3 * np.sin((x + 1.3 * z) / 4.0) * np.cos((y - 0.7 * z) / 6.0)
    volume += rng.normal(0, 0.02, volume.shape)
    return np.clip(np.round(volume * 255), 0, 255).astype(np.uint8)


def test_protocol_indices_keep_every_factor_th_slice():
    assert evaluate.protocol_indices(0, 10, 4) == ([0, 4, 8], [1, 2, 3, 5, 6, 7])
    assert evaluate.protocol_indices(3, 8, 2) == ([3, 5, 7], [4, 6])
    with pytest.raises(VolumeError, match="too few"):
        evaluate.protocol_indices(0, 4, 4)
    with pytest.raises(EmzooError, match="factor"):
        evaluate.protocol_indices(0, 10, 1)


def test_factor_is_parsed_as_for_upscaling_and_must_be_whole():
    assert evaluate.protocol_factor("3") == 3 and evaluate.protocol_factor(4.0) == 4
    with pytest.raises(EmzooError, match="Expected a number >= 1"):  # the engine's own check
        evaluate.protocol_factor("abc")
    for factor in (2.5, "2.5", 1):
        with pytest.raises(EmzooError, match="whole number >= 2"):
            evaluate.protocol_factor(factor)


def test_natural_spline_matches_scipy_and_reproduces_cubics_inside():
    scipy_interpolate = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(1)
    knots = rng.normal(size=(9, 3, 2))
    second = evaluate.natural_spline_second_derivatives(knots)
    reference = scipy_interpolate.CubicSpline(np.arange(9), knots, axis=0, bc_type="natural")
    np.testing.assert_allclose(second, reference(np.arange(9), 2), atol=1e-10)
    interpolator = evaluate.BaselineInterpolator(knots, 4, "cubic")
    for j in range(8):
        for offset in range(1, 4):
            np.testing.assert_allclose(interpolator.slice(j, offset), reference(j + offset / 4), atol=1e-10)


@pytest.mark.parametrize("factor", [2, 4])
def test_baselines_match_an_independent_computation(factor):
    scipy_interpolate = pytest.importorskip("scipy.interpolate")
    raw = _synthetic()
    report = evaluate.evaluate_volume(raw, factor, baselines=("nearest", "linear", "cubic"))
    volume = raw.astype(np.float64) / 255.0
    kept = np.arange(0, raw.shape[0], factor)
    dropped = [z for z in range(kept[-1]) if z % factor]
    assert report["kept"] == kept.tolist() and report["dropped"] == dropped
    spline = scipy_interpolate.CubicSpline(kept, volume[kept], axis=0, bc_type="natural")
    expected = {"linear": [], "cubic": [], "nearest": []}
    for z in dropped:
        below = z - z % factor
        t = (z - below) / factor
        expected["linear"].append(_independent_psnr((1 - t) * volume[below] + t * volume[below + factor], volume[z]))
        expected["cubic"].append(_independent_psnr(spline(z), volume[z]))
        expected["nearest"].append(_independent_psnr(volume[below if t <= 0.5 else below + factor], volume[z]))
    for name, values in expected.items():
        got = [row["psnr"] for row in report["methods"][name]["per_slice"]]
        np.testing.assert_allclose(got, values, atol=1e-6)
        assert abs(report["methods"][name]["mean"]["psnr"] - np.mean(values)) < 1e-6
    assert report["methods"]["linear"]["mean"]["psnr"] > report["methods"]["nearest"]["mean"]["psnr"]


def test_validation_split_uses_the_pipeline_range():
    from emzoo.data.triplets import split_range

    raw = _synthetic(depth=40)
    report = evaluate.evaluate_volume(raw, 2, baselines=("linear",), split="validation")
    start, stop = split_range(40, "validation")
    assert report["z_range"] == [start, stop]
    assert min(report["kept"]) == start and max(report["dropped"]) < stop


def test_crop_scores_the_central_window_and_rejects_oversize():
    raw = _synthetic()
    full = evaluate.evaluate_volume(raw, 2, baselines=("linear",))
    cropped = evaluate.evaluate_volume(raw, 2, baselines=("linear",), crop=20)
    assert cropped["crop"] == 20
    assert full["methods"]["linear"]["mean"]["psnr"] != cropped["methods"]["linear"]["mean"]["psnr"]
    with pytest.raises(VolumeError, match="crop is larger"):
        evaluate.evaluate_volume(raw, 2, baselines=("linear",), crop=41)


def test_model_path_scores_every_dropped_slice_through_the_engine():
    pytest.importorskip("tensorflow")
    from emzoo_test_helpers import TinyInterpolator

    model = TinyInterpolator(filters=2)
    model.build_for_weights()
    for weight in model.correction.weights:  # correction 0: the model is exactly linear at t = 0.5
        weight.assign(np.zeros(weight.shape, "float32"))
    raw = _synthetic(depth=9, size=32)
    report = evaluate.evaluate_volume(raw, 4, model=model, baselines=("linear",), model_name="tiny")
    assert set(report["methods"]) == {"linear", "tiny"}
    assert report["residual_scales"] == (1.0, 1.0)  # slices too small to calibrate on: kept as is
    assert [r["z"] for r in report["methods"]["tiny"]["per_slice"]] == [1, 2, 3, 5, 6, 7]
    # Recursive midpoints of a linear interpolator are linear interpolation.
    for mine, linear in zip(report["methods"]["tiny"]["per_slice"], report["methods"]["linear"]["per_slice"]):
        assert abs(mine["psnr"] - linear["psnr"]) < 1e-3
    table = evaluate.format_table(report)
    assert "tiny" in table.splitlines()[-1] and "PSNR" in table


@pytest.mark.slow
def test_fibsem_linear_baselines_match_the_paper_figures(shared_data):
    path = shared_data / "flyem_medulla_fibsem_10nm" / "volume.tif"
    expected = {2: 31.0, 4: 28.8, 8: 25.6}
    for factor, value in expected.items():
        report = evaluate.evaluate_volume(str(path), factor, baselines=("linear",))
        assert abs(report["methods"]["linear"]["mean"]["psnr"] - value) < 0.1
