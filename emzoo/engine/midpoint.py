"""The midpoint engine: predicts midpoints of slice pairs with a model, in batches and tiles.

Slices are float32 arrays (H, W, C) in [0, 1] identified by integer keys (their position on the
dense grid), so that a FILM model's features can be cached per key (and per tile) and reused by
every pair that uses the slice. For models that expose ``extract(image) -> features`` and
``interpolate_from_features(features0, features1, time)`` (FILM), each slice's features are
computed once and reused for both neighbouring pairs and across recursion levels; the result is
the same as calling the model on each pair. How the model is run (batch size, XLA) is decided in
:mod:`emzoo.engine.policy`.
"""

import numpy as np

from emzoo.engine.policy import compiled_function, default_batch_size, resolve_jit_compile
from emzoo.engine.precision import resolve_precision, with_precision
from emzoo.engine.tiler import Tiler
from emzoo.errors import EmzooError, check_integer, describe


class MidpointEngine:
    """Predicts midpoints of slice pairs with a model: tiles, channels, batches, feature reuse.

    Midpoints are clipped to [0, 1] (they feed the next recursion level as inputs).

    Args:
        model: an interpolator (dict in, dict with "image" out) with ``size_multiple`` and
            ``channels``.
        height, width: slice geometry. Slices are grey (H, W, 1); for 3-channel models they are
            replicated to RGB and the output averaged back to grey.
        tile, overlap: see :class:`Tiler`.
        batch_size: tile pairs per model call (``None``: :func:`default_batch_size`).
        reuse_features: use ``extract``/``interpolate_from_features`` when the model has them
            (``None``: when available).
        jit_compile: compile model calls with XLA (TensorFlow backend): True, False or
            ``"auto"`` (see :func:`resolve_jit_compile`).
        expected_pairs: how many pairs the job will interpolate, if known (for ``"auto"``).
        precision: what the model computes in: ``"float32"``, ``"bf16"`` (Keras
            ``mixed_bfloat16``, refused where unsupported) or ``"auto"`` (bf16 where supported);
            see :mod:`emzoo.engine.precision`. The resolved one is :attr:`precision`.
    """

    def __init__(self, model, height, width, tile=None, overlap=32, batch_size=None,
                 reuse_features=None, jit_compile="auto", expected_pairs=None,
                 precision="float32"):
        self.precision = resolve_precision(precision, model)
        model = with_precision(model, self.precision)
        self.model = model
        if batch_size is None:
            batch_size = default_batch_size()
        self.batch_size = check_integer("batch_size", batch_size)
        multiple = int(getattr(model, "size_multiple", 1) or 1)
        if tile is not None:
            tile = check_integer("tile", tile)
            if tile < multiple:
                raise EmzooError(describe(
                    "Invalid value for argument `tile`: smaller than the model's size multiple.",
                    f"a tile of at least {multiple} pixels (better a multiple of {multiple})",
                    tile=tile))
        overlap = check_integer("overlap", overlap, minimum=0)
        if tile is not None and overlap >= tile:
            raise EmzooError(describe("Invalid value for argument `overlap`.",
                                      f"fewer pixels than the tile ({tile})", overlap=overlap))
        self.model_channels = int(getattr(model, "channels", 1))
        if self.model_channels not in (1, 3):
            raise EmzooError(describe(
                f"The model takes {self.model_channels}-channel images; volumes are grey.",
                "a model with 1 channel (grey) or 3 (grey slices are replicated to RGB and the "
                "output averaged back)", model_channels=self.model_channels))
        self.tiler = Tiler(height, width, tile, overlap, multiple)
        has_features = callable(getattr(model, "extract", None)) and callable(
            getattr(model, "interpolate_from_features", None))
        self.reuse_features = has_features if reuse_features is None else bool(reuse_features)
        if self.reuse_features and not has_features:
            raise EmzooError(describe("`reuse_features=True` needs a model with `extract` and "
                                      "`interpolate_from_features`.", "a FILM model",
                                      model=type(model).__name__))
        self._features = {}  # (key, tile index) -> features of one tile (batch of 1)
        self._largest = 0  # largest batch run so far (later batches are padded up to it)
        self.calls = {"pairs": 0, "extract": 0}
        calls = None if expected_pairs is None else expected_pairs * len(self.tiler)
        self.jit_compile = resolve_jit_compile(jit_compile, self.reuse_features, calls,
                                               self.precision)
        if self.reuse_features:
            self._extract = compiled_function(model, "extract", self.jit_compile)
            self._from_features = compiled_function(model, "from_features", self.jit_compile)
        else:
            self._call = compiled_function(model, "call", self.jit_compile)

    # ----------------------------------------------------------------------------- channels
    def _to_model(self, tiles):
        return np.repeat(tiles, 3, axis=-1) if self.model_channels == 3 else tiles

    def _from_model(self, tiles):
        tiles = np.asarray(tiles, np.float32)
        return tiles.mean(axis=-1, keepdims=True) if self.model_channels == 3 else tiles

    def _batch_shape(self, count, total):
        """Batch size to run ``count`` items at: padded up to the largest used so far.

        Constant batch shapes mean the compiled functions are traced once or twice per run
        instead of once per leftover size (tracing FILM costs seconds); the padding repeats the
        last item and its outputs are dropped.
        """
        self._largest = max(self._largest, min(self.batch_size, total))
        return max(count, self._largest)

    def _full_batch(self, items, total):
        size = self._batch_shape(len(items), total)
        return np.stack(items + items[-1:] * (size - len(items)))

    def _time(self, count):
        return np.full((count, 1), 0.5, np.float32)

    # ---------------------------------------------------------------------------- features
    def _ensure_features(self, keys, slices):
        import keras

        todo = [(key, i) for key in dict.fromkeys(keys) for i in range(len(self.tiler))
                if (key, i) not in self._features]
        tiles = {}
        for key in dict.fromkeys(k for k, _ in todo):
            tiles[key] = self._to_model(self.tiler.split(slices[key]))
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            features = self._extract(self._full_batch([tiles[k][i] for k, i in batch], len(todo)))
            self.calls["extract"] += len(batch)
            for index, job in enumerate(batch):
                self._features[job] = keras.tree.map_structure(
                    lambda t, index=index: t[index:index + 1], features)

    def forget(self, keep=()):
        """Drops cached features except those of the slices whose keys are in ``keep``."""
        keep = set(keep)
        self._features = {job: f for job, f in self._features.items() if job[0] in keep}

    # --------------------------------------------------------------------------- midpoints
    def midpoints(self, pairs, slices, scale=1.0):
        """Midpoints (list of (H, W, C) arrays) of ``pairs`` of keys into the dict ``slices``.

        ``scale`` < 1 blends each towards the mean of its pair (:func:`toward_mean`; the weight
        :mod:`~emzoo.engine.calibration` fits for a volume).
        """
        if not pairs:
            return []
        origin_top, origin_left = self.tiler.origin  # where the slices given start (a window: a part)
        region_top, _, region_left, _ = self.tiler.region  # where the midpoints returned lie
        height, width = np.shape(slices[pairs[0][0]])[:2]
        edges = (origin_top == 0, origin_top + height == self.tiler.height, origin_left == 0,
                 origin_left + width == self.tiler.width)
        model_inputs = {key: fill_margins(slices[key], edges=edges) for pair in pairs for key in pair}
        jobs = [(p, i) for p in range(len(pairs)) for i in range(len(self.tiler))]
        outputs = np.empty((len(pairs), len(self.tiler)) + self.tiler.padded + (1,),
                           np.float32)
        if self.reuse_features:
            import keras
            from keras import ops

            self._ensure_features([k for pair in pairs for k in pair], model_inputs)
            concat = lambda *t: ops.concatenate(t, axis=0)  # noqa: E731
            for start in range(0, len(jobs), self.batch_size):
                batch = jobs[start:start + self.batch_size]
                left = [self._features[(pairs[p][0], i)] for p, i in batch]
                right = [self._features[(pairs[p][1], i)] for p, i in batch]
                size = self._batch_shape(len(batch), len(jobs))
                left += left[-1:] * (size - len(batch))
                right += right[-1:] * (size - len(batch))
                image = self._from_features(keras.tree.map_structure(concat, *left),
                                            keras.tree.map_structure(concat, *right),
                                            self._time(size))
                self._store(outputs, batch, image)
        else:
            tiles = {}
            for key in dict.fromkeys(k for pair in pairs for k in pair):
                tiles[key] = self._to_model(self.tiler.split(model_inputs[key]))
            for start in range(0, len(jobs), self.batch_size):
                batch = jobs[start:start + self.batch_size]
                x0 = self._full_batch([tiles[pairs[p][0]][i] for p, i in batch], len(jobs))
                x1 = self._full_batch([tiles[pairs[p][1]][i] for p, i in batch], len(jobs))
                self._store(outputs, batch, self._call(x0, x1, self._time(len(x0))))
        self.calls["pairs"] += len(pairs)
        offset = (region_top - origin_top, region_left - origin_left)
        return [keep_flat_regions(slices[a], slices[b], toward_mean(
                    slices[a], slices[b], np.clip(self.tiler.merge(tiles_of_pair), 0.0, 1.0),
                    scale, offset), offset=offset)
                for (a, b), tiles_of_pair in zip(pairs, outputs)]

    def _store(self, outputs, batch, image):
        image = self._from_model(_numpy(image)[:len(batch)])
        for (p, i), tile in zip(batch, image):
            outputs[p, i] = tile

    def fill_grid(self, slices, first, last, levels, scales=None):
        """Fills ``slices`` (dense keys ``first``..``last``, every ``2**levels``-th given) by recursion.

        Level by level (breadth first), so each level's midpoints go through the model in full
        batches; features of the last level's midpoints are never needed, so never extracted.
        ``scales`` (one per level, level 1 first; ``None``: all 1) is each level's ``scale`` of
        :meth:`midpoints`.
        """
        step, level = 1 << levels, 1
        while step > 1:
            half = step // 2
            new = list(range(first + half, last, step))
            pairs = [(k - half, k + half) for k in new]
            scale = 1.0 if scales is None else scales[level - 1]
            slices.update(zip(new, self.midpoints(pairs, slices, scale)))
            step, level = half, level + 1
        return slices


FLAT_TOLERANCE = 1.0 / 255.0  # neighbours this close (in [0, 1] units) agree: one 8-bit grey level
FLAT_WINDOW = 5  # an agreeing region is made of whole windows of this many pixels square
FLAT_RAMP = 2  # pixels over which the new slice passes from the neighbours' value to the model's


def toward_mean(x0, x1, midpoint, scale, offset=(0, 0)):
    """``mean + scale * (midpoint - mean)``, ``mean`` the mean of ``x0`` and ``x1``: the model's
    midpoint weighed against linear interpolation (``scale`` 1: the model's, 0: linear).

    ``midpoint`` may be a part of the slice starting at ``offset`` (as :func:`keep_flat_regions`).

    Example:
        >>> x0, x1 = np.zeros((2, 2, 1), np.float32), np.ones((2, 2, 1), np.float32)
        >>> round(float(toward_mean(x0, x1, np.full((2, 2, 1), 0.9, np.float32), 0.5)[0, 0, 0]), 4)
        0.7
    """
    if scale == 1.0:
        return midpoint
    top, left = offset
    part = (slice(top, top + midpoint.shape[0]), slice(left, left + midpoint.shape[1]))
    mean = np.float32(0.5) * (np.asarray(x0, np.float32)[part] + np.asarray(x1, np.float32)[part])
    return (mean + np.float32(scale) * (midpoint - mean)).astype(np.float32)


def keep_flat_regions(x0, x1, midpoint, tolerance=FLAT_TOLERANCE, window=FLAT_WINDOW, ramp=FLAT_RAMP,
                      offset=(0, 0)):
    """``midpoint`` where its neighbours differ; their mean where they agree, blended over ``ramp`` pixels.

    Aligned stacks have black registration margins, masked regions and padding, equal in every
    slice; a model may still paint structure there (it was trained on tissue). Where ``x0`` and
    ``x1`` agree within ``tolerance`` over whole ``window`` x ``window`` squares (the union of
    such squares: isolated equal pixels in tissue do not count, the edge pixels of a margin do),
    the new slice takes their mean; outside, the weight of that mean falls to zero over ``ramp``
    pixels, so tissue further than ``ramp`` pixels from such a region is the model's output
    unchanged. Constant neighbours thus give that constant, and a margin stays what it is.

    Args:
        x0, x1: the neighbouring slices, ``(H, W)`` or ``(H, W, C)`` float in [0, 1].
        midpoint: the model's new slice, the same shape, or a part of it starting at ``offset``
            ``(y, x)`` (the blockwise engine's windows: the neighbours reach beyond the part, so
            the part gets the values the whole slice would).

    Returns:
        float32 array of ``midpoint``'s shape.

    Example:
        >>> flat = np.zeros((8, 8, 1), np.float32)
        >>> float(keep_flat_regions(flat, flat, np.full((8, 8, 1), 0.2, np.float32)).max())
        0.0
    """
    x0, x1 = np.asarray(x0, np.float32), np.asarray(x1, np.float32)
    midpoint = np.asarray(midpoint, np.float32)
    equal = np.abs(x0 - x1) <= np.float32(tolerance + 1e-6)
    if equal.ndim == 3:
        equal = equal.all(axis=-1)
    if not equal.any():
        return midpoint
    core = _window_filter(equal, window, np.minimum)  # centres of all-agreeing squares
    if not core.any():
        return midpoint
    weight = (_window_filter(core, window, np.maximum) & equal).astype(np.float32)
    for _ in range(ramp):
        weight = np.maximum(weight, _window_filter(weight, 3, np.maximum) - np.float32(1.0 / (ramp + 1)))
    if midpoint.ndim == 3:
        weight = weight[..., None]
    top, left = offset
    part = (slice(top, top + midpoint.shape[0]), slice(left, left + midpoint.shape[1]))
    mean = np.float32(0.5) * (x0[part] + x1[part])
    return midpoint + weight[part] * (mean - midpoint)


def fill_margins(image, tolerance=FLAT_TOLERANCE, window=FLAT_WINDOW, edges=(True, True, True, True)):
    """``image`` with its flat margins filled by mirroring the tissue next to them: what the model sees.

    A margin is a flat region (``window`` x ``window`` squares of one value within ``tolerance``)
    reaching the slice's edge: registration margins and padding. A model shown a black margin
    misjudges the motion of the tissue beside it (its features see a still edge), which spoils
    the tissue within some tens of pixels of the margin; shown the tissue mirrored across the
    margin's edge, it interpolates that tissue as it would without the margin. Each row's run of
    margin from the left and from the right edge is mirrored from the row's tissue, then each
    column's from the top and bottom (for rows that are margin throughout); flat regions inside
    the tissue are left as they are. Only the model's inputs are filled: the margins of the new
    slice come from :func:`keep_flat_regions`.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` float in [0, 1].
        edges: which of its sides ``(top, bottom, left, right)`` are edges of the slice (the
            blockwise engine passes parts of slices: a flat run reaching a cut is not a margin).

    Returns:
        float32 array of ``image``'s shape (``image`` itself when it has no margin).

    Example:
        >>> row = np.array([[0, 0, 0, 0.2, 0.4, 0.6]] * 6, np.float32)
        >>> row[:, :3] = 0.0
        >>> fill_margins(row, window=3)[0].tolist()
        [0.6000000238418579, 0.4000000059604645, 0.20000000298023224, 0.20000000298023224, 0.4000000059604645, 0.6000000238418579]
    """
    image = np.asarray(image, np.float32)
    grey = image.mean(axis=-1) if image.ndim == 3 else image
    spread = _window_filter(grey, window, np.maximum) - _window_filter(grey, window, np.minimum)
    core = spread <= np.float32(tolerance + 1e-6)
    if not core.any():
        return image
    flat = _window_filter(core, window, np.maximum)
    top, bottom, left, right = edges
    rows = _mirror_edges(flat, left, right)
    filled = image[np.arange(image.shape[0])[:, None], rows]
    still = flat & flat.all(axis=1, keepdims=True)  # rows that are margin throughout
    if still.any() and not still.all():
        columns = _mirror_edges(still.T, top, bottom).T
        filled = filled[columns, np.arange(image.shape[1])[None, :]]
    return filled


def _mirror_edges(flat, start=True, end=True):
    """For each row of the 2-D mask ``flat``, the column to read each pixel from: a run of ``True``
    from the row's start (``start``) or end (``end``) mirrored across its end into the row's other
    pixels (rows all ``True`` and pixels not in such a run read themselves)."""
    height, width = flat.shape
    columns = np.broadcast_to(np.arange(width), (height, width))
    tissue = ~flat
    has_tissue = tissue.any(axis=1, keepdims=True)
    first = np.where(has_tissue & start, tissue.argmax(axis=1)[:, None], 0)  # the start run's length
    last = np.where(has_tissue & end, width - tissue[:, ::-1].argmax(axis=1)[:, None], width)
    source = np.where(columns < first, 2 * first - 1 - columns, columns)
    source = np.where(columns >= last, 2 * last - 1 - columns, source)
    return np.clip(source, 0, width - 1)


def _window_filter(array, size, reduce):
    """``reduce`` (np.minimum / np.maximum) over the ``size`` x ``size`` square around each pixel
    of a 2-D array (edges repeated), done separably along each axis."""
    half = size // 2
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (half, half)
        padded = np.pad(array, pad, mode="edge")
        length = array.shape[axis]
        part = (lambda shift: padded[shift:shift + length]) if axis == 0 else (
            lambda shift: padded[:, shift:shift + length])
        out = part(0)
        for shift in range(1, size):
            out = reduce(out, part(shift))
        array = out
    return array


def _numpy(tensor):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(tensor))
