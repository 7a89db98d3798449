"""The volume engine: z-upscaling and slice repair of whole volumes with any emzoo interpolator.

How a volume is upscaled by a factor ``F`` (a number >= 1, e.g. 2, 4, 3, 2.5, or the ratio of the z
spacing to the x spacing for ``isotropic=True``):

1. **Dense grid by recursive midpoints.** ``P`` = the smallest power of two >= ``F``. Between each
   pair of neighbouring input slices the model predicts the midpoint (``time = 0.5``), then the
   midpoints of each half, and so on, ``log2(P)`` levels deep, giving the dense grid of
   ``(N - 1) * P + 1`` slices at z = k / P (in input-slice units). Input slices are part of the
   grid unchanged.
2. **Exact target positions.** The output has ``M = floor((N - 1) * F) + 1`` slices at
   z = j / F, j = 0 .. M - 1 (its z spacing is the input spacing / F). A position that falls on the
   dense grid takes that slice; any other position is linearly interpolated between the two
   nearest dense slices (weights by distance along z). For a power-of-two ``F`` every output slice
   is on the grid, so the output is exactly ``(N - 1) * F + 1`` slices and the first and last
   input slices are kept unchanged (bit for bit: input slices are copied, never re-quantised).
   For other factors, the last output slice lies at or before the last input slice (it is the last
   input slice whenever ``(N - 1) * F`` is a whole number). Resampling is along z only: each slice
   keeps its (Y, X) shape, square or not.

Slices are normalised by their dtype's range (``emzoo.data.volume.normalise``), never per slice,
and written back in the input dtype (uint8, uint16 or float32), with the voxel size's z spacing
divided by ``F``.

**Tiles.** Slices larger than ``tile`` are cut into ``tile`` x ``tile`` tiles overlapping by
``overlap`` pixels. Each tile is reflect-padded to the model's ``size_multiple`` and cropped back.
Tiles are blended with separable weights that are zero within ``overlap // 4`` pixels of an inner
tile edge (where a tile lacks context), then rise as a raised cosine to 1; weights are normalised by
their sum, so a pixel seen by one tile takes that tile's value and overlaps cross-fade smoothly.

**Streaming.** Input slices are read as needed and output slices written in order, so memory holds
only a chunk of a few input pairs and their recursion trees (it does not grow with the number of
slices). Outputs go through :class:`emzoo.data.volume.VolumeWriter`: a temporary name renamed when
complete; an existing output is never replaced without ``overwrite=True``.

**Speed.** Pairs (and tiles) are batched ``batch_size`` at a time through a compiled function
(default: 4 with a GPU, 1 on CPU).
For models that expose ``extract(image) -> features`` and
``interpolate_from_features(features0, features1, time)`` (FILM), each slice's features are
computed once and reused for both neighbouring pairs and across recursion levels; the result is
the same as calling the model on each pair. Those calls are XLA-compiled on the TensorFlow
backend when a job makes enough calls to amortise the compile (``jit_compile="auto"``; see
:func:`resolve_jit_compile`).

Example:
    >>> import emzoo, numpy as np
    >>> model = emzoo.load("default")                                   # doctest: +SKIP
    >>> stack = np.zeros((5, 64, 96), np.uint8)
    >>> out = emzoo.upscale_volume(stack, model, factor=4)              # doctest: +SKIP
    >>> out.shape                                                       # doctest: +SKIP
    (17, 64, 96)
    >>> emzoo.upscale_volume("stack.tif", "default", isotropic=True, output="iso.tif")  # doctest: +SKIP
"""

import errno
import fractions
import math
import os
import sys
import time as time_lib

import numpy as np

from emzoo.errors import EmzooError, VolumeError, check_integer, describe

__all__ = ["MidpointEngine", "Progress", "Tiler", "default_batch_size", "parse_factor",
           "resolve_jit_compile",
           "parse_slices", "parse_voxel_size", "repair_volume", "upscale_positions",
           "upscale_volume"]

_RESAMPLE_DENOMINATOR = 10_000  # factors are read as fractions with at most this denominator
_CHUNK_GRID = 64  # dense-grid slices per chunk of input pairs (bounds memory)


# ------------------------------------------------------------------------------------ arguments
def _factor_fraction(factor):
    """``factor`` as an exact fraction (so that grid positions are computed without rounding)."""
    if isinstance(factor, bool):
        factor = None
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise EmzooError(describe("Invalid value for argument `factor`.", "a number >= 1",
                                  factor=factor)) from None
    if not math.isfinite(value) or value < 1:
        raise EmzooError(describe("Invalid value for argument `factor`.", "a number >= 1",
                                  factor=factor))
    return fractions.Fraction(value).limit_denominator(_RESAMPLE_DENOMINATOR)


def upscale_positions(num_slices, factor):
    """Output slice positions (in input-slice units) and the dense power-of-two grid used.

    Returns ``(positions, grid)``: ``positions`` is a list of fractions ``j / factor`` for
    ``j = 0 .. floor((num_slices - 1) * factor)``; ``grid`` is the power of two ``P >= factor``.

    Example:
        >>> positions, grid = upscale_positions(3, 2.5)
        >>> [float(p) for p in positions], grid
        ([0.0, 0.4, 0.8, 1.2, 1.6, 2.0], 4)
    """
    factor = _factor_fraction(factor)
    count = math.floor((num_slices - 1) * factor) + 1
    grid = 1 << max(0, math.ceil(math.log2(factor)))
    if grid // 2 >= factor:  # guard against float error in log2 for exact powers of two
        grid //= 2
    return [fractions.Fraction(j) / factor for j in range(count)], grid


def parse_factor(text):
    """A ``--factor`` value as a float >= 1, or an error saying what a factor must be.

    Example:
        >>> parse_factor("2.5")
        2.5
    """
    return float(_factor_fraction(text))


def parse_voxel_size(text):
    """``"z,y,x"`` (nm) as a tuple of three positive floats; a single number means isotropic.

    Example:
        >>> parse_voxel_size("40,4,4")
        (40.0, 4.0, 4.0)
    """
    try:
        values = tuple(float(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise EmzooError(describe("Invalid value for argument `voxel_size`.",
                                  "three positive numbers z,y,x in nm, e.g. 40,4,4",
                                  voxel_size=text))
    return values


# ------------------------------------------------------------------------------------- volumes
def _open_source(volume):
    """A Volume-like object (``shape``, ``dtype``, ``voxel_size``, ``read``, ``slice``)."""
    if isinstance(volume, np.ndarray):
        from emzoo.data.volume import ArrayVolume

        return ArrayVolume(volume)
    if isinstance(volume, (str, os.PathLike)):
        from emzoo.data.volume import open_volume

        path = os.fspath(volume)
        try:
            return open_volume(path)
        except (EmzooError, FileNotFoundError):
            raise
        except Exception as error:  # noqa: BLE001 - any reader failure is a bad input file
            message = " ".join(str(error).split()) or type(error).__name__
            raise VolumeError(describe(f"Cannot read the input volume {path}: {message}.",
                                       "a readable TIFF, HDF5 or slice folder", volume=path)) from None
    if all(hasattr(volume, name) for name in ("shape", "dtype", "read", "slice")):
        return volume
    raise EmzooError(describe("Invalid value for argument `volume`.",
                              "a path, a NumPy array (Z, Y, X) or a Volume from emzoo.data.volume",
                              volume=type(volume).__name__))


def _check_volume(source, minimum_slices=2):
    shape = tuple(source.shape)
    if len(shape) != 3:
        raise VolumeError(describe("The volume must be a grey-level stack of 2-D slices.",
                                   "a shape (Z, Y, X)", shape=shape))
    if shape[0] < minimum_slices:
        raise VolumeError(describe(
            f"The volume has {shape[0]} slice(s); interpolating along z needs at least "
            f"{minimum_slices}.", f"a stack of >= {minimum_slices} slices", shape=shape))
    dtype = np.dtype(source.dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)):
        raise VolumeError(describe("Unsupported volume dtype.", "uint8, uint16 or float32",
                                   dtype=str(dtype)))
    return shape


def _voxel_size(source, voxel_size):
    """The voxel size (z, y, x) in nm: the explicit one, else the file's, else None."""
    value = voxel_size if voxel_size is not None else getattr(source, "voxel_size", None)
    if value is None:
        return None
    try:
        value = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        value = ()
    if len(value) != 3 or not all(math.isfinite(v) and v > 0 for v in value):
        raise EmzooError(describe("Invalid voxel size.", "three positive numbers (z, y, x) in nm",
                                  voxel_size=voxel_size))
    return value


def _isotropic_factor(voxel):
    """z spacing / x spacing; errors (saying how to give one) when the voxel size is unknown."""
    if voxel is None:
        raise VolumeError(describe(
            "`isotropic` needs the voxel size, and the input file does not record one.",
            "a voxel size given explicitly (command line: --voxel-size z,y,x in nm, e.g. "
            "--voxel-size 40,4,4; Python: voxel_size=(40, 4, 4))", voxel_size=None))
    factor = voxel[0] / voxel[2]
    if factor < 1:
        raise VolumeError(describe(
            "The z spacing is already finer than the x spacing; nothing to upscale.",
            "a voxel size with z >= x", voxel_size=voxel))
    return factor


def _check_output(output, overwrite):
    if output is None:
        return None
    from emzoo.data.volume import split_hdf5_path

    path = os.fspath(output)
    file, _ = split_hdf5_path(path)
    if os.path.exists(file) and not overwrite:
        raise VolumeError(describe(f"The output {file} already exists.",
                                   "a new path, or overwrite=True (--overwrite)", output=path))
    parent = os.path.dirname(os.path.abspath(file))
    if not os.path.isdir(parent):
        raise VolumeError(describe(f"The output folder {parent} does not exist.",
                                   "an existing folder", output=path))
    return path


# ------------------------------------------------------------------------------------ progress
class Progress:
    """A one-line progress bar on stderr: slices done, slices/s and time left.

    Example:
        >>> bar = Progress(10, "upscale", enabled=False)
        >>> bar.update(3); bar.done
        3
    """

    def __init__(self, total, label, enabled=True, stream=None, interval=0.25):
        self.total, self.label, self.enabled = int(total), label, enabled
        self.stream = stream or sys.stderr
        self.interval = interval
        self.done = 0
        self.start = time_lib.perf_counter()
        self._last_draw = 0.0
        self._drawn = -1

    def update(self, count=1):
        self.done += count
        now = time_lib.perf_counter()
        if self.enabled and (now - self._last_draw >= self.interval or self.done >= self.total):
            self._last_draw = now
            self._draw(now)

    def _draw(self, now):
        self._drawn = self.done
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = _clock(left) if math.isfinite(left) else "?"
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} slices  "
                          f"{rate:.2f} slices/s  ETA {eta}  ")
        self.stream.flush()

    def close(self):
        if self.enabled:
            if self._drawn != self.done:
                self._draw(time_lib.perf_counter())
            self.stream.write("\n")
            self.stream.flush()

    @property
    def seconds(self):
        return time_lib.perf_counter() - self.start


def _clock(seconds):
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------------------- tiles
def _ramp(length, overlap):
    """Blend weight along one tile axis: 0 then raised cosine to 1 over ``overlap`` at an edge."""
    margin = overlap // 4
    rise = max(overlap - 2 * margin, 1)
    k = np.arange(length, dtype=np.float64)
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.clip((k - margin + 0.5) / rise, 0.0, 1.0))
    return np.where(k < margin, 0.0, ramp)


class Tiler:
    """Cuts (H, W, C) slices into overlapping, padded tiles and blends tile outputs back.

    ``tile=None`` (or a slice no larger than ``tile``) means one tile: the whole slice. Each tile
    is reflect-padded at its bottom/right to a multiple of ``multiple`` and cropped back after.

    Example:
        >>> tiler = Tiler(100, 150, tile=64, overlap=16, multiple=8)
        >>> tiles = tiler.split(np.zeros((100, 150, 1), np.float32))
        >>> tiles.shape
        (6, 64, 64, 1)
        >>> tiler.merge(tiles).shape
        (100, 150, 1)
    """

    def __init__(self, height, width, tile=None, overlap=32, multiple=1):
        self.height, self.width, self.multiple = int(height), int(width), int(multiple)
        self.overlap = int(overlap)
        self.tile = tile
        self.ys, self.tile_h, wy = self._axis(self.height)
        self.xs, self.tile_w, wx = self._axis(self.width)
        self.boxes = [(y, x) for y in self.ys for x in self.xs]
        self.weights = [np.outer(a, b)[..., None] for a in wy for b in wx]
        m = self.multiple
        self.padded = (-(-self.tile_h // m) * m, -(-self.tile_w // m) * m)

    def _axis(self, length):
        if self.tile is None or length <= self.tile:
            return [0], length, [np.ones(length)]
        size, step = int(self.tile), int(self.tile) - self.overlap
        starts = list(range(0, length - size, step)) + [length - size]
        weights = []
        for start in starts:
            weight = np.ones(size)
            if start > 0:
                weight *= _ramp(size, self.overlap)
            if start + size < length:
                weight *= _ramp(size, self.overlap)[::-1]
            weights.append(weight)
        return starts, size, weights

    def __len__(self):
        return len(self.boxes)

    def split(self, image):
        """(H, W, C) -> (tiles, H', W', C) float32, each tile padded to the size multiple."""
        pad_h, pad_w = self.padded[0] - self.tile_h, self.padded[1] - self.tile_w
        tiles = []
        for y, x in self.boxes:
            tile = image[y:y + self.tile_h, x:x + self.tile_w]
            if pad_h or pad_w:
                tile = np.pad(tile, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect"
                              if min(tile.shape[:2]) > 1 else "edge")
            tiles.append(tile)
        return np.stack(tiles).astype(np.float32, copy=False)

    def merge(self, tiles):
        """(tiles, H', W', C) -> (H, W, C): crop each tile back and blend by the weights."""
        tiles = np.asarray(tiles)
        if len(self.boxes) == 1:
            return tiles[0, :self.tile_h, :self.tile_w].astype(np.float32)
        total = np.zeros((self.height, self.width, tiles.shape[-1]), np.float64)
        norm = np.zeros((self.height, self.width, 1), np.float64)
        for (y, x), weight, tile in zip(self.boxes, self.weights, tiles):
            total[y:y + self.tile_h, x:x + self.tile_w] += weight * tile[:self.tile_h, :self.tile_w]
            norm[y:y + self.tile_h, x:x + self.tile_w] += weight
        return (total / norm).astype(np.float32)


# ---------------------------------------------------------------------------------- the model
def _resolve_model(model):
    if isinstance(model, (str, os.PathLike)):
        import emzoo

        return emzoo.load(os.fspath(model), compile=False)
    if not callable(model):
        raise EmzooError(describe("Invalid value for argument `model`.",
                                  "an emzoo model, a registered name or a saved model folder",
                                  model=type(model).__name__))
    return model


def default_batch_size():
    """4 when an accelerator (GPU/TPU) is visible to the Keras backend, else 1.

    On CPU, batching pairs made FILM slower per slice (CPU time +25% at batch 4, measured with
    benchmarks/bench_upscale_speed.py), while on a GPU batch 1 leaves the device mostly idle.
    """
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            return 4 if tf.config.list_logical_devices("GPU") else 1
        if backend == "jax":
            import jax

            return 4 if jax.default_backend() != "cpu" else 1
        if backend == "torch":
            import torch

            return 4 if torch.cuda.is_available() else 1
    except Exception:  # noqa: BLE001 - device discovery failing just means "no accelerator"
        pass
    return 1


# XLA compiles FILM in a few seconds per slice size; it pays off from about this many model calls.
XLA_MIN_CALLS = 200


def resolve_jit_compile(jit_compile, reuse_features, calls=None):
    """Whether the engine XLA-compiles its model calls.

    ``"auto"`` means yes on the TensorFlow backend for models whose features are reused (FILM),
    when the job makes at least :data:`XLA_MIN_CALLS` model calls (or their number is unknown):
    XLA ran FILM about 1.16x faster than the plain graph on CPU (benchmarks/bench_film.py at
    256 and 512; about 1.15x in benchmarks/bench_upscale_speed.py), but its one-off compile
    (several seconds per slice size) made the bundled 17-slice sample slower end to end. Other
    architectures (deformable convolutions, sparse attention) keep the plain graph. Other
    backends compile their own way (JAX jit) and ignore this flag.

    Example:
        >>> resolve_jit_compile(False, reuse_features=True)
        False
        >>> resolve_jit_compile("auto", reuse_features=False)
        False
    """
    if isinstance(jit_compile, str):
        if jit_compile.lower() != "auto":
            raise EmzooError(describe("Invalid value for argument `jit_compile`.",
                                      'True, False or "auto"', jit_compile=jit_compile))
        import keras

        return (keras.backend.backend() == "tensorflow" and bool(reuse_features)
                and (calls is None or calls >= XLA_MIN_CALLS))
    return bool(jit_compile)


def _compiled(model, what, jit_compile):
    """The model's ``what`` ("call", "extract" or "from_features") as a compiled function.

    On the TensorFlow backend this is a ``tf.function`` (XLA when ``jit_compile``), cached per
    model so that later volumes reuse its traces; on other backends the plain eager call.
    """
    import keras

    from emzoo.models.base import image_of

    cache = getattr(model, "_emzoo_compiled", None)
    if cache is None:  # plain attribute, bypassing Keras' tracking of layer attributes
        cache = {}
        object.__setattr__(model, "_emzoo_compiled", cache)
    key = (what, bool(jit_compile))
    if key not in cache:
        if what == "call":
            def function(x0, x1, t):
                return image_of(model({"x0": x0, "x1": x1, "time": t}, training=False))
        elif what == "extract":
            def function(x):
                return model.extract(x)
        else:
            def function(f0, f1, t):
                return image_of(model.interpolate_from_features(f0, f1, t))
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            function = tf.function(function, reduce_retracing=True, jit_compile=bool(jit_compile))
        cache[key] = function
    return cache[key]


class MidpointEngine:
    """Predicts midpoints of slice pairs with a model: tiles, channels, batches, feature reuse.

    Slices are float32 arrays (H, W, C) in [0, 1] identified by integer keys, so that a FILM
    model's features can be cached per key (and per tile) and reused by every pair that uses the
    slice. Midpoints are clipped to [0, 1] (they feed the next recursion level as inputs).

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
    """

    def __init__(self, model, height, width, tile=None, overlap=32, batch_size=None,
                 reuse_features=None, jit_compile="auto", expected_pairs=None):
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
        self.jit_compile = resolve_jit_compile(jit_compile, self.reuse_features, calls)
        if self.reuse_features:
            self._extract = _compiled(model, "extract", self.jit_compile)
            self._from_features = _compiled(model, "from_features", self.jit_compile)
        else:
            self._call = _compiled(model, "call", self.jit_compile)

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
    def midpoints(self, pairs, slices):
        """Midpoints (list of (H, W, C) arrays) of ``pairs`` of keys into the dict ``slices``."""
        if not pairs:
            return []
        jobs = [(p, i) for p in range(len(pairs)) for i in range(len(self.tiler))]
        outputs = np.empty((len(pairs), len(self.tiler)) + self.tiler.padded + (1,),
                           np.float32)
        if self.reuse_features:
            import keras
            from keras import ops

            self._ensure_features([k for pair in pairs for k in pair], slices)
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
                tiles[key] = self._to_model(self.tiler.split(slices[key]))
            for start in range(0, len(jobs), self.batch_size):
                batch = jobs[start:start + self.batch_size]
                x0 = self._full_batch([tiles[pairs[p][0]][i] for p, i in batch], len(jobs))
                x1 = self._full_batch([tiles[pairs[p][1]][i] for p, i in batch], len(jobs))
                self._store(outputs, batch, self._call(x0, x1, self._time(len(x0))))
        self.calls["pairs"] += len(pairs)
        return [np.clip(self.tiler.merge(tiles_of_pair), 0.0, 1.0) for tiles_of_pair in outputs]

    def _store(self, outputs, batch, image):
        image = self._from_model(_numpy(image)[:len(batch)])
        for (p, i), tile in zip(batch, image):
            outputs[p, i] = tile

    def fill_grid(self, slices, first, last, levels):
        """Fills ``slices`` (dense keys ``first``..``last``, every ``2**levels``-th given) by recursion.

        Level by level (breadth first), so each level's midpoints go through the model in full
        batches; features of the last level's midpoints are never needed, so never extracted.
        """
        step = 1 << levels
        while step > 1:
            half = step // 2
            new = list(range(first + half, last, step))
            pairs = [(k - half, k + half) for k in new]
            slices.update(zip(new, self.midpoints(pairs, slices)))
            step = half
        return slices


def _load_malloc_trim():
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        return None


_MALLOC_TRIM = _load_malloc_trim() if sys.platform.startswith("linux") else None


def release_freed_memory():
    """Returns freed heap memory to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Slices are ~1 MB arrays allocated and freed between TensorFlow's own allocations; glibc's
    adaptive mmap threshold then serves them from the heap, whose free holes are not returned,
    so the resident size creeps up with the number of slices (measured: +0.5 MB per 512 x 512
    slice). Trimming after each chunk keeps peak memory flat (benchmarks/bench_upscale_memory.py).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _numpy(tensor):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(tensor))


# --------------------------------------------------------------------------------- the writers
class _ArrayWriter:
    """Collects output slices into a NumPy array (the ``output=None`` case)."""

    def __init__(self, shape, dtype):
        self.array = np.empty(shape, dtype)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, z, raw):
        self.array[z] = raw


def _open_writer(output, shape, dtype, voxel_size, overwrite):
    if output is None:
        return _ArrayWriter(shape, dtype)
    from emzoo.data.volume import VolumeWriter

    return VolumeWriter(output, shape, dtype, voxel_size, overwrite=overwrite)


def _disk_error(error, output, shape, dtype):
    """An OSError while writing, as a VolumeError saying what happened and what is needed."""
    size_mb = int(np.prod(shape)) * np.dtype(dtype).itemsize / 1e6
    if getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        problem = f"The disk ran out of space while writing {output}; nothing was written."
    else:
        problem = (f"Writing {output} failed ({' '.join(str(error).split())}); "
                   "nothing was written.")
    return VolumeError(describe(problem, f"about {size_mb:.0f} MB of free space in the output "
                                          "folder", output=str(output)))


def _raw(array, dtype):
    from emzoo.data.volume import denormalise

    return np.asarray(denormalise(array, dtype)).astype(dtype, copy=False)


def _slice_in(source, z):
    """Slice ``z`` as the engine's (H, W, 1) float32 in [0, 1]."""
    return np.asarray(source.slice(z), np.float32)[..., None]


def _summary(kind, source_shape, shape, dtype, voxel_in, voxel_out, seconds, output):
    where = output if output is not None else "(array)"
    def fmt(v):
        return "unknown" if v is None else "x".join(f"{x:g}" for x in v) + " nm"
    return (f"{kind}: {tuple(source_shape)} -> {tuple(shape)} {np.dtype(dtype).name}, voxel "
            f"{fmt(voxel_in)} -> {fmt(voxel_out)}, {seconds:.1f} s, {where}")


def _run_writes(output, shape, dtype, voxel_out, overwrite, produce):
    """Runs ``produce(writer)`` with the right writer; I/O errors become one clear VolumeError."""
    writer = _open_writer(output, shape, dtype, voxel_out, overwrite)
    try:
        with writer:
            produce(writer)
    except OSError as error:
        raise _disk_error(error, output, shape, dtype) from None
    return writer


# ---------------------------------------------------------------------------------- upscaling
def upscale_volume(volume, model, factor=2, output=None, isotropic=False, tile=None, overlap=32,
                   batch_size=None, voxel_size=None, overwrite=False, progress=True,
                   reuse_features=None, jit_compile="auto"):
    """Upscales ``volume`` along z by ``factor`` (or to isotropic voxels) with ``model``.

    See the module docstring for the method (recursive midpoints to the next power of two, then
    linear resampling at the exact positions j / factor).

    Args:
        volume: a path (TIFF, HDF5, slice folder), a NumPy array (Z, Y, X) or a Volume.
        model: an emzoo interpolator, or a registered name / saved model folder to load.
        factor: number >= 1 (2, 4, 8, 3, 2.5, ...). Ignored when ``isotropic``.
        output: path to write (TIFF or HDF5, by extension); ``None`` returns the array.
        isotropic: use factor = z spacing / x spacing (needs a voxel size in the file or
            ``voxel_size``).
        tile, overlap: process slices larger than ``tile`` pixels in tiles overlapping by
            ``overlap`` pixels (``None``: whole slices).
        batch_size: tile pairs per model call; ``None`` picks :func:`default_batch_size`
            (4 with a GPU, 1 on CPU, where batching was measured to cost time).
        voxel_size: (z, y, x) in nm, replacing the file's.
        overwrite: replace an existing ``output``.
        progress: show a progress bar and print a summary line (stderr).
        reuse_features: compute FILM features once per slice (default: when the model can).
        jit_compile: XLA-compile model calls (TensorFlow backend): True, False or ``"auto"``
            (XLA for FILM on long jobs, where it is faster; see :func:`resolve_jit_compile`).

    Returns:
        The upscaled array (input dtype) when ``output`` is None, else a dict summary with
        ``output``, ``input_shape``, ``output_shape``, ``dtype``, ``voxel_size``, ``factor``,
        ``seconds`` and ``summary`` (the line printed).

    Example:
        >>> out = upscale_volume(np.zeros((3, 32, 48), np.uint8), model, factor=2.5)  # doctest: +SKIP
        >>> out.shape                                                                  # doctest: +SKIP
        (6, 32, 48)
    """
    output = _check_output(output, overwrite)
    source = _open_source(volume)
    shape_in = _check_volume(source)
    dtype = np.dtype(source.dtype)
    voxel_in = _voxel_size(source, voxel_size)
    if isotropic:
        factor = _isotropic_factor(voxel_in)
    positions, grid = upscale_positions(shape_in[0], factor)
    factor = _factor_fraction(factor)
    voxel_out = None if voxel_in is None else (voxel_in[0] / float(factor),) + voxel_in[1:]
    shape_out = (len(positions),) + shape_in[1:]
    model = _resolve_model(model)
    engine = MidpointEngine(model, shape_in[1], shape_in[2], tile, overlap, batch_size,
                            reuse_features, jit_compile,
                            expected_pairs=(shape_in[0] - 1) * (grid - 1))
    bar = Progress(len(positions), "upscale", enabled=progress)
    levels = grid.bit_length() - 1
    # Pairs per chunk: enough first-level midpoints to fill a batch, within a bounded grid
    # (at most _CHUNK_GRID dense slices held, whatever the number of slices).
    chunk = max(1, min(engine.batch_size, _CHUNK_GRID // grid))

    def produce(writer):
        next_out = 0
        left_unit = _slice_in(source, 0)
        for first in range(0, shape_in[0] - 1, chunk):
            last = min(first + chunk, shape_in[0] - 1)
            dense = {first * grid: left_unit}
            for z in range(first + 1, last + 1):
                dense[z * grid] = _slice_in(source, z)
            engine.fill_grid(dense, first * grid, last * grid, levels)
            final_chunk = last == shape_in[0] - 1
            while next_out < len(positions):
                position = positions[next_out] * grid  # in dense-grid units
                if position >= last * grid and not (final_chunk and position == last * grid):
                    break
                if position.denominator == 1 and position.numerator % grid == 0:
                    raw = source.read(position.numerator // grid)  # an input slice: copied
                else:
                    below = math.floor(position)
                    weight = float(position - below)
                    unit = dense[below] if weight == 0 else (
                        (1.0 - weight) * dense[below] + weight * dense[below + 1])
                    raw = _raw(unit[..., 0], dtype)
                writer.write(next_out, raw)
                next_out += 1
                bar.update()
            left_unit = dense[last * grid]
            engine.forget(keep=(last * grid,))
            del dense
            release_freed_memory()

    writer = _run_writes(output, shape_out, dtype, voxel_out, overwrite, produce)
    bar.close()
    line = _summary(f"upscale x{float(factor):g}", shape_in, shape_out, dtype, voxel_in,
                    voxel_out, bar.seconds, output)
    if progress:
        print(line, file=sys.stderr)
    if output is None:
        return writer.array
    return {"output": output, "input_shape": shape_in, "output_shape": shape_out,
            "dtype": dtype.name, "voxel_size": voxel_out, "factor": float(factor),
            "seconds": bar.seconds, "summary": line}


# ------------------------------------------------------------------------------------- repair
def parse_slices(text):
    """Slice indices from ``"12,37,40-42"`` (0-based; ranges inclusive), sorted and unique.

    Example:
        >>> parse_slices("12, 37,40-42")
        [12, 37, 40, 41, 42]
    """
    indices = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part.lstrip("-"):
                start, end = part.split("-", 1)
                indices.update(range(int(start), int(end) + 1))
            else:
                indices.add(int(part))
        except ValueError:
            raise EmzooError(describe("Invalid value for argument `slices`.",
                                      "comma-separated slice indices or ranges, e.g. 12,37,40-42",
                                      slices=text)) from None
    if not indices:
        raise EmzooError(describe("Invalid value for argument `slices`.",
                                  "at least one slice index", slices=text))
    return sorted(indices)


def _damaged_runs(slices, num_slices):
    """Maximal runs (first, last) of adjacent damaged slices, each with good slices on both sides."""
    if isinstance(slices, str):
        slices = parse_slices(slices)
    try:
        indices = sorted({int(z) for z in slices})
    except (TypeError, ValueError):
        raise EmzooError(describe("Invalid value for argument `slices`.", "integer slice indices",
                                  slices=slices)) from None
    if not indices:
        raise EmzooError(describe("Invalid value for argument `slices`.",
                                  "at least one slice index", slices=slices))
    bad = [z for z in indices if not 0 <= z < num_slices]
    if bad:
        raise EmzooError(describe("Slice indices outside the volume.",
                                  f"0-based indices from 0 to {num_slices - 1}", slices=bad))
    runs = []
    for z in indices:
        if runs and z == runs[-1][1] + 1:
            runs[-1][1] = z
        else:
            runs.append([z, z])
    for first, last in runs:
        if first == 0 or last == num_slices - 1:
            raise EmzooError(describe(
                f"Cannot repair slice(s) {first}..{last}: interpolation needs a good slice on both "
                "sides, and this run touches the end of the volume.",
                f"damaged slices between 1 and {num_slices - 2}", slices=indices))
    return [tuple(run) for run in runs]


def repair_volume(volume, slices, model, output=None, tile=None, overlap=32, batch_size=None,
                  voxel_size=None, overwrite=False, progress=True, reuse_features=None,
                  jit_compile="auto"):
    """Replaces damaged slices by interpolating from the nearest good slices on both sides.

    A run of ``r`` adjacent damaged slices between good slices ``a`` and ``b = a + r + 1`` gets the
    positions t = k / (r + 1), k = 1..r, between them. They come from recursive midpoints on the
    power-of-two grid ``P >= r + 1`` (the same recursion as upscaling, as midpoint-trained models
    need), then linear interpolation between the two nearest grid slices when t is not on the
    grid (e.g. one damaged slice: t = 1/2 exactly; three: 1/4, 1/2, 3/4 exactly; two: 1/3 and 2/3
    resampled from the grid of quarters). Good slices are copied unchanged.

    Args:
        volume: a path, a NumPy array (Z, Y, X) or a Volume.
        slices: 0-based indices of the damaged slices (a list, or a string "12,37,40-42").
        model, output, tile, overlap, batch_size, voxel_size, overwrite, progress,
        reuse_features, jit_compile: as in :func:`upscale_volume`.

    Returns:
        The repaired array when ``output`` is None, else a dict summary (as upscale_volume's,
        plus ``repaired``: the list of replaced indices).

    Example:
        >>> fixed = repair_volume(stack, [12, 13], "default")      # doctest: +SKIP
    """
    output = _check_output(output, overwrite)
    source = _open_source(volume)
    shape = _check_volume(source, minimum_slices=3)
    dtype = np.dtype(source.dtype)
    voxel = _voxel_size(source, voxel_size)
    runs = _damaged_runs(slices, shape[0])
    model = _resolve_model(model)
    engine = MidpointEngine(model, shape[1], shape[2], tile, overlap, batch_size, reuse_features,
                            jit_compile,
                            expected_pairs=sum(last - first + 1 for first, last in runs))
    bar = Progress(shape[0], "repair", enabled=progress)
    starts = {first: last for first, last in runs}

    def produce(writer):
        z = 0
        while z < shape[0]:
            if z not in starts:
                writer.write(z, source.read(z))
                z += 1
                bar.update()
                continue
            last = starts[z]
            count = last - z + 1
            grid = 1 << math.ceil(math.log2(count + 1))
            dense = {0: _slice_in(source, z - 1), grid: _slice_in(source, last + 1)}
            engine.fill_grid(dense, 0, grid, grid.bit_length() - 1)
            for k in range(1, count + 1):
                position = fractions.Fraction(k * grid, count + 1)
                below = math.floor(position)
                weight = float(position - below)
                unit = dense[below] if weight == 0 else (
                    (1.0 - weight) * dense[below] + weight * dense[below + 1])
                writer.write(z + k - 1, _raw(unit[..., 0], dtype))
                bar.update()
            engine.forget()
            release_freed_memory()
            z = last + 1

    writer = _run_writes(output, shape, dtype, voxel, overwrite, produce)
    bar.close()
    repaired = [z for first, last in runs for z in range(first, last + 1)]
    line = _summary(f"repair {len(repaired)} slice(s)", shape, shape, dtype, voxel, voxel,
                    bar.seconds, output)
    if progress:
        print(line, file=sys.stderr)
    if output is None:
        return writer.array
    return {"output": output, "input_shape": shape, "output_shape": shape, "dtype": dtype.name,
            "voxel_size": voxel, "repaired": repaired, "seconds": bar.seconds, "summary": line}
