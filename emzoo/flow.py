"""Optical-flow interpolation: the classical baseline a trained model must beat.

What Fiji's "interpolate with optical flow" tools and most labs reach for first: estimate dense
flow between the two neighbouring slices in both directions (OpenCV's DIS optical flow), warp each
slice towards the target position and blend the two warped slices:

    I_t(p) = (1 - t) * I_0(p - t * F_01(p)) + t * I_1(p - (1 - t) * F_10(p))

``F_01`` is the flow from slice 0 to slice 1, evaluated at the output pixel (the usual
first-order approximation for small, smooth motion). Warping is bilinear with replicated borders.
Flow is estimated on the slices quantised to uint8 (what DIS takes); warping and blending are done
in float32 on the original values, so the result stays in the inputs' range.

:class:`FlowInterpolator` follows the interpolator contract (``{"x0", "x1", "time"}`` in,
``{"image"}`` out, float32 in [0, 1]) with NumPy arrays, so the volume engine and the evaluation
protocol use it like any model (``--model flow``, ``--baselines flow``). It has no weights.
OpenCV is an optional dependency (``pip install "emzoo[flow]"``).

Example:
    >>> import numpy as np
    >>> from emzoo.flow import FlowInterpolator
    >>> x = np.zeros((1, 32, 32, 1), np.float32)
    >>> FlowInterpolator()({"x0": x, "x1": x, "time": np.full((1, 1), 0.5)})["image"].shape
    (1, 32, 32, 1)
"""

import numpy as np

from emzoo.errors import EmzooError, describe

PRESETS = ("ultrafast", "fast", "medium")


def _cv2():
    try:
        import cv2
    except ImportError:
        raise EmzooError(describe(
            "The optical-flow baseline needs OpenCV, which is not installed.",
            'pip install "emzoo[flow]" (opencv-python-headless)', module="cv2")) from None
    return cv2


def _as_uint8(image):
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


class FlowInterpolator:
    """Dense-flow midpoint (or any ``time``) interpolation of two slices (see the module docstring).

    Args:
        preset: DIS optical-flow preset, ``"ultrafast"``, ``"fast"`` or ``"medium"`` (default:
            the most accurate of the three).

    Attributes follow the interpolator contract: ``channels`` (1; more channels are warped with
    the flow of their mean), ``size_multiple`` (1: any size), ``architecture`` (``"flow"``).
    """

    architecture = "flow"
    channels = 1
    size_multiple = 1

    def __init__(self, preset="medium"):
        if preset not in PRESETS:
            raise EmzooError(describe("Invalid value for argument `preset`.",
                                      " or ".join(map(repr, PRESETS)), preset=preset))
        self.preset = preset
        self._cv2 = _cv2()
        self._dis = self._cv2.DISOpticalFlow_create(
            getattr(self._cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))

    def flow(self, image0, image1):
        """Dense flow ``(H, W, 2)`` (x, y displacements in pixels) from ``image0`` to ``image1``."""
        return self._dis.calc(_as_uint8(image0), _as_uint8(image1), None)

    def _warp(self, image, flow, scale):
        """``image`` sampled at ``p - scale * flow(p)`` (bilinear, replicated borders)."""
        height, width = image.shape[:2]
        grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                     np.arange(height, dtype=np.float32))
        map_x = grid_x - scale * flow[..., 0]
        map_y = grid_y - scale * flow[..., 1]
        warped = self._cv2.remap(image, map_x, map_y, self._cv2.INTER_LINEAR,
                                 borderMode=self._cv2.BORDER_REPLICATE)
        return warped.reshape(image.shape)

    def interpolate(self, image0, image1, time=0.5):
        """One slice at ``time`` in [0, 1] between two ``(H, W)`` or ``(H, W, C)`` float slices."""
        image0 = np.asarray(image0, np.float32)
        image1 = np.asarray(image1, np.float32)
        grey0 = image0.mean(axis=-1) if image0.ndim == 3 else image0
        grey1 = image1.mean(axis=-1) if image1.ndim == 3 else image1
        forward, backward = self.flow(grey0, grey1), self.flow(grey1, grey0)
        warped0 = self._warp(image0, forward, time)
        warped1 = self._warp(image1, backward, 1.0 - time)
        return (1.0 - time) * warped0 + time * warped1

    def __call__(self, inputs, training=False):
        del training
        x0, x1 = np.asarray(inputs["x0"], np.float32), np.asarray(inputs["x1"], np.float32)
        if x0.ndim != 4 or x0.shape != x1.shape:
            raise EmzooError(describe("Invalid inputs for the flow interpolator.",
                                      "x0 and x1 of one shape (B, H, W, C)",
                                      x0=x0.shape, x1=x1.shape))
        times = np.broadcast_to(np.asarray(inputs.get("time", 0.5), np.float32).reshape(-1),
                                (x0.shape[0],))
        image = np.stack([self.interpolate(a, b, float(t)) for a, b, t in zip(x0, x1, times)])
        return {"image": image.astype(np.float32)}
