"""The job plan: one frozen, checked description of a volume job, made before any work.

As :class:`~emzoo.training.TrainConfig` does for training, a :class:`JobPlan` holds every setting
of an upscaling or repair job, checked exactly once when it is made: the input (opened, its shape,
dtype, voxel size and, for float data, its value range), what the job computes (the factor, or
the damaged runs), the output (path, shape, voxel size, chunks, whether it may be replaced and
whether its size fits), the model-run settings (:class:`EngineOptions`) and, for the blockwise
engine on Dask, :class:`Blockwise`. :func:`plan_upscale` and :func:`plan_repair` make plans;
:func:`emzoo.engine.run` runs one, on one process or on Dask, with any model.

The plan's JSON (:meth:`JobPlan.to_json`) is what travels: it is the Dask task every worker
rebuilds the job from (:mod:`~emzoo.engine.worker`), the record a blockwise output keeps so that a
resumed job can be checked against the one that started it (:meth:`JobPlan.record`), and the key
under which a worker caches its engines. A new job setting is a field of the plan (and of its
JSON), and nowhere else.

Example:
    >>> import numpy as np
    >>> plan = plan_upscale(np.zeros((3, 8, 8), np.uint8), factor=4,
    ...                     options=EngineOptions(tile=None, batch_size=2))
    >>> plan.output_shape, plan.factor, plan.options.batch_size
    ((9, 8, 8), Fraction(4, 1), 2)
    >>> JobPlan.from_json(plan.to_json()) == plan
    True
"""

import dataclasses
import fractions
import json
import os

import numpy as np

from emzoo.engine.blocks import RepairRecipe, UpscaleRecipe
from emzoo.engine.job import Job
from emzoo.engine.positions import check_factor, isotropic_factor, upscale_positions
from emzoo.engine.precision import check_precision
from emzoo.errors import EmzooError, VolumeError, check_integer, describe

DEFAULT_TILE = 512  # the tile of slices larger than WHOLE_SLICE_MAX when no tile is given
WHOLE_SLICE_MAX = 2048  # without a tile, slices up to this height and width are processed whole
_XLA = (True, False, "auto")
_CHUNKED_TEXT = "an output ending in .zarr, .ome.zarr or .n5 (optionally :/path/inside)"


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    """How the model runs over the slices: tiles, batches, feature reuse, XLA and precision.

    Args:
        tile: process slices in overlapping tiles of this many pixels (``None``: slices up to
            :data:`WHOLE_SLICE_MAX` pixels whole, larger ones in tiles of :data:`DEFAULT_TILE`;
            the plan records the tile it chose).
        overlap: pixels shared by neighbouring tiles (blended; no seams).
        batch_size: slice pairs (or tiles) per model call (``None``: 4 with an accelerator, 1 on
            a CPU; :func:`~emzoo.engine.policy.default_batch_size`).
        reuse_features: reuse FILM's per-slice features across pairs (``None``: when the model
            has them).
        xla: compile the model calls with XLA: ``True``, ``False`` or ``"auto"`` (see
            :func:`~emzoo.engine.policy.resolve_jit_compile`).
        precision: ``"float32"``, ``"bf16"`` or ``"auto"`` (bf16 where supported); see
            :mod:`emzoo.engine.precision`.
        calibrate: before an upscaling job, weigh the model against linear interpolation on
            the input itself, per recursion level (:mod:`~emzoo.engine.calibration`); ignored
            by repair jobs.
        residual_scales: those weights (level 1 first), once fitted (or given: then no fit).

    Each value is checked here; the tile against the model (at least its size multiple, then
    more than the overlap: :meth:`check_tile`) once the model is known.

    Example:
        >>> EngineOptions(tile=256, overlap=16).overlap
        16
        >>> EngineOptions(batch_size=0)
        Traceback (most recent call last):
        ...
        emzoo.errors.EmzooError: Invalid value for argument `batch_size`. Expected a strictly positive integer. Received: batch_size=0
    """

    tile: int | None = None
    overlap: int = 32
    batch_size: int | None = None
    reuse_features: bool | None = None
    xla: bool | str = "auto"
    precision: str = "float32"
    calibrate: bool = True
    residual_scales: tuple | None = None

    def __post_init__(self):
        tile = None if self.tile is None else check_integer("tile", self.tile)
        overlap = check_integer("overlap", self.overlap, minimum=0)
        batch_size = None if self.batch_size is None else check_integer("batch_size", self.batch_size)
        if self.reuse_features not in (None, True, False):
            raise EmzooError(describe("Invalid value for argument `reuse_features`.",
                                      "True, False or None (when the model has them)",
                                      reuse_features=self.reuse_features))
        if not any(self.xla is value for value in _XLA) and self.xla != "auto":
            raise EmzooError(describe("Invalid value for argument `xla`.", "True, False or 'auto'",
                                      xla=self.xla))
        if self.calibrate not in (True, False):
            raise EmzooError(describe("Invalid value for argument `calibrate`.", "True or False",
                                      calibrate=self.calibrate))
        scales = self.residual_scales
        if scales is not None:
            try:
                scales = tuple(float(w) for w in scales)
            except (TypeError, ValueError):
                scales = None
            if not scales or not all(0.0 <= w <= 1.0 for w in scales):
                raise EmzooError(describe("Invalid value for argument `residual_scales`.",
                                          "one weight in [0, 1] per recursion level",
                                          residual_scales=self.residual_scales))
        for name, value in (("tile", tile), ("overlap", overlap), ("batch_size", batch_size),
                            ("precision", check_precision(self.precision)),
                            ("residual_scales", scales)):
            object.__setattr__(self, name, value)

    def check_tile(self, size_multiple=1):
        """Refuses a tile smaller than the model's ``size_multiple``, then one not larger than
        the overlap (the single-process engine's :class:`~emzoo.engine.midpoint.MidpointEngine`
        makes the same checks on the built model)."""
        if self.tile is None:
            return
        if self.tile < int(size_multiple or 1):
            raise EmzooError(describe(
                "Invalid value for argument `tile`: smaller than the model's size multiple.",
                f"a tile of at least {size_multiple} pixels (better a multiple of {size_multiple})",
                tile=self.tile))
        if self.overlap >= self.tile:
            raise EmzooError(describe("`overlap` must be smaller than `tile`.",
                                      f"an overlap below {self.tile} pixels", overlap=self.overlap,
                                      tile=self.tile))

    def for_slices(self, height, width):
        """These options with the tile chosen for slices of ``height`` x ``width`` pixels."""
        if self.tile is not None or max(height, width) <= WHOLE_SLICE_MAX:
            return self
        return dataclasses.replace(self, tile=DEFAULT_TILE)


@dataclasses.dataclass(frozen=True)
class Blockwise:
    """Run the job blockwise on Dask (see :mod:`~emzoo.engine.distributed`).

    Args:
        workers: a new local cluster of this many worker processes, closed at the end ...
        scheduler: ... or the existing cluster at this address (``"tcp://host:8786"``).
        block_size: (y, x) pixels of a block, rounded up to whole chunks (``None``:
            :data:`~emzoo.engine.blocks.DEFAULT_REGION`, or on resume the started job's).
        resume: continue the job that left the output incomplete, redoing only the blocks it did
            not record as finished (nothing to do if it is complete).

    Example:
        >>> Blockwise(workers=2).workers
        2
        >>> Blockwise(resume=True)
        Traceback (most recent call last):
        ...
        emzoo.errors.EmzooError: `resume` continues a blockwise job, which runs on Dask. Expected workers=N or scheduler=ADDRESS with resume. Received: resume=True
    """

    workers: int | None = None
    scheduler: str | None = None
    block_size: int | None = None
    resume: bool = False

    def __post_init__(self):
        if self.workers is not None and self.scheduler is not None:
            raise EmzooError(describe("`workers` and `scheduler` exclude each other.",
                                      "workers=N for a local cluster, or scheduler=ADDRESS for an "
                                      "existing one", workers=self.workers, scheduler=self.scheduler))
        if self.workers is None and self.scheduler is None:
            if self.resume:
                raise EmzooError(describe("`resume` continues a blockwise job, which runs on Dask.",
                                          "workers=N or scheduler=ADDRESS with resume",
                                          resume=self.resume))
            if self.block_size is not None:
                raise EmzooError(describe("`block_size` applies to blockwise jobs.",
                                          "workers=N or scheduler=ADDRESS with it",
                                          block_size=self.block_size))
            raise EmzooError(describe("A blockwise job runs on Dask.",
                                      "workers=N or scheduler=ADDRESS", workers=None,
                                      scheduler=None))
        if self.workers is not None:
            object.__setattr__(self, "workers", check_integer("workers", self.workers))
        if self.scheduler is not None and (not isinstance(self.scheduler, str)
                                           or not self.scheduler.strip()):
            raise EmzooError(describe("Invalid value for argument `scheduler`.",
                                      "a scheduler address, e.g. tcp://10.0.0.5:8786",
                                      scheduler=self.scheduler))
        if self.block_size is not None:
            object.__setattr__(self, "block_size", check_integer("block_size", self.block_size))
        object.__setattr__(self, "resume", bool(self.resume))


@dataclasses.dataclass(frozen=True)
class JobPlan:
    """A checked volume job (make one with :func:`plan_upscale` or :func:`plan_repair`).

    Fields: ``job`` (``"upscale"`` or ``"repair"``); the input's ``input`` (its absolute path, or
    ``None`` for an array or Volume in memory), ``input_shape``, ``dtype``, ``input_voxel_size``
    (nm, or ``None``), ``value_range`` (a float input's (min, max), read once; ``None`` for
    integer data) and ``allow_incomplete``; what is computed: ``factor`` (upscale) or ``runs``
    (repair: ``(first, last)`` of each run of damaged slices); the output's ``output`` (path, or
    ``None``: the result is an array), ``output_shape``, ``output_voxel_size``, ``chunks`` and
    ``overwrite``; ``options`` (:class:`EngineOptions`, its tile chosen) and ``blockwise``
    (:class:`Blockwise` or ``None``: one process).

    A plan made from a path can be rebuilt from its JSON anywhere the path can be read
    (:meth:`from_json`); one made from an array runs in the process that made it.
    """

    job: str
    input: str | None
    input_shape: tuple
    dtype: str
    input_voxel_size: tuple | None
    value_range: tuple | None
    allow_incomplete: bool
    output: str | None
    output_shape: tuple
    output_voxel_size: tuple | None
    chunks: tuple | None
    overwrite: bool
    options: EngineOptions
    blockwise: Blockwise | None = None
    factor: fractions.Fraction | None = None
    runs: tuple = ()
    source: object = dataclasses.field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ what the job computes
    @property
    def repaired(self):
        """The repaired slice indices (a repair plan), in order."""
        return [z for first, last in self.runs for z in range(first, last + 1)]

    @property
    def kind(self):
        """The job in words, as the summary line starts: ``upscale x2``, ``repair 3 slice(s)``."""
        if self.job == "upscale":
            return f"upscale x{float(self.factor):g}"
        return f"repair {len(self.repaired)} slice(s)"

    @property
    def recipe(self):
        """Where each output slice comes from (:mod:`~emzoo.engine.blocks`)."""
        if self.job == "upscale":
            return UpscaleRecipe(self.input_shape[0], self.factor)
        return RepairRecipe(self.input_shape[0], self.runs)

    @property
    def expected_pairs(self):
        """How many slice pairs the model interpolates (for the XLA policy)."""
        if self.job == "upscale":
            grid = upscale_positions(self.input_shape[0], self.factor)[1]
            return (self.input_shape[0] - 1) * (grid - 1)
        return sum(last - first + 1 for first, last in self.runs)

    def extra(self):
        """What the job's result adds to the common entries (``factor`` or ``repaired``)."""
        return {"factor": float(self.factor)} if self.job == "upscale" else {"repaired": self.repaired}

    # ------------------------------------------------------------------------- the source
    def open_input(self):
        """The input volume: the one opened when the plan was made, else opened from ``input``
        (with the plan's value range, so that nothing reads the whole volume again)."""
        if self.source is not None:
            return self.source
        if self.input is None:
            raise EmzooError(describe("This plan's input was an array in memory, which its JSON "
                                      "does not carry.", "a plan made from a volume path",
                                      input=None))
        from emzoo.engine.sources import open_source

        source = open_source(self.input, self.allow_incomplete)
        if self.value_range is not None:
            source.set_value_range(*self.value_range)
        return source

    # ------------------------------------------------------------------------------ JSON
    def to_dict(self):
        """The plan as JSON-ready values (nested dicts, lists, strings, numbers)."""
        def listed(value):
            return None if value is None else [float(v) for v in value]
        return {
            "job": self.job,
            "input": {"path": self.input, "shape": list(self.input_shape), "dtype": self.dtype,
                      "voxel_size": listed(self.input_voxel_size),
                      "value_range": listed(self.value_range),
                      "allow_incomplete": self.allow_incomplete},
            "factor": None if self.factor is None else str(self.factor),
            "runs": [list(run) for run in self.runs],
            "output": {"path": self.output, "shape": list(self.output_shape),
                       "voxel_size": listed(self.output_voxel_size),
                       "chunks": None if self.chunks is None else list(self.chunks),
                       "overwrite": self.overwrite},
            "options": dataclasses.asdict(self.options),
            "blockwise": None if self.blockwise is None else dataclasses.asdict(self.blockwise)}

    def to_json(self):
        """The plan as one JSON text (sorted keys: equal plans give equal texts)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """The plan :meth:`to_json` wrote (its input reopened by :meth:`open_input` when needed)."""
        data = json.loads(text) if isinstance(text, str) else text

        def tupled(value):
            return None if value is None else tuple(value)
        source, output = data["input"], data["output"]
        return cls(job=data["job"], input=source["path"], input_shape=tuple(source["shape"]),
                   dtype=source["dtype"], input_voxel_size=tupled(source["voxel_size"]),
                   value_range=tupled(source["value_range"]),
                   allow_incomplete=source["allow_incomplete"], output=output["path"],
                   output_shape=tuple(output["shape"]), output_voxel_size=tupled(output["voxel_size"]),
                   chunks=tupled(output["chunks"]), overwrite=output["overwrite"],
                   options=EngineOptions(**data["options"]),
                   blockwise=None if data["blockwise"] is None else Blockwise(**data["blockwise"]),
                   factor=None if data["factor"] is None else fractions.Fraction(data["factor"]),
                   runs=tuple(tuple(run) for run in data["runs"]))

    def record(self, model_id, blocks):
        """What a resumed blockwise job must share with the job that started its output (stored in
        the output's metadata): input, factor or slices, model, tile, overlap, precision, the
        calibrated weights, output and blocks; not how it runs (workers, batch size, XLA), which
        may change between runs."""
        recipe = ({"factor": str(self.factor)} if self.job == "upscale"
                  else {"slices": self.repaired})
        plan = {"job": self.job,
                "input": {"path": self.input, "shape": list(self.input_shape), "dtype": self.dtype},
                **recipe, "model": model_id, "tile": self.options.tile,
                "overlap": self.options.overlap, "precision": self.options.precision,
                "residual_scales": None if self.options.residual_scales is None
                else list(self.options.residual_scales),
                "output": {"shape": list(self.output_shape), "dtype": self.dtype,
                           "voxel_size": None if self.output_voxel_size is None else
                           [float(v) for v in self.output_voxel_size]},
                "blocks": blocks.describe()}
        return json.loads(json.dumps(plan))


# ---------------------------------------------------------------------------------- planning
def plan_upscale(volume, factor=None, output=None, *, isotropic=False, voxel_size=None,
                 options=None, blockwise=None, overwrite=False, allow_incomplete=False,
                 chunks=None):
    """Checks an upscaling job before any work and returns its :class:`JobPlan`.

    Args:
        volume: a path (TIFF, HDF5, Zarr, OME-Zarr, N5, slice folder), a NumPy array (Z, Y, X)
            or a Volume.
        factor: a number >= 1 (default 2); excludes ``isotropic``.
        output: the path to write (its format by its name); ``None`` keeps the result in memory.
        isotropic: make the z spacing equal to the x spacing (needs a voxel size).
        voxel_size: (z, y, x) in nm replacing the file's.
        options: :class:`EngineOptions` (default: ``EngineOptions()``).
        blockwise: :class:`Blockwise` to run on Dask, or ``None`` (one process).
        overwrite: replace an existing ``output``.
        allow_incomplete: read an input that is the unfinished output of an emzoo job.
        chunks: the chunk shape (z, y, x) of a Zarr / OME-Zarr / N5 output.

    Raises:
        EmzooError: anything that would stop the job: arguments, the input, the output (exists,
            wrong format for the blockwise engine, too large to make), each checked once here.

    Example:
        >>> plan_upscale(np.zeros((3, 8, 8), np.uint8), factor=2.5).output_shape
        (6, 8, 8)
    """
    if isotropic and factor is not None:
        raise EmzooError(describe("`factor` and `isotropic` exclude each other.",
                                  "one of them", factor=factor, isotropic=isotropic))
    job = _open(volume, output, overwrite, voxel_size, 2, allow_incomplete, options, blockwise)
    factor = isotropic_factor(job.voxel_size) if isotropic else (2 if factor is None else factor)
    positions, grid = upscale_positions(job.shape[0], factor)
    factor = check_factor(factor)
    scales = None if options is None else options.residual_scales
    if scales is not None and len(scales) != grid.bit_length() - 1:
        raise EmzooError(describe("Invalid value for argument `residual_scales`.",
                                  f"one weight per recursion level: {grid.bit_length() - 1} for "
                                  f"factor {factor}", residual_scales=scales))
    shape = (positions.count,) + job.shape[1:]
    voxel_out = (None if job.voxel_size is None else
                 (job.voxel_size[0] / float(factor),) + tuple(job.voxel_size[1:]))
    return _plan(volume, job, "upscale", shape, voxel_out, options, blockwise, overwrite,
                 allow_incomplete, chunks, "a smaller factor", factor=factor)


def plan_repair(volume, slices, output=None, *, voxel_size=None, options=None, blockwise=None,
                overwrite=False, allow_incomplete=False, chunks=None):
    """Checks a repair job before any work and returns its :class:`JobPlan`.

    ``slices``: 0-based indices of the damaged slices (a list, or a string ``"12,37,40-42"``);
    every other argument as in :func:`plan_upscale`.

    Example:
        >>> plan_repair(np.zeros((6, 8, 8), np.uint8), "2-3").runs
        ((2, 3),)
    """
    job = _open(volume, output, overwrite, voxel_size, 3, allow_incomplete, options, blockwise)
    from emzoo.engine.positions import damaged_runs

    runs = tuple(damaged_runs(slices, job.shape[0]))
    return _plan(volume, job, "repair", job.shape, job.voxel_size, options, blockwise, overwrite,
                 allow_incomplete, chunks, "a smaller input", runs=runs)


def _open(volume, output, overwrite, voxel_size, minimum_slices, allow_incomplete, options,
          blockwise):
    """The job's input and output checked (the blockwise engine's needs first: they say most)."""
    if options is not None and not isinstance(options, EngineOptions):
        raise EmzooError(describe("Invalid value for argument `options`.", "an EngineOptions",
                                  options=type(options).__name__))
    if blockwise is not None:
        _check_blockwise(volume, output, blockwise, overwrite)
    if output is not None:
        from emzoo.data.volumes import writer_class

        writer_class(output)  # a name some format writes
    resume = blockwise is not None and blockwise.resume
    return Job(volume, output, overwrite or resume, voxel_size, minimum_slices, allow_incomplete)


def _check_blockwise(volume, output, blockwise, overwrite):
    """Refuses what the blockwise engine cannot do: an output that is not chunked, an input in
    memory, ``resume`` with ``overwrite``."""
    from emzoo.data.volumes import CHUNKED_FORMATS, format_of

    if not isinstance(blockwise, Blockwise):
        raise EmzooError(describe("Invalid value for argument `blockwise`.", "a Blockwise or None",
                                  blockwise=type(blockwise).__name__))
    if blockwise.resume and overwrite:
        raise EmzooError(describe("`resume` and `overwrite` exclude each other.",
                                  "resume to continue the output, or overwrite to start it again",
                                  resume=True, overwrite=overwrite))
    if output is None or format_of(os.fspath(output)) not in CHUNKED_FORMATS:
        raise VolumeError(describe("The blockwise engine (workers / scheduler) writes Zarr, "
                                   "OME-Zarr or N5 outputs only, in place, chunk by chunk.",
                                   _CHUNKED_TEXT,
                                   output=None if output is None else os.fspath(output)))
    if volume is not None and not isinstance(volume, (str, os.PathLike)):
        raise EmzooError(describe("The blockwise engine reads its input from a path (each worker "
                                  "opens it), not from memory.", "a volume path (TIFF, HDF5, "
                                  "Zarr, OME-Zarr, N5, a folder); write an array with "
                                  "emzoo.data.volumes.write_volume first",
                                  volume=type(volume).__name__))


def _plan(volume, job, kind, shape, voxel_out, options, blockwise, overwrite, allow_incomplete, chunks,
          remedy, factor=None, runs=()):
    value_range = job.ready(shape, remedy)  # the output's size; a float input's range, read once
    options = (options or EngineOptions()).for_slices(*job.shape[1:])
    if blockwise is None and chunks is not None:
        from emzoo.data.volumes import CHUNKED_FORMATS, format_of

        if job.output is None or format_of(job.output) not in CHUNKED_FORMATS:
            raise EmzooError(describe("`chunks` applies to chunked outputs.", _CHUNKED_TEXT,
                                      output=job.output))
    path = getattr(job.source, "path", None) if isinstance(volume, (str, os.PathLike)) else None
    return JobPlan(job=kind, input=None if path is None else _absolute(path),
                   input_shape=tuple(job.shape), dtype=job.dtype.name,
                   input_voxel_size=_floats(job.voxel_size), value_range=value_range,
                   allow_incomplete=bool(allow_incomplete), output=job.output,
                   output_shape=tuple(shape), output_voxel_size=_floats(voxel_out),
                   chunks=None if chunks is None else tuple(int(c) for c in chunks),
                   overwrite=bool(overwrite), options=options, blockwise=blockwise,
                   factor=factor, runs=tuple(tuple(run) for run in runs), source=job.source)


def _floats(values):
    return None if values is None else tuple(float(v) for v in values)


def _absolute(address):
    """``address`` with its file or folder part made absolute (workers may run elsewhere)."""
    from emzoo.data.volumes import split_container_path

    file, inner = split_container_path(os.fspath(address))
    return os.path.abspath(os.path.expanduser(file)) + (f":{inner}" if inner else "")

