"""Scores z-interpolation against dropped slices: the protocol of the Z-upscaling paper.

Protocol (``factor`` F, an isotropic volume of Z slices):

1. keep slices ``z0, z0 + F, z0 + 2F, ...`` (``z0`` is the first slice of the evaluated z-range);
2. reconstruct every dropped slice between the first and the last kept one (slices after the last
   kept one are not scored: nothing brackets them);
3. score each reconstruction against the dropped original: PSNR with the data range of the
   volume's dtype (volumes are normalised by that range, so ``data_range=1``), SSIM (Gaussian
   window 11, sigma 1.5, K1 0.01, K2 0.03, valid region) and IE (mean absolute error on the
   0-255 scale), all from :mod:`emzoo.metrics`; then average over dropped slices.

Methods are the baselines ``nearest``, ``linear`` (weights ``(1 - t, t)`` between the two kept
neighbours), ``cubic`` (a *natural* cubic spline along z through all kept slices: second
derivative zero at the first and last kept slice; solved here in NumPy, vectorised over pixels),
``flow`` (dense optical flow between the two kept neighbours, both warped to the dropped slice's
position and blended: :mod:`emzoo.flow`, the classical baseline a model must beat), and any emzoo
model, which reconstructs factor ``2**n`` by recursive midpoint interpolation
through the volume engine :func:`emzoo.engine.upscale_volume` (what ``emzoo upscale`` runs).

Reconstructions are scored as floats (clipped to [0, 1] for models), not re-quantised to the
dtype: ``quantize=True`` scores them as a file written in the volume's dtype would hold them
(a small difference at the PSNRs EM reaches; both are offered so either can be reported).

For anisotropic stacks (serial-section TEM, 4x4x50 nm) dropping slices makes gaps far larger than
anything the model will be asked to fill; there ``factor=2`` (a triplet: reconstruct z from
z - 1 and z + 1) is the meaningful protocol.

Example:
    >>> from emzoo import evaluate
    >>> report = evaluate.evaluate_volume("volume.tif", factor=4, model=None,
    ...                                   baselines=("linear", "cubic"))   # doctest: +SKIP
    >>> sorted(report["methods"])                                          # doctest: +SKIP
    ['cubic', 'linear']
"""

import os

import numpy as np

from emzoo.engine.positions import check_factor
from emzoo.errors import EmzooError, VolumeError, describe

BASELINES = ("nearest", "linear", "cubic", "flow")
METRICS = ("psnr", "ssim", "ie")
SPLITS = ("all", "validation", "train")


# ------------------------------------------------------------------------------------ protocol
def protocol_indices(z_start, z_stop, factor):
    """Kept and dropped slice indices for ``factor`` over the z-range ``[z_start, z_stop)``.

    Example:
        >>> protocol_indices(0, 10, 4)
        ([0, 4, 8], [1, 2, 3, 5, 6, 7])
    """
    factor = protocol_factor(factor)
    count = z_stop - z_start
    if count < factor + 1:
        raise VolumeError(describe(
            f"The evaluated z-range [{z_start}, {z_stop}) has {count} slices, too few for factor {factor}.",
            f"at least factor + 1 = {factor + 1} slices (two kept slices with dropped ones between)",
            slices=count, factor=factor))
    kept = list(range(z_start, z_stop, factor))
    dropped = [z for z in range(kept[0], kept[-1]) if (z - z_start) % factor]
    return kept, dropped


def evaluation_range(num_slices, split="all", val_fraction=None):
    """The ``[start, stop)`` z-range scored for ``split`` (``all``, ``validation`` or ``train``).

    ``validation`` and ``train`` are the z-ranges :func:`emzoo.data.triplets.split_range` gives
    the training pipeline, so a model is scored on slices it did not train on.
    """
    if split not in SPLITS:
        raise EmzooError(describe("Invalid value for argument `split`.", f"one of {', '.join(SPLITS)}",
                                  split=split))
    if split == "all":
        return 0, int(num_slices)
    from emzoo.data import triplets

    kwargs = {} if val_fraction is None else {"val_fraction": val_fraction}
    start, stop = triplets.split_range(int(num_slices), split, **kwargs)
    return int(start), int(stop)


def protocol_factor(factor):
    """``factor`` as the protocol's spacing of kept slices: a whole number >= 2.

    The factor is parsed and checked as for upscaling (:func:`emzoo.engine.positions.check_factor`:
    any number >= 1, e.g. ``"2.5"``); the protocol then needs a whole one, since it keeps every
    F-th slice and scores the slices dropped between (factor 1 drops none).

    Example:
        >>> protocol_factor("4")
        4
    """
    value = check_factor(factor)
    if value.denominator != 1 or value < 2:
        raise EmzooError(describe(
            "Invalid value for argument `factor`: the evaluation protocol keeps every F-th slice "
            "and scores the slices dropped between them.", "a whole number >= 2 (2, 3, 4, ...)",
            factor=factor))
    return int(value)


# ---------------------------------------------------------------------------------- baselines
def natural_spline_second_derivatives(values):
    """Second derivatives ``M`` of the natural cubic spline through ``values`` at unit spacing.

    ``values`` is (K, ...) with the knots on axis 0; every other position is an independent
    spline (vectorised over pixels). Solves ``M[i-1] + 4 M[i] + M[i+1] = 6 (y[i+1] - 2 y[i] +
    y[i-1])`` with ``M[0] = M[K-1] = 0`` (the natural boundary condition) by the Thomas
    algorithm; its coefficients are the same for all pixels, so they are scalars.

    Example:
        >>> natural_spline_second_derivatives(np.array([0.0, 1.0, 0.0])).tolist()
        [0.0, -3.0, 0.0]
    """
    values = np.asarray(values, np.float64)
    count = values.shape[0]
    second = np.zeros_like(values)
    if count < 3:
        return second
    rhs = 6.0 * (values[2:] - 2.0 * values[1:-1] + values[:-2])  # interior equations i = 1..K-2
    n = rhs.shape[0]
    diagonal = np.empty(n)
    diagonal[0] = 4.0
    for i in range(1, n):  # forward elimination (scalar coefficients)
        diagonal[i] = 4.0 - 1.0 / diagonal[i - 1]
    for i in range(1, n):
        rhs[i] -= rhs[i - 1] / diagonal[i - 1]
    interior = np.empty_like(rhs)
    interior[-1] = rhs[-1] / diagonal[-1]
    for i in range(n - 2, -1, -1):  # back substitution
        interior[i] = (rhs[i] - interior[i + 1]) / diagonal[i]
    second[1:-1] = interior
    return second


class BaselineInterpolator:
    """Reconstructs dropped slices from kept ones with a classical method along z.

    Args:
        kept: (K, Y, X) array of the kept slices (float, normalised), in z order.
        factor: spacing of the kept slices in slices.
        method: ``nearest``, ``linear``, ``cubic`` (natural cubic spline, see the module) or
            ``flow`` (dense optical flow at the dropped slice's position, :mod:`emzoo.flow`).

    ``slice(j, offset)`` is the reconstruction ``offset`` slices after kept slice ``j``
    (``0 < offset < factor``).

    Example:
        >>> kept = np.stack([np.zeros((2, 2)), np.ones((2, 2))])
        >>> float(BaselineInterpolator(kept, 4, "linear").slice(0, 1)[0, 0])
        0.25
    """

    def __init__(self, kept, factor, method):
        if method not in BASELINES:
            raise EmzooError(describe(f"Unknown baseline `{method}`.", f"some of {', '.join(BASELINES)}",
                                      baseline=method))
        self.kept = np.asarray(kept, np.float64)
        self.factor = int(factor)
        self.method = method
        self.second = natural_spline_second_derivatives(self.kept) if method == "cubic" else None
        if method == "flow":  # dense optical flow between the kept slices (emzoo.flow)
            from emzoo.flow import FlowInterpolator

            self.flow = FlowInterpolator()

    def slice(self, j, offset):
        t = offset / self.factor
        before, after = self.kept[j], self.kept[j + 1]
        if self.method == "nearest":  # ties (t = 0.5) take the slice below
            return before.copy() if t <= 0.5 else after.copy()
        if self.method == "flow":
            return self.flow.interpolate(before.astype(np.float32), after.astype(np.float32), t)
        linear = (1.0 - t) * before + t * after
        if self.method == "linear":
            return linear
        a, b = 1.0 - t, t  # spline on [j, j + 1] at unit knot spacing
        return linear + ((a ** 3 - a) * self.second[j] + (b ** 3 - b) * self.second[j + 1]) / 6.0


# ---------------------------------------------------------------------------------- evaluation
def _score(prediction, target, dtype, quantize):
    from emzoo import metrics

    prediction = np.asarray(prediction, np.float64)
    if quantize and np.issubdtype(np.dtype(dtype), np.integer):
        top = float(np.iinfo(np.dtype(dtype)).max)
        prediction = np.clip(np.round(prediction * top), 0.0, top) / top
    target = np.asarray(target, np.float64)
    return {"psnr": float(metrics.psnr(prediction, target, data_range=1.0)),
            "ssim": float(metrics.ssim(prediction, target, data_range=1.0)),
            "ie": float(metrics.ie(prediction, target))}


def _crop_box(shape, crop):
    height, width = shape
    if crop is None:
        return slice(0, height), slice(0, width)
    crop = int(crop)
    if crop < 1 or crop > min(height, width):
        raise VolumeError(describe("The crop is larger than the slices.",
                                   f"a crop between 1 and {min(height, width)} (the slice size is {height}x{width})",
                                   crop=crop))
    top, left = (height - crop) // 2, (width - crop) // 2
    return slice(top, top + crop), slice(left, left + crop)


def _mean(rows):
    return {name: float(np.mean([row[name] for row in rows])) for name in METRICS}


def evaluate_volume(data, factor, model=None, baselines=("linear", "cubic"), split="all",
                    crop=None, batch_size=None, quantize=False, val_fraction=None, model_name="model",
                    keep_slices=None, tile=None, progress=False, precision="float32",
                    calibrate=True):
    """Runs the protocol on one volume and returns a report (a JSON-ready dict).

    Args:
        data: a path :func:`emzoo.data.volumes.open_volume` accepts, or an opened volume.
        factor: keep every ``factor``-th slice (an integer >= 2; the engine handles factors that
            are not powers of two by recursion to the next power, then linear resampling).
        model: an emzoo interpolator, or None for baselines only.
        baselines: names from ``BASELINES``.
        split: ``all`` the whole volume, ``validation`` / ``train`` the z-range the training
            pipeline uses for that split.
        crop: score a central ``crop`` x ``crop`` region of every slice (None: whole slices).
        batch_size: model batch size (pairs per call of the volume engine; None: its default,
            :func:`emzoo.engine.policy.default_batch_size`, as for upscale and repair).
        tile: the volume engine's tile size for large slices (None: whole slices).
        progress: show the volume engine's progress bar.
        precision: what the model computes in (``"float32"``, ``"bf16"`` or ``"auto"``; see
            :mod:`emzoo.engine.precision`); the report's ``precision`` is the one it ran in.
        calibrate: as :func:`emzoo.engine.upscale_volume`'s (the kept slices are the input it
            calibrates on: it never sees a scored slice).
        quantize: round reconstructions to the volume's dtype before scoring.
        keep_slices: dropped z indices whose reconstructions to return in
            ``report["_slices"]`` (arrays, for figures; not JSON).

    Returns:
        ``{"volume", "shape", "dtype", "factor", "split", "z_range", "kept", "dropped",
        "precision" (the model's, or None), "residual_scales" (its calibrated weight per level, or
        None), "methods": {name: {"mean": {psnr, ssim, ie}, "per_slice": [{z, psnr, ssim, ie}]}}}``.
    """
    from emzoo.data.volumes import open_volume

    factor = protocol_factor(factor)
    baselines = list(baselines or ())
    for name in baselines:
        if name not in BASELINES:
            raise EmzooError(describe(f"Unknown baseline `{name}`.", f"some of {', '.join(BASELINES)}",
                                      baselines=",".join(baselines)))
    if model is None and not baselines:
        raise EmzooError(describe("Nothing to evaluate.", "a model or at least one baseline",
                                  model=None, baselines=""))
    volume = open_volume(data)  # paths, Volumes and (Z, Y, X) arrays
    shape = tuple(int(s) for s in volume.shape)
    if len(shape) != 3:
        raise VolumeError(describe("The volume is not a z-stack.", "a 3-D volume (Z, Y, X)",
                                   shape=shape))
    z_start, z_stop = evaluation_range(shape[0], split, val_fraction)
    kept, dropped = protocol_indices(z_start, z_stop, factor)
    rows_box, cols_box = _crop_box(shape[1:], crop)

    def read(z):
        image = np.asarray(volume.slice(z), np.float64)
        if image.ndim == 3 and image.shape[-1] in (1, 3, 4):
            image = image[..., :3].mean(axis=-1)
        if image.ndim != 2:
            raise VolumeError(describe(f"Slice {z} is not a grey-level image.", "(Y, X) slices",
                                       shape=image.shape))
        image = image[rows_box, cols_box]
        if not np.all(np.isfinite(image)):
            raise VolumeError(describe(f"Slice {z} contains NaN or Inf values.", "finite values",
                                       slice=z))
        return image

    kept_stack = np.stack([read(z) for z in kept]).astype(np.float32)
    interpolators = {name: BaselineInterpolator(kept_stack, factor, name) for name in baselines}
    reconstruction = None
    if model is not None:
        # The volume engine (the same code path as `emzoo upscale`): kept slices in, the
        # (K - 1) * factor + 1 slices of the recursion out; float32 in, so nothing is quantised.
        from emzoo.engine import upscale_volume

        upscaled = upscale_volume(kept_stack, model, factor=factor, output=None, tile=tile,
                                  batch_size=batch_size, progress=progress, precision=precision,
                                  calibrate=calibrate)
        reconstruction = upscaled["array"]
    methods = {name: [] for name in baselines}
    if model is not None:
        methods[model_name] = []
    keep_slices = set(keep_slices or ())
    saved = {}
    dtype = volume.dtype
    for j in range(len(kept) - 1):
        for offset in range(1, factor):
            z = kept[j] + offset
            target = read(z)
            candidates = {name: interpolators[name].slice(j, offset) for name in baselines}
            if reconstruction is not None:
                candidates[model_name] = np.clip(reconstruction[j * factor + offset], 0.0, 1.0)
            for name, prediction in candidates.items():
                methods[name].append({"z": z, **_score(prediction, target, dtype, quantize)})
            if z in keep_slices:
                saved[z] = {"ground truth": target, **candidates}
    report = {
        "volume": str(data) if isinstance(data, (str, os.PathLike)) else getattr(volume, "path", None),
        "shape": list(shape), "dtype": str(np.dtype(dtype)), "factor": factor, "split": split,
        "z_range": [z_start, z_stop], "crop": None if crop is None else int(crop),
        "quantized": bool(quantize), "kept": kept, "dropped": dropped,
        "precision": None if model is None else upscaled["precision"],
        "residual_scales": None if model is None else upscaled["residual_scales"],
        "methods": {name: {"mean": _mean(rows), "per_slice": rows} for name, rows in methods.items()},
    }
    if keep_slices:
        report["_slices"] = saved
    return report


def format_table(report):
    """An aligned text table of the mean scores of every method in ``report``.

    Example:
        >>> print(format_table(report))                       # doctest: +SKIP
        method    PSNR (dB)    SSIM      IE  slices
        linear       28.820  0.7431   5.912      72
    """
    header = ("method", "PSNR (dB)", "SSIM", "IE", "slices")
    rows = []
    for name, result in report["methods"].items():
        mean = result["mean"]
        rows.append((name, f"{mean['psnr']:.3f}", f"{mean['ssim']:.4f}", f"{mean['ie']:.3f}",
                     str(len(result["per_slice"]))))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    for row in rows:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
    title = (f"factor x{report['factor']}, split {report['split']} (z {report['z_range'][0]}..{report['z_range'][1] - 1}), "
             f"{len(report['dropped'])} dropped slices scored, {report['dtype']}")
    return title + "\n" + "\n".join(lines)
