"""``run(plan, model)``: a checked job plan run with a model, on one process or on Dask.

The same plan runs either way (:class:`~emzoo.engine.plan.JobPlan`, its ``blockwise`` field
decides); both give the same :class:`JobResult`. Progress goes to a bar on stderr, nowhere, or a
callback; a ``cancel`` event (anything with ``is_set()``, e.g. :class:`threading.Event`) stops
the job between two slices (between two blocks on Dask).

Example:
    >>> import threading
    >>> plan = plan_upscale("stack.tif", factor=4, output="iso.tif")      # doctest: +SKIP
    >>> stop = threading.Event()
    >>> result = run(plan, "default", progress=lambda done, total: None, cancel=stop)  # doctest: +SKIP
    >>> result.output_shape                                              # doctest: +SKIP
    (117, 512, 512)
"""

import dataclasses

from emzoo.engine.job import summary_line, write_slices
from emzoo.engine.midpoint import MidpointEngine, resolve_model
from emzoo.engine.plan import JobPlan
from emzoo.errors import EmzooError, describe


@dataclasses.dataclass(frozen=True)
class JobResult:
    """What a volume job did: the same fields with or without an output path, on either engine.

    ``output`` (the path written, or ``None``), ``array`` (the result when there is no output
    path, else ``None``), ``input_shape``, ``output_shape``, ``dtype``, ``voxel_size`` (the
    output's, or ``None``), ``precision`` (the one the model ran in), ``seconds``, ``summary``
    (one line), ``factor`` (upscaling) or ``repaired`` (repair: the replaced indices); the
    blockwise engine adds ``blocks``, ``computed``, ``skipped`` (recorded by an earlier run),
    ``workers``, ``threads`` (TensorFlow threads per worker, ``None`` when the cluster sets them)
    and ``already_complete``.
    """

    output: object
    array: object
    input_shape: tuple
    output_shape: tuple
    dtype: str
    voxel_size: tuple | None
    precision: str
    seconds: float
    summary: str
    factor: float | None = None
    repaired: list | None = None
    blocks: int | None = None
    computed: int | None = None
    skipped: int | None = None
    workers: int | None = None
    threads: int | None = None
    already_complete: bool = False

    def to_dict(self):
        """The result as the dict :func:`~emzoo.engine.upscale_volume` returns (only the entries
        that apply: ``factor`` or ``repaired``; the blockwise ones on Dask)."""
        entries = {"output": self.output, "array": self.array, "input_shape": self.input_shape,
                   "output_shape": self.output_shape, "dtype": self.dtype,
                   "voxel_size": self.voxel_size}
        entries.update({"factor": self.factor} if self.factor is not None else
                       {"repaired": self.repaired} if self.repaired is not None else {})
        entries.update(precision=self.precision, seconds=self.seconds, summary=self.summary)
        if self.blocks is not None:
            entries.update(blocks=self.blocks, computed=self.computed, skipped=self.skipped,
                           workers=self.workers, threads=self.threads,
                           already_complete=self.already_complete)
        return entries


def run(plan, model, progress=True, cancel=None):
    """Runs the job ``plan`` with ``model``; returns its :class:`JobResult`.

    Args:
        plan: a :class:`~emzoo.engine.plan.JobPlan` (:func:`~emzoo.engine.plan_upscale`,
            :func:`~emzoo.engine.plan_repair`).
        model: an emzoo interpolator, a registered name or saved model folder (loaded with its
            trained weights), or ``"flow"`` (the optical-flow baseline).
        progress: ``True`` draws a progress bar on stderr, ``False`` nothing, and a callable is
            called as ``progress(done, total)`` (slices; blocks on Dask).
        cancel: an event (``is_set()``); once set, the job stops between two slices (blocks) and
            raises :class:`~emzoo.errors.JobCancelled`: nothing is left behind by a
            single-process job, a blockwise output stays incomplete (resumable).

    Example:
        >>> run(plan_repair(stack, [12, 13]), "default").repaired           # doctest: +SKIP
        [12, 13]
    """
    if not isinstance(plan, JobPlan):
        raise EmzooError(describe("Invalid value for argument `plan`.",
                                  "a JobPlan from plan_upscale or plan_repair",
                                  plan=type(plan).__name__))
    if plan.blockwise is not None:
        from emzoo.engine.distributed import run_blockwise

        return run_blockwise(plan, model, progress, cancel)
    source = plan.open_input()
    options = plan.options
    engine = MidpointEngine(resolve_model(model), plan.input_shape[1], plan.input_shape[2],
                            options.tile, options.overlap, options.batch_size,
                            options.reuse_features, options.xla,
                            expected_pairs=plan.expected_pairs, precision=options.precision)
    if plan.job == "upscale":
        from emzoo.engine.upscale import upscaled_slices

        slices = upscaled_slices(plan, source, engine)
    else:
        from emzoo.engine.repair import repaired_slices

        slices = repaired_slices(plan, source, engine)
    array, seconds = write_slices(plan, slices, progress, cancel)
    return result(plan, engine.precision, seconds, array=array)


def result(plan, precision, seconds, array=None, summary=None, **blockwise):
    """The :class:`JobResult` of ``plan`` (``summary``: the line, when not the usual one)."""
    if summary is None:
        summary = summary_line(plan.kind, plan.input_shape, plan.output_shape, plan.dtype,
                               plan.input_voxel_size, plan.output_voxel_size, seconds, plan.output)
    extra = plan.extra()
    return JobResult(output=plan.output, array=array, input_shape=tuple(plan.input_shape),
                     output_shape=tuple(plan.output_shape), dtype=plan.dtype,
                     voxel_size=plan.output_voxel_size, precision=precision, seconds=seconds,
                     summary=summary, factor=extra.get("factor"), repaired=extra.get("repaired"),
                     **blockwise)
