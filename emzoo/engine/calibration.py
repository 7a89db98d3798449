"""How far to trust the model on this volume: per-level weights between it and linear interpolation.

A model trained on some pixel sizes and z spacings can be worse than linear interpolation on
another: with 30 nm pixels and 10 nm slices, neighbouring slices differ by a fraction of a pixel,
linear interpolation is almost exact, and what the model adds is mostly its own error (the zoo
table in benchmarks/README.md). Whether it is, the
volume itself tells, without any slice it does not have: drop an input slice, predict it from its
two neighbours, and compare with their mean.

The new slices of a job lie closer together than any two input slices: level 1 of the recursion
fills gaps of one input spacing, level 2 of half of it, and so on, while the closest slices the
input can test are two spacings apart. What a model gains over linear depends on how far things
move between the slices *in pixels*, and EM tissue looks much alike across scales: a gap of
``g`` spacings at pixel ``p`` resembles a gap of ``2 g`` at pixel ``2 p``. So level ``L`` is
tested on the input's own triplets (slices ``z - 1, z, z + 1``: a gap of two spacings) with every
slice binned ``2 ** L`` times in y and x. At each level :func:`residual_scales` fits the weight
``w`` that makes ``mean + w * (model - mean)`` closest to the dropped slices (least squares:
``w = sum((truth - mean) (model - mean)) / sum((model - mean) ** 2)``, clipped to [0, 1]), and
the engine blends every midpoint of that level towards the mean of its pair by it
(:meth:`~emzoo.engine.midpoint.MidpointEngine.midpoints`, ``scale``). Measured in
benchmarks/README.md ("Calibration towards linear").

Example:
    >>> import numpy as np
    >>> from emzoo.engine.interpolators import midpoint_engine
    >>> def overshoot(inputs, training=False):     # the mean plus twice the step: always wrong
    ...     return {"image": inputs["x1"] * 2.5 - inputs["x0"] * 1.5}
    >>> ramp = np.linspace(0, 1, 9, dtype=np.float32)[:, None, None, None]
    >>> ramp = ramp * np.ones((9, 128, 128, 1), np.float32)     # slices changing along z
    >>> engines = lambda height, width: midpoint_engine(overshoot, height, width)
    >>> [round(w, 2) for w in residual_scales(lambda z, size: ramp[z], 9, engines, 2)]
    [0.0, 0.0]
"""

import numpy as np

SAMPLES = 4  # input places (triplets) tested at each level
SIDE = 256  # pixels a side of the binned part of each slice tested at a level (its centre)
MIN_SIDE = 32  # a level whose binned slices are smaller is not tested (it keeps the weight above)


def _places(num_slices, samples):
    """Up to ``samples`` input slices with a neighbour on each side, evenly spread."""
    candidates = np.arange(1, num_slices - 1)
    if candidates.size == 0:
        return []
    picks = np.linspace(0, candidates.size - 1, min(samples, candidates.size))
    return sorted({int(candidates[int(round(p))]) for p in picks})


def _binned(image, factor):
    """(H, W, 1) ``image`` reduced by means of ``factor`` x ``factor`` blocks (edges dropped)."""
    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:height, :width].reshape(height // factor, factor, width // factor, factor, 1)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _fit(engine, slices, places):
    """The least-squares weight of the model's midpoints against their pair's mean at
    ``places`` (``slices[z - 1]``, ``slices[z + 1]`` -> ``slices[z]``); ``None`` when the model
    equals the mean there (nothing to weigh)."""
    cross = energy = 0.0
    pixels = 0
    for z in places:
        below, truth, above = slices[z - 1], slices[z], slices[z + 1]
        (midpoint,) = engine.midpoints([(0, 1)], {0: below, 1: above})
        mean = 0.5 * (below.astype(np.float64) + above)
        residual = np.asarray(midpoint, np.float64) - mean
        cross += float(np.sum((truth - mean) * residual))
        energy += float(np.sum(residual * residual))
        pixels += residual.size
        engine.forget()
    # the model within float rounding of the mean (1e-5 is far below one 16-bit grey level)
    return None if energy <= pixels * 1e-10 else cross / energy


def residual_scales(read, num_slices, make_engine, levels, samples=SAMPLES, side=SIDE):
    """The weight of the model against linear interpolation at each of ``levels`` recursion levels.

    Args:
        read: ``read(z, size)`` gives the centre (at most ``size`` pixels a side) of input slice
            ``z`` as (h, w, 1) float32 in [0, 1].
        num_slices: the input's slices.
        make_engine: ``make_engine(height, width)`` gives a midpoint engine
            (:func:`~emzoo.engine.interpolators.midpoint_engine`) for slices of that size.
        levels: recursion levels of the job (``log2`` of its dense grid).
        samples: places tested at each level.
        side: the side (pixels, after binning) of the part tested.

    Returns:
        A tuple of ``levels`` floats in [0, 1], level 1 (the midpoints of input neighbours)
        first. A level whose binned slices are under :data:`MIN_SIDE` pixels keeps the weight of
        the level above; 1.0 where the input cannot tell at all (under 3 slices, slices under
        ``2 * MIN_SIDE`` pixels, or a model that adds nothing to the mean).
    """
    places = _places(num_slices, samples)
    needed = sorted({n for z in places for n in (z - 1, z, z + 1)})
    weights = []
    for level in range(1, levels + 1):
        factor = 2 ** level
        slices = {z: _binned(read(z, side * factor), factor) for z in needed}
        if not slices or min(slices[needed[0]].shape[:2]) < MIN_SIDE:
            # too small to test: deeper levels fill smaller gaps, where a model gains no more
            # than at the level above, so they keep its weight (1 when none was tested)
            weights.append(weights[-1] if weights else 1.0)
            continue
        weight = _fit(make_engine(*slices[needed[0]].shape[:2]), slices, places)
        weights.append(1.0 if weight is None else float(np.clip(weight, 0.0, 1.0)))
    return tuple(weights)


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
    height, width = plan.input_shape[1:]
    engines = {}

    def make_engine(h, w):
        if (h, w) not in engines:
            engines[(h, w)] = midpoint_engine(
                model, h, w, None, options.overlap, batch_size=options.batch_size,
                reuse_features=options.reuse_features, jit_compile=False,
                precision=options.precision)
        return engines[(h, w)]

    largest, read_once = SIDE * 2 ** levels, {}

    def read(z, size):  # the engine's (h, w, 1) float32 in [0, 1], the slice's centre
        if z not in read_once:  # each slice read once, its largest centre kept
            top, left = max(0, (height - largest) // 2), max(0, (width - largest) // 2)
            read_once[z] = unit(source, z)[top:top + largest, left:left + largest]
        whole = read_once[z]
        top, left = max(0, (whole.shape[0] - size) // 2), max(0, (whole.shape[1] - size) // 2)
        return whole[top:top + size, left:left + size]

    scales = residual_scales(read, plan.input_shape[0], make_engine, levels)
    return dataclasses.replace(plan, options=dataclasses.replace(options, residual_scales=scales))
