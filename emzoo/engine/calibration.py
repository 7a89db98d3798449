"""How far to trust the model on this volume: per-level weights between it and linear interpolation.

A model trained on some pixel sizes and z spacings can be worse than linear interpolation on
another: with 30 nm pixels and 10 nm slices, neighbouring slices differ by a fraction of a pixel,
linear interpolation is almost exact, and what the model adds is mostly its own error (the zoo
table in benchmarks/README.md: the default 2.8 dB below linear at x2 there). Whether it is, the
volume itself tells, without any slice it does not have: drop an input slice, predict it from its
two neighbours, and compare with their mean.

:func:`residual_scales` does that on a few places of the input, at two gaps (neighbours 2 and 4
input spacings apart), and fits the weight ``w`` that makes ``mean + w * (model - mean)`` closest
to the dropped slices (least squares: ``w = sum((truth - mean) (model - mean)) / sum((model -
mean) ** 2)``). The new slices of a job lie closer than any gap the input can test (level 1 at one
input spacing, level 2 at half of it, ...), and on the regions measured the best weight falls
with the gap about linearly in its logarithm, so each level's weight is that line extrapolated,
clipped to [0, 1]: ``w(level) = w2 + level * (w2 - w4)``. The engine then blends every midpoint of
that level towards the mean of its pair (:meth:`~emzoo.engine.midpoint.MidpointEngine.midpoints`,
``scale``). Measured (benchmarks/README.md, "Calibration towards linear"): the default on
FIB-SEM with 30 nm pixels went from -2.79 / -1.50 / -0.34 dB under linear at x2 / x4 / x8 to
about level, while on its own 10 nm data the weights stay near 1.

Example:
    >>> import numpy as np
    >>> from emzoo.engine.interpolators import midpoint_engine
    >>> def doubled(inputs, training=False):        # a model that overshoots: mean + 2 * (x1 - mean)
    ...     return {"image": 1.5 * inputs["x1"] - 0.5 * inputs["x0"]}
    >>> ramp = np.linspace(0, 1, 9, dtype=np.float32)[:, None, None, None] * np.ones((9, 8, 8, 1), np.float32)
    >>> [round(w, 2) for w in residual_scales(lambda z: ramp[z], 9, midpoint_engine(doubled, 8, 8), 2)]
    [0.0, 0.0]
"""

import numpy as np

SAMPLES = 4  # places of the input tested at each gap
CROP = 512  # the largest side of the part of each slice tested (its centre)
_GAPS = (1, 2)  # the tested neighbours lie this many input slices on each side of the dropped one


def _places(num_slices, reach, samples):
    """Up to ``samples`` input slices, evenly spread, with ``reach`` slices on each side."""
    candidates = np.arange(reach, num_slices - reach)
    if candidates.size == 0:
        return []
    picks = np.linspace(0, candidates.size - 1, min(samples, candidates.size))
    return sorted({int(candidates[int(round(p))]) for p in picks})


def _fit(engine, read, places, reach):
    """The least-squares weight of the model's midpoint against the mean, over ``places``;
    ``None`` when the model equals the mean there (nothing to weigh)."""
    cross = energy = 0.0
    for z in places:
        below, truth, above = read(z - reach), read(z), read(z + reach)
        (midpoint,) = engine.midpoints([(0, 1)], {0: below, 1: above})
        mean = 0.5 * (below.astype(np.float64) + above)
        residual = np.asarray(midpoint, np.float64) - mean
        cross += float(np.sum((truth - mean) * residual))
        energy += float(np.sum(residual * residual))
        engine.forget()
    return None if energy <= 1e-12 else cross / energy


def residual_scales(read, num_slices, engine, levels, samples=SAMPLES):
    """The weight of the model against linear interpolation at each of ``levels`` recursion levels.

    Args:
        read: ``read(z)`` gives input slice ``z`` as (H, W, 1) float32 in [0, 1] (a part of it is
            enough: the same part for every slice).
        num_slices: the input's slices.
        engine: a midpoint engine (:func:`~emzoo.engine.interpolators.midpoint_engine`) for that
            slice size.
        levels: recursion levels of the job (``log2`` of its dense grid).
        samples: places tested at each gap.

    Returns:
        A tuple of ``levels`` floats in [0, 1], level 1 (the midpoints of input neighbours)
        first; all 1.0 when the input is too short to test (under 3 slices) or the model adds
        nothing to the mean.
    """
    fitted = []
    for reach in _GAPS:
        places = _places(num_slices, reach, samples)
        weight = _fit(engine, read, places, reach) if places else None
        if weight is None:
            break
        fitted.append(weight)
    if not fitted:
        return (1.0,) * levels
    near = fitted[0]
    slope = near - fitted[1] if len(fitted) > 1 else 0.0  # gained per halving of the gap
    return tuple(float(np.clip(near + level * slope, 0.0, 1.0)) for level in range(1, levels + 1))


def centre_crop(height, width, size=CROP):
    """``(top, left, crop_height, crop_width)`` of the centre part tested (at most ``size``)."""
    crop_h, crop_w = min(height, size), min(width, size)
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def calibrate_plan(plan, model):
    """``plan`` with its :class:`~emzoo.engine.plan.EngineOptions`' ``residual_scales`` fitted
    on its input with ``model`` (an interpolator), when it is an upscaling plan whose options
    ask for calibration and hold no scales yet; else ``plan`` itself."""
    import dataclasses

    from emzoo.engine.interpolators import midpoint_engine
    from emzoo.engine.job import unit

    options = plan.options
    if plan.job != "upscale" or not options.calibrate or options.residual_scales is not None:
        return plan
    levels = plan.recipe.grid.bit_length() - 1
    if levels == 0:
        return plan
    source = plan.open_input()
    top, left, height, width = centre_crop(*plan.input_shape[1:])
    engine = midpoint_engine(model, height, width, None, options.overlap,
                             batch_size=options.batch_size, reuse_features=options.reuse_features,
                             jit_compile=False, precision=options.precision)

    def read(z):  # the engine's (H, W, 1) float32 in [0, 1], its centre part
        return unit(source, z)[top:top + height, left:left + width]

    scales = residual_scales(read, plan.input_shape[0], engine, levels)
    return dataclasses.replace(plan, options=dataclasses.replace(options, residual_scales=scales))
