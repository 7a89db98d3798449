"""Image-quality metrics of the EM interpolation papers: PSNR, SSIM and IE.

Two forms of each, computing the same numbers:

* NumPy functions :func:`psnr`, :func:`ssim`, :func:`ie` for evaluation scripts. They take
  ``(H, W)``, ``(H, W, C)`` or batched ``(B, H, W, C)`` arrays (a 3-D array is read as one
  ``H x W x C`` image) and return the mean over images of the per-image value.
* Keras metrics :class:`PSNR`, :class:`SSIM`, :class:`IE` (``keras.ops`` only) for ``compile``;
  inputs ``(B, H, W, C)`` in [0, 1]; the result is the mean over samples of the per-image value.

Conventions (``shared/specs/em_networks.md`` §4.3):

* **PSNR** = ``10 log10(data_range^2 / MSE)`` per image. Identical images give ``inf`` in NumPy;
  the Keras metric floors the MSE at 1e-10 (100 dB for data_range 1) so that a running mean stays
  finite.
* **SSIM** is Wang et al. (2004) with a Gaussian window of size 11 and sigma 1.5, K1 = 0.01,
  K2 = 0.03, computed on the *valid* region (no padding) of each channel and averaged over
  channels. These are ``tf.image.ssim``'s defaults and match the MATLAB-style ``calculate_ssim``
  of the TSAIN code.
* **IE** (interpolation error) is the **mean absolute difference on the 0-255 scale**,
  ``255 * mean(|a - b|) / data_range``: the convention of the DAIN-family code used by TSAIN and
  SSAN. (Middlebury's IE is an RMS instead; emzoo reports the MAE form so numbers compare with
  the EM papers.)

No function clamps or quantises: callers that want the papers' "round to uint8 first" protocol
do it before calling (``emzoo evaluate`` does).
"""

import numpy as np

import keras
from keras import ops

from emzoo.errors import EmzooError, describe

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
IE_SCALE = 255.0


def gaussian_window(size=SSIM_WINDOW, sigma=SSIM_SIGMA):
    """Normalised 1-D Gaussian of ``size`` taps centred on the middle one (float64).

    Example:
        >>> round(float(gaussian_window().sum()), 6)
        1.0
    """
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    window = np.exp(-(coords ** 2) / (2.0 * sigma ** 2))
    return window / window.sum()


def _as_batch(a, b):
    """Both arrays as float64 ``(B, H, W, C)``; raises on a shape mismatch."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise EmzooError(describe("Images to compare have different shapes.", "equal shapes",
                                  a_shape=a.shape, b_shape=b.shape))
    if a.ndim == 2:
        return a[None, :, :, None], b[None, :, :, None]
    if a.ndim == 3:
        return a[None], b[None]
    if a.ndim == 4:
        return a, b
    raise EmzooError(describe("Invalid image rank.", "(H, W), (H, W, C) or (B, H, W, C) arrays",
                              shape=a.shape))


def psnr(a, b, data_range=1.0):
    """Peak signal-to-noise ratio in dB, mean over images.

    Example:
        >>> import numpy as np
        >>> round(float(psnr(np.zeros((4, 4)), np.full((4, 4), 0.1))), 6)
        20.0
    """
    a, b = _as_batch(a, b)
    mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(float(data_range) ** 2 / mse)
    return float(np.mean(values))


def _filter_valid(images, window):
    """Separable 'valid' correlation of ``(B, H, W, C)`` with the 1-D ``window`` on H and W."""
    size = window.shape[0]
    rows = np.lib.stride_tricks.sliding_window_view(images, size, axis=1) @ window
    return np.lib.stride_tricks.sliding_window_view(rows, size, axis=2) @ window


def ssim(a, b, data_range=1.0):
    """Structural similarity (Gaussian window 11, sigma 1.5, valid region), mean over images.

    Example:
        >>> import numpy as np
        >>> image = np.random.rand(16, 16)
        >>> round(float(ssim(image, image)), 6)
        1.0
    """
    a, b = _as_batch(a, b)
    if min(a.shape[1], a.shape[2]) < SSIM_WINDOW:
        raise EmzooError(describe("Images are too small for SSIM.",
                                  f"height and width >= {SSIM_WINDOW}", shape=a.shape))
    window = gaussian_window()
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_a = _filter_valid(a, window)
    mu_b = _filter_valid(b, window)
    var_a = _filter_valid(a * a, window) - mu_a ** 2
    var_b = _filter_valid(b * b, window) - mu_b ** 2
    cov = _filter_valid(a * b, window) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(np.mean(np.mean(ssim_map, axis=(1, 2, 3))))


def ie(a, b, data_range=1.0):
    """Interpolation error: mean absolute difference on the 0-255 scale (DAIN/TSAIN convention).

    Example:
        >>> import numpy as np
        >>> round(float(ie(np.zeros((4, 4)), np.full((4, 4), 0.1))), 6)
        25.5
    """
    a, b = _as_batch(a, b)
    return float(np.mean(np.abs(a - b)) * IE_SCALE / float(data_range))


class _PerImageMean(keras.metrics.Metric):
    """Running mean over samples of a per-image value (``per_image`` returns shape ``(B,)``)."""

    def __init__(self, name, data_range=1.0, dtype=None, **kwargs):
        super().__init__(name=name, dtype=dtype, **kwargs)
        self.data_range = float(data_range)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype, name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype, name="count")

    def per_image(self, y_true, y_pred):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        values = self.per_image(y_true, y_pred)
        weights = ops.ones_like(values) if sample_weight is None else ops.reshape(
                ops.cast(sample_weight, "float32"), ops.shape(values))
        self.total.assign_add(ops.cast(ops.sum(values * weights), self.dtype))
        self.count.assign_add(ops.cast(ops.sum(weights), self.dtype))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "data_range": self.data_range}


@keras.saving.register_keras_serializable(package="emzoo")
class PSNR(_PerImageMean):
    """PSNR in dB, mean over samples; see the module docstring for the convention.

    Example:
        >>> import numpy as np
        >>> metric = PSNR()
        >>> metric.update_state(np.zeros((2, 8, 8, 1)), np.full((2, 8, 8, 1), 0.1))
        >>> round(float(metric.result()), 4)
        20.0
    """

    def __init__(self, name="psnr", data_range=1.0, **kwargs):
        super().__init__(name=name, data_range=data_range, **kwargs)

    def per_image(self, y_true, y_pred):
        mse = ops.mean(ops.square(y_true - y_pred), axis=(1, 2, 3))
        return 10.0 * ops.log10(self.data_range ** 2 / ops.maximum(mse, 1e-10))


@keras.saving.register_keras_serializable(package="emzoo")
class SSIM(_PerImageMean):
    """SSIM (Gaussian window 11, sigma 1.5, valid region), mean over channels and samples.

    The Gaussian filter is separable: two depthwise convolutions (11x1 then 1x11), "valid" padding.

    Example:
        >>> import numpy as np
        >>> metric = SSIM()
        >>> image = np.random.rand(2, 16, 16, 1).astype("float32")
        >>> metric.update_state(image, image)
        >>> round(float(metric.result()), 4)
        1.0
    """

    def __init__(self, name="ssim", data_range=1.0, **kwargs):
        super().__init__(name=name, data_range=data_range, **kwargs)

    def per_image(self, y_true, y_pred):
        channels = y_true.shape[-1]
        window = ops.convert_to_tensor(gaussian_window().astype("float32"))
        column = ops.tile(ops.reshape(window, (SSIM_WINDOW, 1, 1, 1)), (1, 1, channels, 1))
        row = ops.tile(ops.reshape(window, (1, SSIM_WINDOW, 1, 1)), (1, 1, channels, 1))

        def blur(images):
            images = ops.depthwise_conv(images, column, padding="valid")
            return ops.depthwise_conv(images, row, padding="valid")

        c1 = (SSIM_K1 * self.data_range) ** 2
        c2 = (SSIM_K2 * self.data_range) ** 2
        mu_true = blur(y_true)
        mu_pred = blur(y_pred)
        var_true = blur(y_true * y_true) - mu_true ** 2
        var_pred = blur(y_pred * y_pred) - mu_pred ** 2
        cov = blur(y_true * y_pred) - mu_true * mu_pred
        ssim_map = (((2 * mu_true * mu_pred + c1) * (2 * cov + c2))
                    / ((mu_true ** 2 + mu_pred ** 2 + c1) * (var_true + var_pred + c2)))
        return ops.mean(ssim_map, axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="emzoo")
class IE(_PerImageMean):
    """Interpolation error: mean absolute difference on the 0-255 scale, mean over samples.

    Example:
        >>> import numpy as np
        >>> metric = IE()
        >>> metric.update_state(np.zeros((2, 8, 8, 1)), np.full((2, 8, 8, 1), 0.1))
        >>> round(float(metric.result()), 3)
        25.5
    """

    def __init__(self, name="ie", data_range=1.0, **kwargs):
        super().__init__(name=name, data_range=data_range, **kwargs)

    def per_image(self, y_true, y_pred):
        return ops.mean(ops.abs(y_true - y_pred), axis=(1, 2, 3)) * (IE_SCALE / self.data_range)
