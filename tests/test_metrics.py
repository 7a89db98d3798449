"""PSNR, SSIM and IE: NumPy functions against independent references, Keras metrics against NumPy."""

import numpy as np
import pytest
from scipy import ndimage

import keras

from emzoo import metrics
from emzoo.errors import EmzooError


def scipy_ssim_single(a, b, data_range):
    """Wang et al. SSIM of one 2-D image with scipy's Gaussian filter, valid region only."""
    def blur(image):  # radius 5 = window 11; crop the border where the filter saw padding
        return ndimage.gaussian_filter(image, 1.5, truncate=5 / 1.5, mode="constant")[5:-5, 5:-5]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    return np.mean(((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))


def pairs(shape, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    return a, np.clip(a + rng.normal(0, 0.1, shape), 0, 1)


def test_psnr_matches_formula_and_averages_images():
    a, b = pairs((3, 12, 10, 2))
    per_image = [10 * np.log10(1 / np.mean((a[i] - b[i]) ** 2)) for i in range(3)]
    assert metrics.psnr(a, b) == pytest.approx(np.mean(per_image), rel=1e-12)
    assert metrics.psnr(a[0, :, :, 0] * 255, b[0, :, :, 0] * 255, data_range=255) == pytest.approx(
            10 * np.log10(1 / np.mean((a[0, :, :, 0] - b[0, :, :, 0]) ** 2)), rel=1e-9)
    assert metrics.psnr(a, a) == np.inf


@pytest.mark.parametrize("shape", [(20, 24), (20, 24, 3), (2, 16, 18, 2)])
def test_ssim_matches_scipy_reference(shape):
    a, b = pairs(shape, seed=1)
    a4 = a.reshape((1,) * (4 - a.ndim) + a.shape) if a.ndim != 2 else a[None, :, :, None]
    b4 = b.reshape(a4.shape)
    expected = np.mean([np.mean([scipy_ssim_single(a4[i, ..., c], b4[i, ..., c], 1.0) for c in range(a4.shape[3])])
                        for i in range(a4.shape[0])])
    assert metrics.ssim(a, b) == pytest.approx(expected, abs=1e-9)
    assert metrics.ssim(a * 255, b * 255, data_range=255) == pytest.approx(expected, abs=1e-9)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(a, b) < 0.99


def test_ie_is_mean_absolute_error_on_255_scale():
    a, b = pairs((2, 8, 8, 1), seed=2)
    assert metrics.ie(a, b) == pytest.approx(255 * np.mean(np.abs(a - b)), rel=1e-12)
    assert metrics.ie(a * 255, b * 255, data_range=255) == pytest.approx(255 * np.mean(np.abs(a - b)), rel=1e-12)


def test_errors_name_the_problem():
    with pytest.raises(EmzooError, match="different shapes"):
        metrics.psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(EmzooError, match=r"Expected height and width >= 11. Received: shape=\(1, 8, 8, 1\)"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF-only: compares with tf.image.ssim")
def test_ssim_equals_tf_image_ssim():
    import tensorflow as tf

    a, b = pairs((2, 20, 22, 3), seed=3)
    expected = float(tf.reduce_mean(tf.image.ssim(a.astype(np.float32), b.astype(np.float32), max_val=1.0)))
    assert metrics.ssim(a, b) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("cls, fn", [(metrics.PSNR, metrics.psnr), (metrics.SSIM, metrics.ssim),
                                     (metrics.IE, metrics.ie)])
def test_keras_metrics_match_numpy(cls, fn):
    metric = cls()
    a, b = pairs((4, 16, 15, 2), seed=4)
    metric.update_state(a[:3].astype(np.float32), b[:3].astype(np.float32))
    metric.update_state(a[3:].astype(np.float32), b[3:].astype(np.float32))  # mean over all 4 samples
    per_sample = np.mean([fn(a[i], b[i]) for i in range(4)])
    assert float(metric.result()) == pytest.approx(per_sample, rel=1e-4)
    metric.reset_state()
    metric.update_state(a.astype(np.float32), b.astype(np.float32), sample_weight=np.array([1, 0, 0, 0]))
    assert float(metric.result()) == pytest.approx(fn(a[0], b[0]), rel=1e-4)


@pytest.mark.parametrize("cls", [metrics.PSNR, metrics.SSIM, metrics.IE])
def test_metric_config_round_trip_and_compile(cls):
    metric = cls(name="custom", data_range=1.0)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(clone) is cls and clone.get_config() == metric.get_config()
    inputs = keras.Input((16, 16, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(inputs))
    model.compile(optimizer="sgd", loss="mse", metrics=[cls()])
    a, b = pairs((2, 16, 16, 1), seed=5)
    logs = model.evaluate(a.astype(np.float32), b.astype(np.float32), verbose=0, return_dict=True)
    assert np.isfinite(logs[cls().name])
